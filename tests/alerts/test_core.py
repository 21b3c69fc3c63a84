"""The pure alerts core: rules, lifecycle, conditions, signing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from cxp.alerts.core.conditions import drop_p_value, touchpoint_verdict
from cxp.alerts.core.lifecycle import Event, State, acknowledge, step
from cxp.alerts.core.rules import TouchpointParams, dump_ruleset, parse_ruleset
from cxp.alerts.core.webhook import encode, idempotency_key, payload, sign, verify
from cxp.alerts.errors import RuleInvalid

T0 = datetime(2026, 3, 1, tzinfo=UTC)

RULES = {"format": "cxp.alerts.rules/v1", "rules": [
    {"name": "brew-fails", "severity": "critical", "scope": {"product_id": "p"},
     "params": {"kind": "touchpoint", "max_failure_rate": 0.2, "baseline_h": 24},
     "channels": [{"url": "http://127.0.0.1:9/h", "secret_ref": "ops", "format": "slack"}]},
    {"name": "offline", "params": {"kind": "silence", "k": 2}, "channels": [{"email": "pm@example.org"}]},
    {"name": "dl", "params": {"kind": "pipeline", "metric": "dead_letters", "max_value": 10}},
    {"name": "inc", "params": {"kind": "incident"}},
    {"name": "health", "params": {"kind": "health", "min_score": 60}},
]}


def test_ruleset_round_trips_through_json():
    ruleset = parse_ruleset(json.dumps(RULES))
    assert [r.kind for r in ruleset.rules] == ["touchpoint", "silence", "pipeline", "incident", "health"]
    again = parse_ruleset(dump_ruleset(list(ruleset.rules)))
    assert again == ruleset


@pytest.mark.parametrize("bad, words", [
    ({"rules": [{"name": "x", "params": {"kind": "nope"}}]}, "params"),
    ({"rules": [{"name": "Bad Name", "params": {"kind": "silence"}}]}, "name"),
    ({"rules": [{"name": "t", "params": {"kind": "touchpoint"}}]}, "max_failure_rate"),
    ({"rules": [{"name": "a", "params": {"kind": "silence"}}, {"name": "a", "params": {"kind": "silence"}}]},
     "unique"),
    ({"rules": [{"name": "a", "params": {"kind": "silence"}, "secret": "x"}]}, "secret"),
    ({"rules": [{"name": "a", "params": {"kind": "silence"}, "channels": [{"email": "not an address"}]}]}, "email"),
])
def test_bad_rules_are_refused_with_a_reason(bad, words):
    with pytest.raises(RuleInvalid, match=words):
        parse_ruleset(json.dumps(bad))


def test_lifecycle_opens_once_and_clears_after_hold_down():
    live, ev = step(None, firing=True, now=T0, hold_down_s=60)
    assert ev is Event.OPENED and live.state is State.OPEN
    live, ev = step(live, firing=True, now=T0 + timedelta(seconds=10), hold_down_s=60)
    assert ev is Event.UPDATED and live.last_seen == T0 + timedelta(seconds=10)
    live, ev = step(live, firing=False, now=T0 + timedelta(seconds=20), hold_down_s=60)
    assert live is not None and live.false_since == T0 + timedelta(seconds=20)
    live, ev = step(live, firing=False, now=T0 + timedelta(seconds=79), hold_down_s=60)
    assert live is not None and ev is None
    live, ev = step(live, firing=False, now=T0 + timedelta(seconds=80), hold_down_s=60)
    assert live is None and ev is Event.CLEARED


def test_flapping_condition_keeps_one_alert():
    live, events = None, []
    for i in range(100):  # true/false every 10 s, hold-down 60 s
        live, ev = step(live, firing=i % 2 == 0, now=T0 + timedelta(seconds=10 * i), hold_down_s=60)
        events.append(ev)
    assert events.count(Event.OPENED) == 1 and Event.CLEARED not in events


def test_acknowledge_is_idempotent_and_keeps_the_alert_live():
    live, _ = step(None, firing=True, now=T0, hold_down_s=0)
    acked, ev = acknowledge(live, by="pm")
    assert ev is Event.ACKNOWLEDGED and acked.acked_by == "pm"
    assert acknowledge(acked, by="other") == (acked, None)
    _, ev = step(acked, firing=False, now=T0, hold_down_s=0)
    assert ev is Event.CLEARED


def test_touchpoint_threshold_min_n_and_baseline_test():
    p = TouchpointParams(max_failure_rate=0.2, min_n=20)
    assert not touchpoint_verdict(p, n=10, successes=0, latency_n=0, latency_sum=0, base_n=0,
                                  base_successes=0).firing
    v = touchpoint_verdict(p, n=40, successes=20, latency_n=0, latency_sum=0, base_n=0, base_successes=0)
    assert v.firing and v.values["reasons"] == ["failure_rate"]
    b = TouchpointParams(baseline_h=24, min_n=20, alpha=0.001, min_drop=0.05)
    drop = touchpoint_verdict(b, n=100, successes=80, latency_n=0, latency_sum=0, base_n=2000,
                              base_successes=1960)
    assert drop.firing and drop.values["reasons"] == ["baseline_drop"]
    same = touchpoint_verdict(b, n=100, successes=97, latency_n=0, latency_sum=0, base_n=2000,
                              base_successes=1960)
    assert not same.firing
    assert drop_p_value(successes=50, n=100, base_successes=50, base_n=100) == pytest.approx(0.5)


def test_signature_verifies_and_rejects_tampering_and_replays():
    body = encode(payload(alert={"rule": "r", "entity": "e", "severity": "critical", "values": {}},
                          event="opened", key="k", at=T0, fmt="slack"))
    assert b'"text"' in body
    header = sign(secret=b"s3cret", body=body, timestamp=1000)
    assert verify(secret=b"s3cret", body=body, header=header, now=1100)
    assert not verify(secret=b"s3cret", body=body + b" ", header=header, now=1100)
    assert not verify(secret=b"other", body=body, header=header, now=1100)
    assert not verify(secret=b"s3cret", body=body, header=header, now=1000 + 301)
    assert not verify(secret=b"s3cret", body=body, header="garbage", now=1000)
    assert idempotency_key(alert_id=1, event="opened", channel_url="u") != idempotency_key(
        alert_id=1, event="cleared", channel_url="u")


def test_quiet_hours_hold_non_critical_until_they_end():
    from cxp.alerts.core.routing import hold_until, quiet_until

    night = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    assert quiet_until("22:00-07:00", night) == datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
    assert quiet_until("22:00-07:00", night.replace(hour=12)) is None
    assert quiet_until("01:00-03:00", night.replace(hour=2)) == datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    policy = {"quiet_hours": "22:00-07:00", "quiet_min_severity": "critical"}
    assert hold_until(policy, severity="warning", now=night, sent_last_hour=[]) == datetime(2026, 3, 2, 7, 0,
                                                                                             tzinfo=UTC)
    assert hold_until(policy, severity="critical", now=night, sent_last_hour=[]) is None


def test_rate_limit_delays_the_rest_of_a_burst():
    from cxp.alerts.core.routing import hold_until

    sent = [T0 - timedelta(minutes=50), T0 - timedelta(minutes=10), T0 - timedelta(hours=2)]
    assert hold_until({"max_per_hour": 3}, severity="info", now=T0, sent_last_hour=sent) is None
    assert hold_until({"max_per_hour": 2}, severity="info", now=T0, sent_last_hour=sent) == T0 + timedelta(minutes=10)
    with pytest.raises(RuleInvalid, match="quiet_hours"):
        parse_ruleset(json.dumps({"rules": [{"name": "a", "params": {"kind": "silence"},
                                             "channels": [{"email": "a@b.c", "quiet_hours": "25:00-01:00"}]}]}))
