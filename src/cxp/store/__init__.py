"""TimescaleDB access: connection pool, migrations, registry, telemetry writes, rollups, retention."""

from cxp.store.errors import MigrationError, StoreError, StoreUnavailable

__all__ = ["MigrationError", "StoreError", "StoreUnavailable"]
