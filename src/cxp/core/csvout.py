"""CSV cells safe to open in a spreadsheet: formula-leading text is neutralised (OWASP CSV injection)."""

from __future__ import annotations

import re
from typing import Any

# A spreadsheet evaluates a cell starting with one of these as a formula (tab and CR can hide one after them).
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")
# A plain decimal number (no inf/nan, no separators): "-3.5" stays numeric, "-2+3" and "-cmd|…" do not.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def neutralise(value: Any) -> Any:
    """`value`, or text that leads with a formula character prefixed with a single quote; numbers pass as they are."""
    if not isinstance(value, str) or not value.startswith(FORMULA_LEADS) or _NUMBER.fullmatch(value):
        return value
    return "'" + value
