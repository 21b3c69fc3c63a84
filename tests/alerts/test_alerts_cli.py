"""`cxp alerts …` on the real database: import/export round trip, a pass, list, ack, secret file."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxp.cli.main import app
from cxp.core.config import get_settings
from tests.alerts.test_alerts_db import alert_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture
def cli_env(settings, alert_db, tmp_path: Path, monkeypatch):  # noqa: F811
    for name, value in {"CXP_STACK__DIR": tmp_path, "CXP_DB__NAME": settings.db.name}.items():
        monkeypatch.setenv(name, str(value))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_rules_round_trip_and_alert_commands(cli_env, alert_db, tmp_path):  # noqa: F811
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"name": "offline", "params": {"kind": "silence", "k": 3}}]}))
    assert "offline  v1  stored" in _run("alerts", "import", str(rules))
    assert "offline  v1  unchanged" in _run("alerts", "import", str(rules))
    exported = json.loads(_run("alerts", "export"))
    assert exported["rules"][0]["name"] == "offline" and exported["format"] == "cxp.alerts.rules/v1"
    bad = tmp_path / "bad.json"
    bad.write_text('{"rules": [{"name": "x", "params": {"kind": "silence", "k": -1}}]}')
    result = runner.invoke(app, ["alerts", "import", str(bad)])
    assert result.exit_code == 1 and "params.silence.k" in result.output

    alert_db.execute("INSERT INTO device_state (device_key, ts, seq) SELECT device_key, %s, 1 FROM devices"
                     " WHERE device_id <> 'dev-004'", (datetime.now(UTC) - timedelta(minutes=5),))
    assert "opened=1" in _run("alerts", "evaluate")
    listed = _run("alerts", "list")
    assert "dev-004" in listed and "open" in listed
    alert_id = listed.split()[0]
    assert "acknowledged by pm" in _run("alerts", "ack", alert_id, "--by", "pm")
    assert json.loads(_run("alerts", "show", alert_id))["acked_by"] == "pm"

    out = _run("alerts", "secret", "ops")
    path = tmp_path / "secrets" / "alerts" / "ops.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text().strip() in out
    assert runner.invoke(app, ["alerts", "secret", "ops"]).exit_code == 1  # kept, never overwritten
