"""Benchmarks that print figures (`cxp bench …`): ingest, API, analytics, backtest, pricing core, simulator,
identity."""
