"""`cxp credentials …` and `cxp provisioning …` on the real database, broker files in a private directory."""

from __future__ import annotations

import csv
import re
import stat
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from cxp.cli.main import app
from cxp.core.config import Settings, get_settings
from cxp.identity.broker import BrokerPaths
from cxp.identity.files import PkiPaths, init_ca
from cxp.identity.tokens import read_password_file, verify_secret

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture
def cli_env(settings: Settings, db: psycopg.Connection, registered: list[str], tmp_path: Path,
            monkeypatch) -> Settings:
    """The CLI's settings: the test database, stack files and CA under tmp_path."""
    db.execute("TRUNCATE device_credentials, provisioning_keys, provisioning_audit")
    for name, value in {"CXP_STACK__DIR": tmp_path, "CXP_PKI__DIR": tmp_path / "pki",
                        "CXP_MQTT__SECRETS_DIR": tmp_path / "secrets", "CXP_DB__NAME": settings.db.name}.items():
        monkeypatch.setenv(name, str(value))
    init_ca(paths=PkiPaths(tmp_path / "pki"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_credentials_lifecycle_from_the_cli(cli_env: Settings, registered: list[str]) -> None:
    out = _run("credentials", "create", "--device", registered[0])
    secret = re.search(r"secret \(shown once\) (\S+)", out)[1]
    assert verify_secret(secret, read_password_file(BrokerPaths.of(cli_env).device_passwords)[registered[0]])
    assert f"{registered[0]}~2" in _run("credentials", "rotate", "--device", registered[0])
    listed = _run("credentials", "list", "--device", registered[0])
    assert "active until" in listed and "2 of 2" in listed and secret not in listed
    assert "revoked 2 credential(s)" in _run("credentials", "revoke", "--device", registered[0], "--reason", "lost")
    assert read_password_file(BrokerPaths.of(cli_env).device_passwords) == {}
    _run("credentials", "create", "--device", registered[1])
    BrokerPaths.of(cli_env).device_passwords.unlink()
    assert "1 token login(s)" in _run("credentials", "sync")
    assert set(read_password_file(BrokerPaths.of(cli_env).device_passwords)) == {registered[1]}
    assert "0 grace window(s) ended" in _run("credentials", "sweep")
    refused = runner.invoke(app, ["credentials", "create", "--device", "cxp-gateway"])
    assert refused.exit_code == 1 and "reserved" in refused.output


def test_provisioning_keys_and_factory_import_from_the_cli(cli_env: Settings, tmp_path: Path, db) -> None:
    out = _run("provisioning", "key-create", "--product", "test-p1", "--name", "line 3", "--max-devices", "2")
    key_id = re.search(r"provisioning key ([0-9a-f]{12})", out)[1]
    assert re.search(r"token \(shown once\): cxpprov_" + key_id, out)
    assert "0/2" in _run("provisioning", "key-list")
    assert "revoked provisioning key" in _run("provisioning", "key-revoke", key_id)
    batch = tmp_path / "batch.csv"
    batch.write_text("device_id,product,kind\nfab-1,test-p1,token\nfab-2,test-p1,token\n")
    out_file = tmp_path / "creds.csv"
    assert "provisioned 2 device(s)" in _run("provisioning", "import", str(batch), "--out", str(out_file))
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    rows = list(csv.DictReader(out_file.open()))
    hashes = dict(db.execute("SELECT username, secret_hash FROM device_credentials"))
    assert all(verify_secret(r["secret"], hashes[r["device_id"]]) for r in rows) and len(rows) == 2
    batch.write_text("device_id,product,kind\nfab-3,test-p1,token\nfab-4,no-such-product,token\n")
    failed = runner.invoke(app, ["provisioning", "import", str(batch), "--out", str(tmp_path / "x.csv")])
    assert failed.exit_code == 1 and "line 3" in failed.output and not (tmp_path / "x.csv").exists()
    assert db.execute("SELECT count(*) FROM devices WHERE device_id = 'fab-3'").fetchone()[0] == 0
    assert "0 of 0" in _run("provisioning", "audit")  # the CLI import is an admin action, not a device's attempt
