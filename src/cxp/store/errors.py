"""The store's exceptions; psycopg errors are mapped to these at the boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg


class StoreError(Exception):
    """Root of every store error."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or the connection broke; the operation may be retried."""


class InvalidValue(StoreError):
    """The database cannot hold a value it was given (NUL in text, number out of range, bad date…)."""


class ReferenceConflict(StoreError):
    """A change that clashes with a concurrent one: a row it refers to went away, or a key it adds exists."""


class MigrationError(StoreError):
    """A migration failed or an applied migration was changed."""


@contextmanager
def mapped_errors() -> Iterator[None]:
    """Translate psycopg exceptions into store exceptions."""
    try:
        yield
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(str(exc).strip()) from exc
    except psycopg.DataError as exc:
        raise InvalidValue(str(exc).strip()) from exc
    except (psycopg.errors.ForeignKeyViolation, psycopg.errors.UniqueViolation) as exc:
        # checked before writing, so only a concurrent change gets here (a product deleted under a new device)
        raise ReferenceConflict(str(exc).strip()) from exc
    except psycopg.Error as exc:
        raise StoreError(str(exc).strip()) from exc
