"""Pure formula core of experience analytics: aggregated frames in, typed results out (no database, no I/O).

Modules: `stats` (shared helpers), `voice` (NPS/CSAT/CES), `health` (Experience Health Score),
`touchpoints` (performance, derived importance, IPA, penalty–reward), `journey` (funnel, time to value),
`disruptions` (episodes, recovery, spikes, recovery effects), `segments` (k-means personas, churn risk).
Every result has an explicit "not enough data" state: values are `None` (or `<NA>` in nullable frame
columns) with a `reason`; no NaN leaks out and nothing divides by zero.
"""
