"""Gateway group scaling: the same backlog drained by 1, 2, 3… gateway instances on one shared subscription.

For each instance count N (one run, same messages, empty telemetry tables each time): N gateways with client ids of
their own join a fresh shared-subscription group; the messages are published at full speed by two publishers
(Mosquitto deals them round-robin to the N members). Throughput = events / (last commit of any instance − first
receipt of any instance). The ratio is against N = 1. Every run checks that each event was stored exactly once.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from cxp.core.config import Settings
from cxp.store.admin import truncate_data
from cxp.tools.bench.ingest import GatewayRun, Payload, _forget_session, _log, _logged_progress, _publish, _stored


def drain_with_instances(settings: Settings, conn, payloads: list[Payload], workdir: Path, instances: int) -> dict:
    """N members of a fresh group, connected; the messages published at full speed; the time the members take."""
    tag = f"n{instances}-{os.getpid()}"
    members = [
        settings.model_copy(
            update={
                "gateway": settings.gateway.model_copy(
                    update={"client_id": f"bench-grp-{tag}-{k}", "share_group": f"bench-{tag}", "stats_interval_s": 0.5}
                )
            }
        )
        for k in range(1, instances + 1)
    ]
    truncate_data(conn, registry=False)
    # Live, not a queue drained on reconnect: Mosquitto 2.0.11 sends a shared-subscription session's queue at once,
    # past Receive Maximum, and the measured member then stalled (docs/scaling.md, known issues).
    runs = [GatewayRun(m, workdir, f"grp-{tag}-{k}", wait=False) for k, m in enumerate(members, 1)]
    for run in runs:
        run.wait_connected()
    time.sleep(1.0)  # every SUBSCRIBE answered and every writer process up
    events = sum(p.events for p in payloads)
    half = len(payloads) // 2
    pubs = [
        threading.Thread(target=_publish, args=(settings, settings.mqtt.topic_prefix, part))
        for part in (payloads[:half], payloads[half:])
    ]
    for t in pubs:
        t.start()
    deadline = time.monotonic() + 1800
    while sum(_logged_progress(r.log_path) for r in runs) < events:
        for r in runs:
            if r.proc.poll() is not None:
                raise SystemExit(f"gateway died:\n{r.log_path.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit("the group did not store the stream within 30 min")
        time.sleep(0.25)
    for t in pubs:
        t.join()
    stats = [r.stop() for r in runs]
    for m in members:
        _forget_session(m, m.gateway.client_id)
    stored = _stored(conn)
    if stored != events:
        raise SystemExit(f"{instances} instances stored {stored} events, expected {events}")
    window = max(s["last_commit_at"] for s in stats) - min(
        s["first_received_at"] for s in stats if s["first_received_at"]
    )
    return {
        "instances": instances,
        "messages": len(payloads),
        "events": events,
        "seconds": round(window, 2),
        "events_per_s": round(events / window),
        "msgs_per_s": round(len(payloads) / window),
        "messages_per_instance": [s["received"] for s in stats],
        "duplicates": sum(s["duplicates"] for s in stats),
        "peak_rss_mb_per_instance": [round(r.peak_rss / 2**20, 1) for r in runs],
    }


def run_scaling(settings: Settings, conn, payloads: list[Payload], workdir: Path, counts: list[int]) -> dict:
    """Drain the same backlog with each instance count; events/s and the ratio against one instance."""
    out: dict = {"runs": []}
    for n in counts:
        _log(f"group drain: {n} instance(s), {len(payloads):,} messages")
        result = drain_with_instances(settings, conn, payloads, workdir, n)
        out["runs"].append(result)
        _log(f"  {result}")
    base = next((r for r in out["runs"] if r["instances"] == 1), out["runs"][0])
    for r in out["runs"]:
        r["ratio_vs_1"] = round(r["events_per_s"] / base["events_per_s"], 3)
    return out
