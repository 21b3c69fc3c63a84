"""Gateway counters: bounded latency samples, correct percentiles."""

from cxp.gateway.stats import GatewayStats, _Ring


def test_ring_keeps_the_most_recent_samples_and_wraps():
    ring = _Ring(size=5)
    assert ring.percentile(50) is None
    ring.extend([1.0, 2.0, 3.0])
    assert ring.percentile(50) == 2.0
    ring.extend([10.0, 20.0, 30.0, 40.0])  # wraps: keeps 3, 10, 20, 30, 40
    assert ring.percentile(0) == 3.0 and ring.percentile(100) == 40.0
    ring.extend([float(v) for v in range(100, 112)])  # longer than the ring
    assert ring.percentile(0) == 107.0 and ring.percentile(100) == 111.0


def test_snapshot_reports_counters_and_span():
    stats = GatewayStats()
    assert stats.snapshot()["active_s"] is None
    stats.first_received_at = 1000.0
    stats.add_batch(batch_ms=12.0, latencies_ms=[5.0, 15.0])
    snap = stats.snapshot()
    assert snap["batches"] == 1 and snap["batch_ms_p50"] == 12.0
    assert snap["publish_to_commit_ms_p50"] == 10.0 and snap["active_s"] > 0
