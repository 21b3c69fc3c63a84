"""The broker-log follower on Mosquitto 2.0.11's exact line formats, and its reading across a rotation."""

from __future__ import annotations

from datetime import UTC, datetime

import psutil
import pytest

from cxp.gateway.broker_log import LogReader, LogState, device_of
from tests.fixtures.gateway import wait_for

T = 1796300000
LINES = f"""{T}: mosquitto version 2.0.11 running
{T}: New connection from 127.0.0.1:50100 on port 18883.
{T}: New client connected from 127.0.0.1:50100 as dev-a (p5, c1, k60, u'dev-a').
{T + 1}: New client connected from 10.0.0.7:40000 as dev-b (p2, c1, k30, u'dev-b').
{T + 1}: New client connected from ::1:40001 as gw-1 (p5, c0, k60, u'cxp-gateway').
{T + 2}: Received PUBLISH from dev-a (d0, q1, r0, m1, 'devices/dev-a/telemetry', ... (120 bytes))
{T + 2}: Denied PUBLISH from dev-a (d0, q1, r0, m2, 'devices/dev-b/telemetry', ... (120 bytes))
{T + 3}: Denied PUBLISH from dev-a (d0, q1, r0, m3, 'devices/dev-c/telemetry', ... (98 bytes))
{T + 3}: Client <unknown> disconnected, not authorised.
{T + 3}: Client dev-b disconnected, not authorised.
{T + 4}: Client dev-b closed its connection.
""".encode()


def test_connects_disconnects_and_denied_publishes_per_username() -> None:
    state = LogState()
    state.feed(LINES)
    assert state.denied_total == 2 and state.connects_total == 3 and state.connected_now == 2
    updates, restarted = state.take()
    by_user = {u.username: u for u in updates}
    assert not restarted and set(by_user) == {"dev-a", "dev-b", "cxp-gateway"}
    a = by_user["dev-a"]
    assert a.connected and a.last_address == "127.0.0.1" and a.denied_publishes == 2
    assert a.last_denied_topic == "devices/dev-c/telemetry" and a.last_denied_at == datetime.fromtimestamp(T + 3, UTC)
    # "not authorised" is a refused attempt, not the end of the live connection; "closed" is.
    b = by_user["dev-b"]
    assert b.connected is False and b.last_disconnected_at == datetime.fromtimestamp(T + 4, UTC)
    assert by_user["cxp-gateway"].last_address == "::1"
    assert state.take() == ([], False)


def test_replay_keeps_connections_but_counts_nothing_and_a_takeover_ends_the_old_login() -> None:
    state = LogState()
    state.feed(LINES, count=False)
    assert state.denied_total == 0 and state.connects_total == 0 and state.connected_now == 2
    state.take()
    state.feed(f"{T + 5}: Client dev-a already connected, closing old connection.\n"
               f"{T + 5}: New client connected from 127.0.0.1:5 as dev-a (p5, c1, k10, u'cxp-admin').\n"
               f"{T + 6}: Client dev-a disconnected.\n".encode())
    by_user = {u.username: u for u in state.take()[0]}
    assert by_user["dev-a"].connected is False and by_user["cxp-admin"].connected is False
    state.feed(f"{T + 7}: mosquitto version 2.0.11 terminating\n".encode())
    assert state.connected_now == 0 and state.take() == ([], True)


def test_a_failed_write_is_restored_under_newer_changes() -> None:
    state = LogState()
    state.feed(LINES)
    updates, _ = state.take()
    state.feed(f"{T + 9}: Denied PUBLISH from dev-a (d0, q1, r0, m4, 'x/dev-z/telemetry', ... (1 bytes))\n".encode())
    state.restore(updates)
    a = {u.username: u for u in state.take()[0]}["dev-a"]
    assert a.denied_publishes == 3 and a.last_denied_topic == "x/dev-z/telemetry" and a.connected


def test_rotation_usernames_belong_to_their_device() -> None:
    assert device_of("dev-a~2") == "dev-a" and device_of("dev-a") == "dev-a"


def test_reader_yields_whole_lines_and_follows_a_rename(tmp_path) -> None:
    path = tmp_path / "mosquitto.log"
    path.write_bytes(b"1: one\n2: tw")
    reader = LogReader(path)
    assert b"".join(reader.chunks()) == b"1: one\n"
    with open(path, "ab") as f:
        f.write(b"o\n")
    assert b"".join(reader.chunks()) == b"2: two\n"
    # The broker keeps writing to the renamed file until it reopens its log; the rest is read before the new file.
    old = open(path, "ab")  # noqa: SIM115
    path.rename(tmp_path / "mosquitto.log.1")
    old.write(b"3: late\n")
    old.close()
    path.write_bytes(b"4: new\n")
    assert b"".join(reader.chunks()) == b"3: late\n4: new\n"
    assert reader.size() == len(b"4: new\n")
    reader.close()


def test_reader_can_start_at_the_first_whole_line_of_the_tail(tmp_path) -> None:
    path = tmp_path / "mosquitto.log"
    path.write_bytes(b"1: first line\n2: second\n3: third\n")
    reader = LogReader(path)
    reader.skip_to_tail(12)
    assert b"".join(reader.chunks()) == b"3: third\n"
    short = LogReader(path)
    short.skip_to_tail(1000)
    assert b"".join(short.chunks()).startswith(b"1: first")
    reader.close()
    short.close()


def _followers(pid: int) -> list[psutil.Process]:
    out = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if any(f.path.endswith("mosquitto.log") for f in child.open_files()):
                out.append(child)
        except psutil.Error:
            continue
    return out


@pytest.mark.integration
def test_follower_runs_beside_the_gateway_and_ends_with_a_killed_one(start_gateway) -> None:
    gw = start_gateway()
    assert wait_for(lambda: _followers(gw.proc.pid), timeout=30), gw.log()[-2000:]
    follower = _followers(gw.proc.pid)[0]
    gw.kill()  # SIGKILL: the gateway never tells its children to stop
    _, alive = psutil.wait_procs([follower], timeout=30)
    assert not alive
