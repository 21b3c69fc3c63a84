"""A key repeated within one JSON object is refused whatever the spacing and whatever string values hold; the quick
count that spares most payloads the second parse never hides a repeat."""

from __future__ import annotations

import json
import random

import pytest

from cxp.contract.models import batch_adapter
from cxp.contract.validate import Accepted, Reason, duplicate_key, validate_message

_TRICKY = ['":', '" :', '"\\t:', 'a\\":b', '{"x": 1}', ' ":" ', '\\\\":']  # key ends inside string values


def _event(rng: random.Random, seq: int) -> list[tuple[str, object]]:
    ts = ("ts", f"2026-01-0{1 + seq % 9}T10:00:00Z")
    kind = rng.choice(["usage", "state", "lifecycle", "error"])
    if kind == "usage":
        return [("seq", seq), ts, ("kind", kind), ("touchpoint", "brew"), ("duration_s", 1.5), ("success", True)]
    if kind == "state":
        metrics = [(f"m{i}", float(i)) for i in range(rng.randint(0, 3))]
        return [("seq", seq), ts, ("kind", kind), ("battery_pct", 50.0), ("metrics", metrics)]
    if kind == "lifecycle":
        detail = [(f"d{i}", rng.choice(_TRICKY)) for i in range(rng.randint(0, 3))]
        return [("seq", seq), ts, ("kind", kind), ("stage", "referred"), ("detail", detail)]
    return [("seq", seq), ts, ("kind", kind), ("code", "E1")]


def _text(pairs: list[tuple[str, object]], rng: random.Random) -> str:
    """An object written from (key, value) pairs (repeats kept), with random JSON whitespace around its colons."""
    def space() -> str:
        return rng.choice(["", "", " ", "\t", "\n ", "\r\n"])

    def value(v: object) -> str:
        if isinstance(v, list) and all(isinstance(p, tuple) for p in v):
            return _text(v, rng)
        if isinstance(v, list):
            return "[" + ",".join(value(x) for x in v) + "]"
        return json.dumps(v)

    return "{" + ",".join(f"{json.dumps(k)}{space()}:{space()}{value(v)}" for k, v in pairs) + "}"


def _repeat_one(pairs: list[tuple[str, object]], rng: random.Random) -> bool:
    """Repeat a key of this object or of a nested one (same value, so the message stays valid); False if none."""
    nested = [i for i, (_, v) in enumerate(pairs) if isinstance(v, list) and v and isinstance(v[0], tuple)]
    if nested and rng.random() < 0.5:
        return _repeat_one(pairs[rng.choice(nested)][1], rng)
    if not pairs:
        return False
    pairs.insert(rng.randrange(len(pairs) + 1), pairs[rng.randrange(len(pairs))])
    return True


def _message(rng: random.Random, *, repeat: bool) -> tuple[bytes, bool]:
    events = [_event(rng, seq) for seq in range(rng.randint(1, 5))]
    top: list[tuple[str, object]] = [("device_id", "dev-1"), ("events", ["__events__"])]
    repeated = False
    if repeat:
        where = rng.randrange(len(events) + 1)
        repeated = _repeat_one(top if where == len(events) else events[where], rng)
    body = _text(top, rng).replace('["__events__"]', "[" + ",".join(_text(e, rng) for e in events) + "]")
    return body.encode(), repeated


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_the_quick_count_agrees_with_the_strict_parse(seed):
    rng = random.Random(seed)
    checked = repeats = 0
    for _ in range(400):
        payload, repeated = _message(rng, repeat=rng.random() < 0.5)
        batch = batch_adapter().validate_json(payload, strict=True)
        strict = duplicate_key(payload)
        assert (strict is not None) == repeated, payload
        assert (duplicate_key(payload, batch) is not None) == repeated, payload
        checked, repeats = checked + 1, repeats + repeated
    assert repeats > 100 and checked - repeats > 100  # both kinds were tried


def test_a_repeat_hidden_behind_key_ends_inside_strings_is_still_found():
    # one key end inside a string value, one key written twice: a count of `":` alone would come out even
    payload = (b'{"device_id":"dev-1","events":[{"seq":1 ,"seq" :1,"ts":"2026-01-01T10:00:00Z","kind":"lifecycle",'
               b'"stage":"referred","detail":{"a":"x\\":y"}}]}')
    verdict = validate_message(topic="devices/dev-1/telemetry", payload=payload, lookup_device=lambda d: (1, 0.0),
                               max_payload_bytes=10_000)
    assert type(verdict) is not Accepted
    assert verdict.reason == Reason.DUPLICATE_KEY and "'seq'" in verdict.detail
