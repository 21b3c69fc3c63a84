"""The receiver's dispatcher and acker against a writer that answers every batch (a stand-in on real pipes): the
dispatcher's blocking send must never hold what the acker needs, or both wait for ever (found by `cxp bench ingest`
on a loaded machine: the gateway stopped after 21,277 of 50,000 messages)."""

from __future__ import annotations

import threading
import time

import pytest

from cxp.gateway.service import Gateway, _Inbound
from cxp.gateway.writer import BatchResult

pytestmark = pytest.mark.integration  # the gateway reads its broker secret from the stack

BATCHES = 40


class _Exited:
    exitcode = 0


def test_large_batches_and_answers_never_deadlock_the_dispatcher_and_the_acker(stack) -> None:
    gw = Gateway(stack)
    batches_r, gw._batches = gw._ctx.Pipe(duplex=False)
    gw._results, results_w = gw._ctx.Pipe(duplex=False)
    gw._writer = _Exited()

    def writer() -> None:
        # Answers as large as the real writer's (a latency sample per message): a few fill the pipe.
        while (job := batches_r.recv()) is not None:
            batch_id, items = job
            results_w.send(
                BatchResult(
                    batch_id, True, len(items), len(items), 0, 0, 0, [1.0] * len(items), 1.0, 0, [1.0] * len(items), {}
                )
            )
        results_w.close()

    def dispatch() -> None:
        for i in range(BATCHES):
            gw._dispatch([_Inbound("d/dev-000/telemetry", b"x" * 1000, j + 1, 1, time.time()) for j in range(2000)], i)
        with gw._send_lock:
            gw._batches.send(None)

    threads = [threading.Thread(target=f, daemon=True) for f in (writer, gw._acker_loop, dispatch)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), f"deadlocked after {gw.stats.batches} of {BATCHES} batches"
    assert gw.stats.batches == BATCHES and gw.stats.received == BATCHES * 2000
