"""The dependency rule of the pipeline holds: import-linter contracts in pyproject.toml, and no module is a monolith."""

from __future__ import annotations

from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "cxp"
MAX_LINES = 600


def test_import_contracts_hold() -> None:
    """Every contract in [tool.importlinter] is kept (lint-imports prints the broken import chains)."""
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_no_module_is_a_monolith() -> None:
    """No module of the package is over 600 lines."""
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
