"""A sequence of result objects built when read (big answers of which a view shows a page)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar, overload

T = TypeVar("T")


class LazyRows(Sequence[T]):
    """An immutable sequence whose items are built on first access, each once, and found by key without building.

    A device-level health report over 10,000 devices × 12 weeks holds 40,000 scores with 240,000 drivers; building
    them all took ~60 % of the view while a page shows 100 (or each device's latest)."""

    __slots__ = ("keys", "_make", "_built", "_guard")

    def __init__(self, keys: Sequence[str], make: Callable[[int], T]) -> None:
        self.keys = keys  # each item's key (its entity id), in order
        self._make = make
        self._built: list[T | None] = [None] * len(keys)
        self._guard = threading.Lock()  # a cached report is read by several API threads

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...

    def __getitem__(self, index: int | slice) -> T | tuple[T, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("LazyRows index out of range")
        item = self._built[index]
        if item is None:
            with self._guard:
                item = self._built[index]
                if item is None:
                    item = self._built[index] = self._make(index)
        return item

    def __iter__(self) -> Iterator[T]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))

    def __reduce__(self) -> tuple[type, tuple[tuple[T, ...]]]:
        return tuple, (tuple(self),)  # pickled and copied as the tuple it stands for (its builder is a closure)
