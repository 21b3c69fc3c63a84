"""limit_malloc_arenas: set on glibc (the platform the project runs on), left alone when asked for 0."""

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
