"""History import (issue 15): every event of a file stored exactly once in each format, rollups refreshed, a re-import
storing nothing twice, bad rows dead-lettered with their line while the rest is kept, and an import killed mid-file
resumed from its checkpoint without a duplicate."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cxp.deadletters import replay_dead_letters
from cxp.importer import import_file
from cxp.importer.chunks import prepared_chunks
from cxp.store.registry import DeviceRow, upsert_devices
from cxp.tools.history import write_csv, write_history
from tests.fixtures.stack import ACTIVATED

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def planted_history(devices: list[str], *, events: int, seed: int, per_message: int = 8) -> list[bytes]:
    """Messages of `events` random events over the devices (each device's seqs 0..n), in per-device order."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 2, tzinfo=UTC)
    span = (datetime.now(UTC) - timedelta(hours=1) - start).total_seconds()
    per_device = {d: [] for d in devices}
    for _ in range(events):
        d = rng.choice(devices)
        seq = len(per_device[d])
        ts = (start + timedelta(seconds=span * (seq + rng.random()) / (events + 1))).isoformat()
        kind = rng.choice(["usage", "usage", "usage", "state", "error", "feedback"])
        event = {"seq": seq, "ts": ts, "kind": kind}
        if kind == "usage":
            event |= {
                "touchpoint": rng.choice(["brew", "app_pairing"]),
                "duration_s": round(rng.uniform(1, 60), 2),
                "success": rng.random() > 0.1,
            }
        elif kind == "state":
            event |= {"battery_pct": round(rng.uniform(5, 100), 1), "metrics": {"temp_c": 21.5}}
        elif kind == "error":
            event |= {"code": "E42", "severity": "warning"}
        else:
            event |= {"nps": rng.randint(0, 10)}
        per_device[d].append(event)
    messages = []
    for d, evs in per_device.items():
        for i in range(0, len(evs), per_message):
            messages.append(json.dumps({"device_id": d, "events": evs[i : i + per_message]}).encode())
    return messages


def _counts(db) -> dict[str, int]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM device_state),"
        " (SELECT count(*) FROM device_seq), (SELECT count(*) FROM (SELECT DISTINCT device_key, seq FROM"
        "   (SELECT device_key, seq FROM events UNION ALL SELECT device_key, seq FROM device_state) a) d),"
        " (SELECT coalesce(sum(usage_count), 0) FROM rollup_daily),"
        " (SELECT coalesce(sum(heartbeat_count), 0) FROM rollup_daily),"
        " (SELECT count(*) FROM dead_letters)"
    ).fetchone()
    return dict(
        zip(("events", "states", "seqs", "distinct", "rollup_usage", "rollup_states", "dead"), row, strict=True)
    )


