"""Device timelines: windowing, ordering, activation, churn decay, planted faults and incidents."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from cxp.contract import LifecycleStage
from cxp.device_sim import build_fleet, device_events
from tests.device_sim.conftest import START


def _key(e) -> tuple:
    return e.seq, e.ts, e.model_dump_json()


def test_window_pieces_equal_the_whole(small_fleet) -> None:
    start, end = small_fleet.start, small_fleet.end
    cuts = [
        start + timedelta(days=3, hours=7, minutes=13, milliseconds=5),
        start + timedelta(days=6, hours=23, minutes=59),
    ]
    for device in small_fleet.devices[:12]:
        whole = [_key(e) for e in device_events(fleet=small_fleet, device=device, start=start, end=end)]
        pieces = []
        for a, b in zip([start, *cuts], [*cuts, end], strict=True):
            pieces += [_key(e) for e in device_events(fleet=small_fleet, device=device, start=a, end=b)]
        assert whole == pieces
        assert whole, device.device_id


def test_timeline_does_not_depend_on_fleet_size() -> None:
    small = build_fleet(seed=3, devices=10, start=START, days=5)
    large = build_fleet(seed=3, devices=120, start=START, days=5)
    for i in (0, 4, 9):
        a = [_key(e) for e in device_events(fleet=small, device=small.devices[i])]
        b = [_key(e) for e in device_events(fleet=large, device=large.devices[i])]
        assert a == b


def test_timestamps_and_seq(small_fleet) -> None:
    kinds: Counter[str] = Counter()
    for device in small_fleet.devices:
        events = list(device_events(fleet=small_fleet, device=device))
        seqs = [e.seq for e in events]
        assert seqs == sorted(set(seqs))
        if device.activated_at <= small_fleet.start and events:
            assert events[0].seq == 0
        for e in events:
            assert e.ts.utcoffset() == timedelta(0)
            assert max(device.activated_at, small_fleet.start) <= e.ts < small_fleet.end
            kinds[e.kind] += 1
        assert [e.ts for e in events] == sorted(e.ts for e in events)
    assert set(kinds) == {"usage", "error", "recovery", "state", "feedback", "lifecycle"}


def test_new_devices_are_onboarded_in_order(churn_fleet) -> None:
    new = [d for d in churn_fleet.devices if d.activated_at > churn_fleet.start][:15]
    assert new
    for device in new:
        events = list(device_events(fleet=churn_fleet, device=device))
        assert events[0].seq == 0 and events[0].ts == device.activated_at
        stages = [e.stage for e in events if e.kind == "lifecycle"]
        assert stages[:2] == [LifecycleStage.UNBOXED, LifecycleStage.SETUP]
        assert LifecycleStage.ACTIVATED in stages
        assert stages.index(LifecycleStage.ACTIVATED) < len(stages)
        assert any(e.kind == "usage" and e.touchpoint == "app_pairing" for e in events)


def test_heartbeats_follow_the_product_interval(small_fleet) -> None:
    device = small_fleet.devices[0]
    beats = [e for e in device_events(fleet=small_fleet, device=device) if e.kind == "state"]
    interval = timedelta(seconds=small_fleet.product_of(device).heartbeat_interval_s)
    gaps = Counter(b.ts - a.ts for a, b in zip(beats, beats[1:], strict=False))
    assert gaps.most_common(1)[0][0] == interval
    assert all(b.energy_wh >= a.energy_wh for a, b in zip(beats, beats[1:], strict=False))
    assert all(b.metrics for b in beats)


def test_churners_fade_out(churn_fleet, churn_timelines) -> None:
    third = (churn_fleet.end - churn_fleet.start) / 3
    first = last = 0
    churners = [
        d
        for d, p in zip(churn_fleet.devices, churn_fleet.profiles, strict=True)
        if p.churns and d.activated_at <= churn_fleet.start
    ]
    assert len(churners) >= 10
    for device in churners:
        for e in churn_timelines[device.device_id]:
            if e.kind != "usage":
                continue
            if e.ts < churn_fleet.start + third:
                first += 1
            elif e.ts >= churn_fleet.end - third:
                last += 1
    assert last < 0.25 * first


def test_cancelled_churners_stop_with_a_lifecycle_event(churn_fleet, churn_timelines) -> None:
    cancelled = [
        (d, p)
        for d, p in zip(churn_fleet.devices, churn_fleet.profiles, strict=True)
        if p.churn_kind in ("cancelled", "returned")
    ][:10]
    assert cancelled
    for device, profile in cancelled:
        last = churn_timelines[device.device_id][-1]
        assert last.kind == "lifecycle" and last.stage.value == profile.churn_kind
        assert last.ts == profile.churn_at


def _error_rates(fleet, touchpoint: str) -> dict[str, tuple[int, int]]:
    counts: dict[str, list[int]] = {}
    for device in fleet.devices:
        for e in device_events(fleet=fleet, device=device):
            if e.kind == "usage" and e.touchpoint == touchpoint:
                c = counts.setdefault(device.product, [0, 0])
                c[0] += 1
                c[1] += not e.success
    return {k: (n, f) for k, (n, f) in counts.items()}


def test_planted_fault_stands_out(planted_fleet) -> None:
    rates = _error_rates(planted_fleet, "app_dashboard")
    n, failed = rates["brew-c3"]
    planted = failed / n
    assert n > 100
    for product, (m, f) in rates.items():
        if product != "brew-c3":
            assert m > 100
            assert planted > 5 * (f / m)
    truth = [r for r in planted_fleet.ground_truth() if r["product"] == "brew-c3"]
    assert truth and all(r["error_prone_touchpoint"] == "app_dashboard" for r in truth)


def test_incidents_cause_errors_then_recoveries() -> None:
    fleet = build_fleet(seed=8, devices=300, start=START, days=14, incidents=2)
    inc = fleet.incidents[0]
    hit = [d for d in fleet.devices if d.product == inc.product and inc.affects(seed=fleet.seed, device_id=d.device_id)]
    errors = recoveries = 0
    for device in hit:
        events = list(
            device_events(
                fleet=fleet, device=device, start=inc.start - timedelta(hours=1), end=inc.end + timedelta(hours=1)
            )
        )
        errs = [
            e
            for e in events
            if e.kind == "error"
            and e.code == inc.code
            and inc.start <= e.ts < inc.end
            and e.touchpoint == inc.touchpoint
        ]
        recs = [e for e in events if e.kind == "recovery" and e.code == inc.code and e.ts >= inc.end]
        if errs:
            assert recs, device.device_id
            assert errs[0].severity == inc.severity
        errors += len(errs)
        recoveries += len(recs)
    assert errors > 0 and recoveries > 0


def test_nps_follows_persona(churn_fleet, churn_timelines) -> None:
    nps_by_persona: dict[str, list[int]] = {}
    for device, profile in zip(churn_fleet.devices, churn_fleet.profiles, strict=True):
        for e in churn_timelines[device.device_id]:
            if e.kind == "feedback" and e.nps is not None:
                nps_by_persona.setdefault(profile.persona, []).append(e.nps)
    means = {k: sum(v) / len(v) for k, v in nps_by_persona.items() if len(v) >= 5}
    assert means["power_user"] > means["fading"] + 1


def test_csat_drops_after_a_failure_at_the_touchpoint(churn_fleet, churn_timelines) -> None:
    after_failure: list[int] = []
    otherwise: list[int] = []
    for device in churn_fleet.devices:
        last_failure: dict[str, object] = {}
        for e in churn_timelines[device.device_id]:
            if e.kind == "usage" and not e.success:
                last_failure[e.touchpoint] = e.ts
            elif e.kind == "feedback" and e.csat is not None and e.touchpoint:
                failed = last_failure.get(e.touchpoint)
                recent = failed is not None and e.ts - failed < timedelta(days=3)
                (after_failure if recent else otherwise).append(e.csat)
    assert len(after_failure) >= 20 and len(otherwise) >= 200
    assert sum(after_failure) / len(after_failure) < sum(otherwise) / len(otherwise) - 0.3


@pytest.mark.parametrize("bad", ["no-such-device-000001"])
def test_unknown_device(small_fleet, bad) -> None:
    from cxp.device_sim import ConfigError

    with pytest.raises(ConfigError):
        list(device_events(fleet=small_fleet, device=bad))
