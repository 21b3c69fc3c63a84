"""Connection strings for a single database and for a replicated one (pure: no server)."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from cxp.contract import shared_telemetry_subscription
from cxp.core.config import DbSettings, Settings, settings_env


def test_single_database_conninfo_is_unchanged():
    db = DbSettings(host="127.0.0.1", port=15432, name="cxp", user="cxp")
    assert db.dsn == db.read_dsn == "host=127.0.0.1 port=15432 dbname=cxp user=cxp"


def test_members_give_a_multi_host_writer_and_a_standby_preferring_reader():
    db = DbSettings(members="10.0.0.1:5432,10.0.0.2:5433,db-3:5434", name="cxp", user="cxp", password="pw")
    assert db.dsn == (
        "host=10.0.0.1,10.0.0.2,db-3 port=5432,5433,5434 target_session_attrs=read-write"
        " dbname=cxp user=cxp password=pw"
    )
    assert "target_session_attrs=prefer-standby" in db.read_dsn
    assert db.read_dsn.replace("prefer-standby", "read-write") == db.dsn


@pytest.mark.parametrize("bad", ["127.0.0.1", "a:1,,b:2", "a:1 b:2", "a:x"])
def test_malformed_members_are_refused(bad):
    with pytest.raises(ValidationError):
        DbSettings(members=bad)


def test_child_processes_get_the_same_nested_settings(monkeypatch):
    settings = Settings(
        db={"members": "127.0.0.1:1,127.0.0.1:2"}, stack={"ha": {"pg_ports": [1, 2, 3], "rest_ports": [4, 5, 6]}}
    )
    for key in [k for k in os.environ if k.startswith("CXP_")]:
        monkeypatch.delenv(key)
    for key, value in settings_env(settings, {}).items():
        monkeypatch.setenv(key, value)
    assert Settings() == settings


def test_the_group_subscription_and_the_plain_one():
    assert shared_telemetry_subscription("cxp-gateways", "devices") == "$share/cxp-gateways/devices/+/telemetry"
    assert shared_telemetry_subscription("", "devices") == "devices/+/telemetry"
