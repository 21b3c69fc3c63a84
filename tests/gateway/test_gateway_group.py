"""A gateway group on one MQTT v5 shared subscription, on the real broker and database: the stream is split, every
event is stored exactly once, a killed member loses nothing, and the leader's single-run work moves on its death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest

from cxp.core.config import PROJECT_ROOT, Settings
from cxp.gateway.group import instance_client_id
from cxp.store.leader import get_leader
from tests.fixtures.gateway import gateway_env, wait_for
from tests.fixtures.mqtt import batch_payload, usage
from tests.fixtures.stack import recent

pytestmark = pytest.mark.integration

DEVICES = [f"dev-{i:03d}" for i in range(5)]


def _stream(prefix: str, messages: int, events_per_message: int = 5, *, seq_base: int = 0) -> list[tuple[str, bytes]]:
    base = recent(60)
    items = []
    for m in range(messages):
        device = DEVICES[m % len(DEVICES)]
        seq0 = seq_base + (m // len(DEVICES)) * events_per_message
        events = [usage(seq0 + k, base + timedelta(milliseconds=10 * (seq0 + k))) for k in range(events_per_message)]
        items.append((f"{prefix}/{device}/telemetry", batch_payload(events, device_id=device)))
    return items


def _events(db) -> tuple[int, int]:
    return db.execute("SELECT count(*), count(DISTINCT (device_key, seq)) FROM events").fetchone()


def _member(settings: Settings, n: int) -> Settings:
    cfg = settings.gateway.model_copy(
        update={"client_id": instance_client_id(settings.gateway.client_id, n), "stats_interval_s": 1.0,
                "share_group": "cxp-gateways"}
    )
    return settings.model_copy(update={"gateway": cfg})


def _stable(db, seconds: float = 2.0) -> int:
    """The stored count once it stopped moving for `seconds`."""
    last, since = _events(db)[0], time.monotonic()
    while time.monotonic() - since < seconds:
        time.sleep(0.25)
        now = _events(db)[0]
        if now != last:
            last, since = now, time.monotonic()
    return last


def test_two_members_split_the_stream_and_store_every_event_once(db, registered, publisher, start_gateway, settings):
    a = start_gateway("a", _member(settings, 1))
    b = start_gateway("b", _member(settings, 2))
    time.sleep(0.5)  # both SUBSCRIBEs answered before the first PUBLISH
    assert publisher.publish(_stream(publisher.prefix, 2000)) == 2000
    expected = 2000 * 5
    assert wait_for(lambda: _events(db)[0] >= expected, timeout=120), _events(db)
    assert a.stop() == 0 and b.stop() == 0
    assert _events(db) == (expected, expected)
    sa, sb = a.final_stats(), b.final_stats()
    # Each member received a share (Mosquitto round-robins a shared subscription); nobody received the whole stream.
    assert sa["received"] + sb["received"] == 2000, (sa["received"], sb["received"])
    assert min(sa["received"], sb["received"]) >= 2000 // 4, (sa["received"], sb["received"])
    assert sa["duplicates"] == sb["duplicates"] == 0
    assert {sa["client_id"], sb["client_id"]} == {f"{settings.gateway.client_id}-1", f"{settings.gateway.client_id}-2"}
    assert "$share/cxp-gateways/" in a.log()


def test_a_member_killed_mid_stream_and_restarted_loses_and_duplicates_nothing(
    db, registered, publisher, start_gateway, settings, test_db_api
):
    a = start_gateway("a", _member(settings, 1))
    b = start_gateway("b", _member(settings, 2))
    gid = _member(settings, 2).gateway.client_id

    def state() -> str | None:
        rows = test_db_api.get("/v1/ingest/status?window_s=10").json()["gateways"]
        return next((g["state"] for g in rows if g["gateway_id"] == gid), None)

    # b must have reported once (every stats interval) to be known, and so later seen dead.
    assert wait_for(lambda: state() is not None, timeout=20), "b never reported"
    items = _stream(publisher.prefix, 4000)
    expected = 4000 * 5
    sender = threading.Thread(target=publisher.publish, args=(items,))
    sender.start()
    assert wait_for(lambda: _events(db)[0] > expected // 5, timeout=60), "ingest did not start"
    b.kill()  # mid-stream: its in-flight window and its share of what follows stay with its session
    sender.join(120)
    # The broker keeps queueing b's share for its persistent session: a keeps storing only its own share.
    held_back = _stable(db)
    assert held_back < expected, "Mosquitto delivered the dead member's share to the live one"
    # A dead instance is visible: no report for three stats intervals and no clean stop.
    assert wait_for(lambda: state() == "dead", timeout=20), state()
    metrics = test_db_api.client.get("/metrics").text
    assert f'cxp_gateway_up{{gateway="{gid}",state="dead"}} 1.0' in metrics
    b2 = start_gateway("b2", _member(settings, 2))  # same client id: resumes the session and drains its queue
    assert wait_for(lambda: _events(db)[0] >= expected, timeout=120), _events(db)
    time.sleep(1.5)  # let any redelivery settle
    assert a.stop() == 0 and b2.stop() == 0
    assert _events(db) == (expected, expected)
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0
    assert wait_for(lambda: state() == "stopped", timeout=10)


def test_the_leader_hands_over_when_it_is_killed(db, registered, publisher, start_gateway, settings, test_db_api):
    members = {n: start_gateway(f"m{n}", _member(settings, n)) for n in (1, 2)}
    ids = {n: _member(settings, n).gateway.client_id for n in (1, 2)}
    assert wait_for(lambda: get_leader(db) is not None and get_leader(db).name in ids.values(), timeout=20)
    first = get_leader(db).name
    leader_n = next(n for n, cid in ids.items() if cid == first)
    other_n = 3 - leader_n
    # Only the leader refreshes: what the stream marks dirty is rolled up.
    assert publisher.publish(_stream(publisher.prefix, 50)) == 50
    assert wait_for(lambda: _events(db)[0] >= 250, timeout=30)
    assert wait_for(lambda: db.execute("SELECT count(*) FROM rollup_dirty").fetchone()[0] == 0, timeout=20)
    members[leader_n].kill()
    assert wait_for(lambda: getattr(get_leader(db), "name", None) == ids[other_n], timeout=20), get_leader(db)
    # The new leader does the work: new data is rolled up again. (The dead member's share of it waits in its
    # session at the broker, so only the survivor's share arrives.)
    assert publisher.publish(_stream(publisher.prefix, 50, seq_base=10_000)) == 50
    assert wait_for(lambda: _events(db)[0] > 250, timeout=60)
    stored = _stable(db)
    assert wait_for(lambda: db.execute("SELECT count(*) FROM rollup_dirty").fetchone()[0] == 0, timeout=20)
    uses = db.execute("SELECT coalesce(sum(usage_count), 0) FROM rollup_daily").fetchone()[0]
    assert uses == stored > 250
    body = test_db_api.get("/v1/ingest/status?window_s=10").json()
    assert body["leader"] == ids[other_n]
    assert wait_for(
        lambda: next(
            g for g in test_db_api.get("/v1/ingest/status").json()["gateways"] if g["gateway_id"] == ids[other_n]
        )["leader"],
        timeout=10,
    )
    assert members[other_n].stop() == 0


def test_cxp_gateway_instances_supervises_and_restarts_a_killed_instance(db, registered, settings, tmp_path):
    log_path = tmp_path / "group.log"
    env = gateway_env(
        settings.model_copy(update={"gateway": settings.gateway.model_copy(update={"stats_interval_s": 1.0})})
    )
    with open(log_path, "wb") as log:
        group = subprocess.Popen(
            [sys.executable, "-m", "cxp.cli.main", "gateway", "--instances", "2"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            ids = [instance_client_id(settings.gateway.client_id, n) for n in (1, 2)]

            def pids() -> dict[str, int]:
                rows = db.execute(
                    "SELECT DISTINCT ON (gateway_id) gateway_id, (snapshot->>'pid')::int"
                    " FROM gateway_stats WHERE gateway_id = ANY(%s) ORDER BY gateway_id, at DESC",
                    (ids,),
                ).fetchall()
                return dict(rows)

            assert wait_for(lambda: len(pids()) == 2, timeout=60), log_path.read_text()
            victim = pids()[ids[0]]
            os.kill(victim, signal.SIGKILL)
            assert wait_for(lambda: pids().get(ids[0]) not in (None, victim), timeout=60), log_path.read_text()
            assert "gateway instance 1 exited with -9" in log_path.read_text()
        finally:
            group.send_signal(signal.SIGTERM)
            code = group.wait(90)
    assert code == 0, log_path.read_text()[-3000:]
    text = log_path.read_text()
    assert text.count("stopped; final stats") >= 2  # both running instances flushed and stopped cleanly


def test_forget_session_discards_a_retired_members_queue(db, registered, publisher, start_gateway, settings):
    from cxp.gateway.service import forget_session

    member = _member(settings, 1)
    start_gateway("prime", member).stop()  # its session stays subscribed to the group while it is away
    assert publisher.publish(_stream(publisher.prefix, 20)) == 20  # queued for that session
    forget_session(member)
    again = start_gateway("again", member)  # a fresh session: the old queue is gone with the old session
    assert publisher.publish(_stream(publisher.prefix, 10, seq_base=5000)) == 10
    assert wait_for(lambda: _events(db)[0] >= 50, timeout=30)
    assert _stable(db) == 50  # only what was published after it came back
    assert again.stop() == 0


def test_a_member_flooded_past_its_receive_maximum_stores_everything(
    db, registered, publisher, start_gateway, settings
):
    # Mosquitto 2.0.11 does not apply the Receive Maximum the gateway announces to shared-subscription deliveries
    # (its log: 55k PUBLISH outstanding against a window of 4000). The gateway used to deadlock under such a flood:
    # the dispatcher held the pending lock through a blocked pipe write, the acker starved for it, and the writer
    # blocked writing answers nobody read (receiver and writer both in pipe_write, acker on the lock).
    member = _member(settings, 1)
    start_gateway("prime", member).stop()
    items = _stream(publisher.prefix, 50_000)
    assert publisher.publish(items, window=5000) == 50_000  # queued for its session; sent at once when it is back
    gw = start_gateway("flooded", member)
    assert wait_for(lambda: _events(db)[0] >= 250_000, timeout=150), (_events(db), gw.log()[-1500:])
    assert gw.stop() == 0
    assert _events(db) == (250_000, 250_000)
