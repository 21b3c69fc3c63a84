"""`cxp bench NAME --help` shows the benchmark's own options (its argparse parser), not an empty Typer help."""

from __future__ import annotations

from typer.testing import CliRunner

from cxp.cli.main import app


def test_a_passthrough_benchmark_help_lists_its_own_options() -> None:
    result = CliRunner().invoke(app, ["bench", "views", "--help"])
    assert result.exit_code == 0, result.output
    assert "--sizes" in result.output and "--one-connection" in result.output


def test_the_bench_list_still_names_every_benchmark() -> None:
    result = CliRunner().invoke(app, ["bench", "--help"])
    assert result.exit_code == 0 and "analytics" in result.output and "views" in result.output
