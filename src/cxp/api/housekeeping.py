"""Periodic chores of the API process: expired and ended dashboard sessions are deleted on a timer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.concurrency import run_in_threadpool

from cxp.store.sessions import purge_sessions

log = logging.getLogger("cxp.api.housekeeping")


def _purge(state: Any) -> int:
    with state.light_pool.connection() as conn:
        return purge_sessions(conn)


async def purge_sessions_every(state: Any, interval_s: float) -> None:
    """Delete dead sessions every `interval_s` (a database outage is logged and retried at the next tick)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            purged = await run_in_threadpool(_purge, state)
        except Exception as exc:  # noqa: BLE001 - the next tick retries; the API keeps serving meanwhile
            log.warning("could not purge dashboard sessions: %s", exc)
            continue
        state.sessions_purged = getattr(state, "sessions_purged", 0) + purged
        if purged:
            log.info("purged %d expired or ended dashboard session(s)", purged)


@contextlib.asynccontextmanager
async def housekeeping(state: Any, *, session_purge_s: float) -> AsyncIterator[None]:
    """Run the chores while the app lives (0: no session purge task; sign-in still purges)."""
    tasks = [asyncio.create_task(purge_sessions_every(state, session_purge_s), name="cxp-session-purge")
             ] if session_purge_s > 0 else []
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
