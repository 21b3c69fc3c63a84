"""The pure parts of the cadence rules (incident, health, churn, voice) and the new silence / pipeline params."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from cxp.alerts.core.conditions import due, health_verdict, period_start, voice_verdict
from cxp.alerts.core.rules import HealthParams, VoiceParams, parse_ruleset
from cxp.alerts.errors import RuleInvalid

T0 = datetime(2026, 3, 2, 10, 20, tzinfo=UTC)


def test_new_kinds_round_trip_with_their_defaults():
    ruleset = parse_ruleset(
        json.dumps(
            {
                "rules": [
                    {"name": "inc", "params": {"kind": "incident"}},
                    {"name": "h", "params": {"kind": "health", "level": "segment", "band_drop": True}},
                    {"name": "c", "params": {"kind": "churn", "top_n": 5}},
                    {"name": "v", "params": {"kind": "voice"}},
                    {"name": "share", "params": {"kind": "silence", "min_share": 0.1}},
                    {"name": "gw", "params": {"kind": "pipeline", "metric": "gateway_silent_s", "max_value": 60}},
                    {"name": "lag", "params": {"kind": "pipeline", "metric": "ingest_lag_ms", "max_value": 2000}},
                ]
            }
        )
    )
    inc, h, c, v, share, gw, lag = ruleset.rules
    assert (inc.params.min_devices, inc.params.min_share, inc.params.every_s) == (5, 0.02, 3600)
    assert (h.params.level, h.params.every_s) == ("segment", 21600)
    assert (c.params.top_n, c.params.min_risk) == (5, 0)
    assert (v.params.measure, v.params.by, v.params.period_days, v.params.min_n) == ("nps", "product", 28, 30)
    assert (share.params.min_share, share.params.min_devices) == (0.1, 1)
    assert (gw.params.metric, lag.params.metric) == ("gateway_silent_s", "ingest_lag_ms")


@pytest.mark.parametrize(
    "params, words",
    [
        ({"kind": "health"}, "min_score, max_score, max_weekly_drop or band_drop"),
        ({"kind": "health", "min_score": 70, "max_score": 60}, "min_score must be"),
        ({"kind": "health", "min_score": 60, "level": "device"}, "level"),
        ({"kind": "incident", "every_s": 5}, "every_s"),
        ({"kind": "voice", "measure": "ces"}, "measure"),
        ({"kind": "churn", "top_n": 0}, "top_n"),
        ({"kind": "silence", "min_share": 1.5}, "min_share"),
        ({"kind": "pipeline", "metric": "gateway_silent_s"}, "max_value > 0"),
    ],
)
def test_impossible_parameters_are_refused_with_the_field_named(params, words):
    with pytest.raises(RuleInvalid, match=words):
        parse_ruleset(json.dumps({"rules": [{"name": "r", "params": params}]}))


def test_cadence_is_due_when_the_period_changes_or_every_s_passed():
    assert due("incident", last=None, now=T0, every_s=900)
    assert not due("incident", last=T0, now=T0 + timedelta(minutes=10), every_s=900)
    assert due("incident", last=T0, now=T0 + timedelta(minutes=15), every_s=900)  # every_s
    assert due("incident", last=T0 + timedelta(minutes=39), now=T0 + timedelta(minutes=41), every_s=900)  # new hour
    assert not due("health", last=T0, now=T0 + timedelta(hours=5), every_s=21600)
    assert due("health", last=T0, now=T0 + timedelta(hours=6), every_s=21600)
    assert due("voice", last=T0 + timedelta(hours=13), now=T0 + timedelta(hours=14), every_s=21600)  # a new day
    assert due("churn", last=T0, now=T0 - timedelta(seconds=1), every_s=21600)  # the clock went back
    assert period_start("incident", T0) == T0.replace(minute=0)
    assert period_start("health", T0) == T0.replace(hour=0, minute=0)


def test_health_verdict_band_drop_and_band_change():
    p = HealthParams(min_score=60, max_score=95, max_weekly_drop=5, band_drop=True)
    v = health_verdict(p, score=58.0, previous_score=66.0, band="amber", previous_band="green")
    assert v.firing and v.values["reasons"] == ["below_band", "weekly_drop", "band_drop"]
    assert v.values["delta"] == -8.0
    v = health_verdict(p, score=96.0, previous_score=95.0, band="green", previous_band="green")
    assert v.firing and v.values["reasons"] == ["above_band"]
    assert not health_verdict(p, score=80.0, previous_score=84.9, band="green", previous_band="green").firing
    assert health_verdict(p, score=80.0, previous_score=85.0, band="green", previous_band="green").firing  # -5 = x
    assert not health_verdict(p, score=None, previous_score=80.0, band=None, previous_band="green").firing
    only_band = HealthParams(band_drop=True)
    assert not health_verdict(only_band, score=52, previous_score=None, band="amber", previous_band=None).firing
    assert health_verdict(only_band, score=49, previous_score=51, band="red", previous_band="amber").firing


def test_voice_verdict_uses_the_margin_of_the_difference():
    p = VoiceParams(min_n=30)
    # A fall of 12 points with margins 8 and 7: the difference's margin is √(64 + 49) ≈ 10.6 < 12 → fires.
    v = voice_verdict(p, value=18.0, margin=8.0, n=120, previous_value=30.0, previous_margin=7.0, previous_n=150)
    assert v.firing and v.values["difference_margin"] == round(math.sqrt(113), 3) and v.values["drop"] == 12.0
    # A fall of 10 is more than either margin alone but within the difference's: does not fire.
    assert not voice_verdict(
        p, value=20.0, margin=8.0, n=120, previous_value=30.0, previous_margin=7.0, previous_n=150
    ).firing
    assert not voice_verdict(
        p, value=-50.0, margin=8.0, n=29, previous_value=30.0, previous_margin=7.0, previous_n=150
    ).firing  # below min_n
    assert not voice_verdict(
        p, value=40.0, margin=8.0, n=120, previous_value=30.0, previous_margin=7.0, previous_n=150
    ).firing  # a rise
