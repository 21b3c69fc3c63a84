"""Process memory knobs of glibc's allocator (no-ops elsewhere)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_ARENA_MAX = -8  # mallopt parameter (malloc.h)


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018  (glibc only: musl and others have no mallopt)
    except (OSError, AttributeError):
        return None
    return libc


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas for threads started from now on (`arenas` <= 0: leave the default); True if set.

    glibc gives each thread that allocates concurrently an arena of its own, up to 8 per core, and memory freed in
    one is not reused by the others: a threaded server computing large frames in its worker threads keeps several
    copies of its peak resident. With 2 arenas the API over 10,000 devices peaked at 823 MB instead of 1,534 MB
    (`cxp bench api`, cold phase).
    """
    libc = _libc()
    if arenas <= 0 or libc is None:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def release_free_memory() -> bool:
    """Give the heap's free pages back to the system (glibc's malloc_trim); True if any were released.

    Freed memory inside glibc's arenas otherwise stays resident: after a view over 10,000 devices the process kept
    ~500 MB instead of ~300-400 MB (one view after another in one process, 2 arenas), which a second computation
    then adds its own peak to.
    """
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))


def use_system_arrow_pool() -> str:
    """Make the C library's malloc Arrow's default memory pool (pandas' string columns live there); its name.

    Arrow's bundled mimalloc keeps memory it freed mapped for reuse, where `release_free_memory` cannot reach it:
    one view after another over 10,000 devices, the process kept ~350-430 MB after each view and trim with
    mimalloc, ~300-315 MB with the system pool, and the views ran as fast or faster (best of 2, same database).
    """
    import pyarrow  # here, not at import time: most processes of the project never load Arrow

    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    return pyarrow.default_memory_pool().backend_name
