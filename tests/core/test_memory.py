"""limit_malloc_arenas: set on glibc (the platform the project runs on), left alone when asked for 0; the API's Arrow
pool is the system allocator, so trimming reaches it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cxp.core.memory import _libc, limit_malloc_arenas


@pytest.mark.skipif(_libc() is None, reason="not glibc")
def test_arenas_are_capped_in_a_fresh_process_and_zero_leaves_the_default() -> None:
    code = ("from cxp.core.memory import limit_malloc_arenas as f; import cxp.api.main;"
            " print(f(0), f(2), f(1))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["False", "True", "True"]
    assert limit_malloc_arenas(-1) is False


@pytest.mark.skipif(_libc() is None, reason="not glibc")
def test_free_memory_inside_the_heap_goes_back_to_the_system() -> None:
    # In a fresh process: 64 KiB blocks (below glibc's mmap threshold) interleaved with kept ones, so freeing every
    # other one leaves ~100 MiB free inside the heap, which only malloc_trim returns.
    code = (
        "import psutil; from cxp.core.memory import release_free_memory as trim; p = psutil.Process();"
        " blocks = [bytearray(65536) for _ in range(3200)]; del blocks[::2]; before = p.memory_info().rss;"
        " released = trim(); after = p.memory_info().rss; print(released, (before - after) // 2**20)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    released, freed_mib = out.stdout.split()
    assert released == "True" and int(freed_mib) >= 50


def test_the_api_process_gives_arrow_the_system_allocator() -> None:
    code = ("import pyarrow; print(pyarrow.default_memory_pool().backend_name); import cxp.api.main;"
            " print(pyarrow.default_memory_pool().backend_name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    before, after = out.stdout.split()
    assert after == "system"
    assert before != "system"  # the default it replaces (mimalloc or jemalloc), else the test proves nothing
