"""Pricing lab: revenue models billed exactly on recorded usage, backtests, price experiments, willingness to pay.

`cxp.pricing.core` is the pure domain (no database, no files). The modules at this level do the I/O:
`queries` (the SQL), `metrics` (billable metrics and activity read from PostgreSQL), `repository`
(stored plan versions and experiment designs), `service` (the keyword-only functions the API calls),
`exports` (backtest bills to CSV / Parquet files); `examples` is a catalogue of example plans (data).
Every error is a `PricingError` (`errors`); the service and repository functions, and the willingness-to-pay
functions the API calls directly, map numeric and value failures onto it.
"""