def _planted_kinds(messages: list[bytes]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for m in messages:
        for e in json.loads(m)["events"]:
            kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    return kinds


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("seed", [1, 2])
def test_every_event_stored_once_rollups_refreshed_and_a_reimport_stores_nothing(
    db, settings, registered, tmp_path, fmt, seed
):
    messages = planted_history(registered, events=3000, seed=seed)
    kinds = _planted_kinds(messages)
    total = sum(kinds.values())
    path = tmp_path / f"history.{fmt}"
    write_history(path, fmt, messages)

    result = import_file(db, settings=settings, path=path, chunk_events=700)
    assert (result.events_in, result.events_stored, result.duplicates, result.dead_lettered) == (total, total, 0, 0)
    counts = _counts(db)
    assert counts["events"] + counts["states"] == total == counts["seqs"] == counts["distinct"]
    assert counts["states"] == kinds["state"]
    # The rollups were refreshed afterwards: analytics see the history.
    assert counts["rollup_usage"] == kinds["usage"] and counts["rollup_states"] == kinds["state"]
    assert db.execute("SELECT count(*) FROM rollup_dirty").fetchone()[0] == 0

    # The same file again is known by its content: skipped; forced, it is read again and stores nothing twice.
    again = import_file(db, settings=settings, path=path)
    assert again.skipped and again.events_in == 0
    copy = tmp_path / f"renamed.{fmt}"
    copy.write_bytes(path.read_bytes())
    assert import_file(db, settings=settings, path=copy).skipped
    forced = import_file(db, settings=settings, path=path, force=True, chunk_events=500)
    assert (forced.events_stored, forced.duplicates, forced.dead_lettered) == (0, total, 0)
    assert _counts(db) == counts


def _csv_with_bad_rows(path: Path, registered: list[str]) -> tuple[int, dict[int, str]]:
    """A CSV whose planted bad rows sit at known lines; (good events, line -> expected reason)."""
    messages = planted_history(registered, events=400, seed=5, per_message=50)
    rows = []
    for m in messages:
        body = json.loads(m)
        for e in body["events"]:
            row = dict.fromkeys(
                ("touchpoint", "success", "duration_s", "battery_pct", "metrics", "code", "severity", "nps")
            )
            row |= {k: (json.dumps(v) if k == "metrics" else v) for k, v in e.items()}
            rows.append({"device_id": body["device_id"], **row})
    good = len(rows)
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    bad = [
        ({"seq": "twelve"}, "schema"),  # not an integer: typed before validation
        ({"kind": "teleport"}, "schema"),  # the contract refuses it
        ({"device_id": "dev-999"}, "unknown_device"),
        ({"ts": future}, "future_timestamp"),  # refused by the store's time bound
        ({"ts": "2026-13-45T00:00:00Z"}, "schema"),
    ]
    expected: dict[int, str] = {}
    for k, (change, _reason) in enumerate(bad):
        at = 37 + 61 * k  # inside runs of one device's rows, so packed messages are split row by row
        template = dict(rows[at])
        template["seq"] = 1_000_000 + k  # a seq of its own, so the row is not a conflict
        rows.insert(at, template | change)
    # A conflicting re-send: a stored (device, seq) with other content, placed after its original.
    original = rows[10]
    conflict = dict(original) | {
        "ts": "2026-01-02T00:00:00+00:00",
        "kind": "error",
        "code": "E1",
        "severity": None,
        "touchpoint": None,
        "duration_s": None,
        "success": None,
        "battery_pct": None,
        "metrics": None,
        "nps": None,
    }
    rows.insert(300, conflict)
    columns = [
        "device_id",
        "seq",
        "ts",
        "kind",
        "touchpoint",
        "success",
        "duration_s",
        "battery_pct",
        "metrics",
        "code",
        "severity",
        "nps",
    ]
    with path.open("w", encoding="utf-8") as f:
        f.write(",".join(columns) + "\n")
        for line, row in enumerate(rows, start=2):
            cells = [
                "" if row.get(c) is None else str(row[c]).lower() if isinstance(row[c], bool) else str(row[c])
                for c in columns
            ]
            f.write(
                ",".join(f'"{c}"' if "," in c or '"' in c else c for c in (x.replace('"', '""') for x in cells)) + "\n"
            )
            if row is conflict:
                expected[line] = "seq_conflict"
            for k, (change, reason) in enumerate(bad):
                if row.get("seq") == (1_000_000 + k if "seq" not in change else change["seq"]) and all(
                    row.get(c) == v for c, v in change.items()
                ):
                    expected[line] = reason
    return good, expected


def test_bad_rows_are_dead_lettered_with_their_line_and_the_rest_is_kept(db, settings, registered, tmp_path):
    path = tmp_path / "bad.csv"
    good, expected = _csv_with_bad_rows(path, registered)
    assert len(expected) == 6
    result = import_file(db, settings=settings, path=path, chunk_events=150)
    assert result.events_stored == good
    assert result.dead_lettered == len(expected)
    counts = _counts(db)
    assert counts["events"] + counts["states"] == good == counts["distinct"]
    letters = db.execute("SELECT reason, detail, payload FROM dead_letters ORDER BY id").fetchall()
    found = {}
    for reason, detail, payload in letters:
        assert detail.startswith("bad.csv line "), detail
        line = int(detail.removeprefix("bad.csv line ").split(":")[0])
        found[line] = reason
        assert payload  # the row, kept for a replay after a fix
    assert found == expected

    # A row refused for a fixable reason replays like a gateway dead letter once fixed (its payload is the row's
    # one-event message on the device's topic).
    upsert_devices(db, devices=[DeviceRow("dev-999", "test-p1", "acc-1", ACTIVATED, "basic", "A")])
    replayed = replay_dead_letters(db, settings=settings, reason="unknown_device")
    assert (len(replayed.stored), replayed.events_stored) == (1, 1)


def test_bad_jsonl_lines_are_dead_lettered_with_their_line(db, settings, registered, tmp_path):
    messages = planted_history(registered, events=200, seed=9)
    lines = [m.decode() for m in messages]
    lines.insert(3, '{"device_id": "dev-000", "events": [')  # not JSON
    lines.insert(
        7, json.dumps({"events": [{"seq": 5, "ts": "2026-02-01T00:00:00Z", "kind": "usage", "touchpoint": "brew"}]})
    )  # names no device
    lines.insert(11, "")  # blank lines are skipped, and counted
    # A lifecycle detail naming another "device_id" before the message's own: still the message's device.
    nested = {
        "events": [
            {
                "seq": 10_000,
                "ts": "2026-02-01T00:00:00Z",
                "kind": "lifecycle",
                "stage": "referred",
                "detail": {"device_id": "dev-004"},
            }
        ],
        "device_id": "dev-001",
    }
    lines.insert(13, json.dumps(nested))
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = import_file(db, settings=settings, path=path, chunk_events=50)
    assert result.events_stored == 201
    assert db.execute(
        "SELECT d.device_id FROM events e JOIN devices d USING (device_key) WHERE e.seq = 10000"
    ).fetchall() == [("dev-001",)]
    letters = dict(db.execute("SELECT split_part(detail, ':', 1), reason FROM dead_letters").fetchall())
    assert letters == {"h.jsonl line 4": "invalid_json", "h.jsonl line 8": "schema"}


def test_an_import_killed_mid_file_resumes_and_stores_every_event_exactly_once(db, settings, registered, tmp_path):
    messages = planted_history(registered, events=40_000, seed=3, per_message=1)
    path = tmp_path / "big.csv"
    from cxp.tools.history import flat_rows

    write_csv(path, flat_rows(messages))
    size = path.stat().st_size
    env = {
        **os.environ,
        "CXP_DB__NAME": settings.db.name,
        "CXP_DB__PORT": str(settings.db.port),
        "CXP_MQTT__TOPIC_PREFIX": settings.mqtt.topic_prefix,
        "PYTHONPATH": str(ROOT / "src"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cxp.cli.main", "import", str(path), "--chunk-events", "300", "--no-progress"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        position = 0
        while time.monotonic() < deadline and proc.poll() is None:
            row = db.execute("SELECT position FROM import_files").fetchone()
            position = row[0] if row else 0
            if position > size // 4:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    status, position, line = db.execute("SELECT status, position, line FROM import_files").fetchone()
    assert status == "running" and 0 < position < size  # killed mid-file
    stored_before = _counts(db)
    assert 0 < stored_before["events"] + stored_before["states"] < len(messages)

    result = import_file(db, settings=settings, path=path, chunk_events=2000)
    assert result.resumed_at_line == line
    # Only what the killed run had not committed is read again: no duplicates at all.
    assert result.duplicates == 0
    assert stored_before["events"] + stored_before["states"] + result.events_stored == len(messages)
    counts = _counts(db)
    assert counts["events"] + counts["states"] == len(messages) == counts["seqs"] == counts["distinct"]
    assert counts["dead"] == 0
    assert db.execute("SELECT status FROM import_files").fetchone()[0] == "done"


def test_the_cli_prints_a_json_line_per_file_and_fails_on_a_file_it_cannot_import(db, settings, registered, tmp_path):
    good = tmp_path / "h.jsonl"
    write_history(good, "jsonl", planted_history(registered, events=50, seed=4))
    bad = tmp_path / "h.csv"
    bad.write_text("device,when\n")
    env = {
        **os.environ,
        "CXP_DB__NAME": settings.db.name,
        "CXP_DB__PORT": str(settings.db.port),
        "CXP_MQTT__TOPIC_PREFIX": settings.mqtt.topic_prefix,
        "PYTHONPATH": str(ROOT / "src"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "cxp.cli.main", "import", str(good), str(bad), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    first = json.loads(done.stdout.splitlines()[0])
    assert (first["name"], first["events_stored"], first["dead_lettered"]) == ("h.jsonl", 50, 0)
    assert "h.csv line 1: the flat layout needs columns" in done.stdout


def test_a_writer_that_stops_early_ends_the_reading_process(db, settings, registered, tmp_path):
    path = tmp_path / "many.jsonl"
    write_history(path, "jsonl", planted_history(registered, events=6_000, seed=5))
    chunks = prepared_chunks(settings=settings, devices=lambda _: None, path=path, fmt="jsonl", name=path.name,
                             chunk_events=500, in_process=True)
    chunk, mark = next(chunks)
    assert chunk.messages and not chunk.letters and mark.line > 0  # validated by the child
    assert [p.name for p in multiprocessing.active_children()] == ["cxp-import-reader"]
    chunks.close()  # as when the writer raises
    assert multiprocessing.active_children() == []
