"""Dead letters after a fix: validate again and re-ingest, exactly once (contract + store, no gateway, so the API
and the CLI can both call it)."""

from cxp.deadletters.replay import ReplayResult, count_pending, replay_dead_letters

__all__ = ["ReplayResult", "count_pending", "replay_dead_letters"]
