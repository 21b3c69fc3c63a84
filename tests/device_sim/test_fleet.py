"""Fleet building: deterministic, stable under fleet size, plausible, and quick at 10,000 devices."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from cxp.device_sim import ConfigError, build_fleet, experiment_arm
from tests.device_sim.conftest import START

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def test_same_seed_same_fleet_and_other_seed_differs() -> None:
    a = build_fleet(seed=1, devices=80, start=START, days=14)
    b = build_fleet(seed=1, devices=80, start=START, days=14)
    c = build_fleet(seed=2, devices=80, start=START, days=14)
    assert a.devices == b.devices and a.accounts == b.accounts and a.incidents == b.incidents
    assert a.ground_truth() == b.ground_truth()
    assert a.devices != c.devices


def test_device_does_not_depend_on_fleet_size() -> None:
    small = build_fleet(seed=9, devices=30, start=START, days=14)
    large = build_fleet(seed=9, devices=300, start=START, days=14)
    assert large.devices[:30] == small.devices
    assert large.profiles[:30] == small.profiles
    assert large.incidents == small.incidents


def test_registry_fields(small_fleet) -> None:
    ids = [d.device_id for d in small_fleet.devices]
    assert len(set(ids)) == len(ids)
    accounts = {a.account_id for a in small_fleet.accounts}
    for d in small_fleet.devices:
        assert NAME.match(d.device_id) and NAME.match(d.account_id)
        assert re.fullmatch(rf"{re.escape(d.product)}-\d{{6}}", d.device_id)
        assert d.account_id in accounts
        assert d.plan in small_fleet.products[d.product].plans
        assert d.experiment_arm in ("A", "B")
        assert d.activated_at.tzinfo is not None
        assert d.activated_at < small_fleet.end
    assert {a.segment for a in small_fleet.accounts} <= {"consumer", "smb"}


def test_fleet_mix_is_plausible() -> None:
    fleet = build_fleet(seed=4, devices=2000, start=START, days=30)
    products = Counter(d.product for d in fleet.devices)
    assert set(products) == {"thermo-x1", "ebike-s2", "brew-c3"}
    per_account = Counter(d.account_id for d in fleet.devices)
    assert max(per_account.values()) > 1 and min(per_account.values()) == 1
    during = sum(d.activated_at >= fleet.start for d in fleet.devices)
    assert 0.1 * len(fleet.devices) < during < 0.5 * len(fleet.devices)
    arms = Counter(d.experiment_arm for d in fleet.devices)
    assert abs(arms["A"] - arms["B"]) < 0.1 * len(fleet.devices)
    personas = Counter(t["persona"] for t in fleet.ground_truth())
    assert len(personas) >= 4
    referred = [a for a in fleet.accounts if a.acquisition == "referral"]
    assert referred and all(a.referred_by and a.referred_by < a.account_id for a in referred)


def test_experiment_arm_is_a_stable_hash() -> None:
    assert experiment_arm(salt="s", device_id="thermo-x1-000001") == experiment_arm(
        salt="s", device_id="thermo-x1-000001"
    )
    arms = {experiment_arm(salt=f"s{i}", device_id="thermo-x1-000001") for i in range(40)}
    assert arms == {"A", "B"}


def test_ground_truth_rows(churn_fleet) -> None:
    rows = churn_fleet.ground_truth()
    assert len(rows) == len(churn_fleet.devices)
    keys = {"device_id", "persona", "churns", "churn_at", "error_proneness", "incidents"}
    assert all(keys <= set(r) for r in rows)
    churners = [r for r in rows if r["churns"]]
    assert churners
    for r in rows:
        if r["churns"]:
            assert churn_fleet.start < r["churn_at"] < churn_fleet.end
            assert r["churn_kind"] in ("cancelled", "returned", "silent")
        else:
            assert r["churn_at"] is None and r["churn_kind"] is None
        assert r["error_proneness"] > 0
    by_persona = Counter(r["persona"] for r in churners)
    assert by_persona.most_common(1)[0][0] == "fading"


def test_incidents_lie_in_the_period(churn_fleet) -> None:
    assert 1 <= len(churn_fleet.incidents) <= 6
    for inc in churn_fleet.incidents:
        assert churn_fleet.start <= inc.start < inc.end <= churn_fleet.end
        product = churn_fleet.products[inc.product]
        assert inc.code in product.touchpoint(inc.touchpoint).error_codes
    assert churn_fleet.incident_truth()[0]["incident_id"] == churn_fleet.incidents[0].incident_id
    no_incidents = build_fleet(seed=5, devices=3, start=START, days=60, incidents=0)
    assert no_incidents.incidents == ()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"devices": -1},
        {"days": 0},
        {"start": datetime(2025, 1, 1)},
        {"error_prone": ("nope", "brew")},
        {"error_prone": ("brew-c3", "ride")},
    ],
)
def test_bad_arguments_are_config_errors(kwargs) -> None:
    args = {"seed": 1, "devices": 5, "start": START, "days": 3} | kwargs
    with pytest.raises(ConfigError):
        build_fleet(**args)


def test_ten_thousand_devices() -> None:
    fleet = build_fleet(seed=123, devices=10_000, start=datetime(2025, 1, 1, tzinfo=UTC), days=90)
    assert len(fleet.devices) == 10_000
    assert len({d.device_id for d in fleet.devices}) == 10_000
    assert fleet.device(fleet.devices[-1].device_id).index == 9_999
    assert fleet.end - fleet.start == timedelta(days=90)


def test_registry_rows_for_storage(small_fleet) -> None:
    devices = small_fleet.device_rows()
    assert len(devices) == len(small_fleet.devices)
    assert set(devices[0]) == {"device_id", "index", "product", "account_id", "activated_at", "plan", "experiment_arm"}
    accounts = small_fleet.account_rows()
    assert {a["account_id"] for a in accounts} == {d["account_id"] for d in devices}
    assert set(accounts[0]) == {"account_id", "name", "segment", "acquisition", "referred_by"}
    params = small_fleet.params()
    rebuilt = build_fleet(
        seed=params["seed"],
        devices=params["devices"],
        start=params["start"],
        days=params["days"],
        error_prone=params["error_prone"],
        incidents=params["incidents"],
        experiment_salt=params["experiment_salt"],
    )
    assert rebuilt.devices == small_fleet.devices and rebuilt.incidents == small_fleet.incidents
