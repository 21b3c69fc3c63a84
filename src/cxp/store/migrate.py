"""Ordered SQL migrations, each applied once in its own transaction and recorded with its checksum."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from cxp.store.errors import MigrationError, mapped_errors

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_LOCK_ID = 0x6378_7001  # advisory lock so concurrent migrators apply each step once
# Earlier texts of shipped migrations, still accepted where they were applied: a later change kept them
# compatible. 001_registry once also created the simulator's truth tables, now 006_sim_truth (which
# creates them only when missing), so a database that applied the old 001 has the same schema.
_EARLIER_CHECKSUMS: dict[int, frozenset[str]] = {
    1: frozenset({"777ac7a8c55284114e016ac42be56c73054e99e332d55f1697f3c9226438db0a"}),
}


@dataclass(frozen=True)
class Migration:
    """One SQL file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def matches(self, checksum: str) -> bool:
        """Whether a database that recorded `checksum` for this version has applied this migration."""
        return checksum == self.checksum or checksum in _EARLIER_CHECKSUMS.get(self.version, frozenset())


def list_migrations() -> list[Migration]:
    """The migrations shipped with the package, in order."""
    found = []
    for entry in resources.files("cxp.store.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions: {versions}")
    return found


def apply_migrations(conn: psycopg.Connection) -> list[Migration]:
    """Apply the pending migrations; return those applied now."""
    applied_now: list[Migration] = []
    with mapped_errors():
        conn.autocommit = True
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {v: c for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")}
            for migration in list_migrations():
                if migration.version in done:
                    if not migration.matches(done[migration.version]):
                        raise MigrationError(
                            f"migration {migration.version:03d}_{migration.name} changed after it was applied;"
                            " add a new migration instead"
                        )
                    continue
                try:
                    with conn.transaction():
                        conn.execute(migration.sql)
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(f"migration {migration.version:03d}_{migration.name} failed: {exc}") from exc
                applied_now.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now
