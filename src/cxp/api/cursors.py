"""Keyset cursors of list endpoints: an opaque token naming the last item of a page, so the next page starts
right after it with an index range scan (page 1,000 costs what page 1 costs; OFFSET reads and drops every row
before it)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from cxp.api.errors import ErrorDetail, Unprocessable

R = TypeVar("R")
Key = tuple[str | int, ...]


def encode_cursor(kind: str, key: Key) -> str:
    """The cursor after the item with `key` in the list `kind` (URL-safe, unpadded)."""
    raw = json.dumps([kind, *key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, types: tuple[type, ...]) -> Key:
    """The key a cursor of the list `kind` names, or 422 when it is not one this list gave."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not (isinstance(data, list) and len(data) == len(types) + 1 and data[0] == kind
                and all(type(v) is t for v, t in zip(data[1:], types, strict=True))):
            raise ValueError("not a cursor of this list")
        return tuple(data[1:])
    except ValueError as exc:  # binascii.Error, UnicodeDecodeError and JSONDecodeError are ValueErrors too
        raise _invalid() from exc


def _invalid() -> Unprocessable:
    return Unprocessable("cursor is not one this endpoint gave (pass a page's next_cursor unchanged)",
                         details=[ErrorDetail(loc=["query", "cursor"], message="invalid cursor")])


def cursor_time(text: str) -> datetime:
    """A timestamp from a cursor's key (422 when it is not an aware ISO timestamp)."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _invalid() from exc
    if at.tzinfo is None:
        raise _invalid()
    return at


def cursor_uuid(text: str) -> uuid.UUID:
    """A UUID from a cursor's key (422 when it is not one)."""
    try:
        return uuid.UUID(text)
    except ValueError as exc:
        raise _invalid() from exc


def page_of(rows: Sequence[R], *, limit: int, kind: str, key: Callable[[R], Key]) -> tuple[list[R], str | None]:
    """The first `limit` of `rows` (fetched `limit + 1`) and the cursor of the next page (None: this is the last)."""
    items = list(rows[:limit])
    return items, (encode_cursor(kind, key(items[-1])) if len(rows) > limit and items else None)
