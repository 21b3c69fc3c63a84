"""Pure formula core of experience analytics: aggregated frames in, typed results out (no database, no I/O).

Modules: `stats` (shared helpers), `voice` (NPS/CSAT/CES, satisfaction index), `health` (Experience Health
Score), `touchpoints` (performance, derived importance, IPA, penalty–reward), `priorities` (touchpoint importance,
quadrant and class per product), `journey` (funnel, time to value), `disruptions` (episodes, recovery, spikes,
recovery effects), `segments` (k-means with one fit per k, churn risk), `personas` (persona features and names).
Invalid arguments and inputs raise `cxp.analytics.errors` subclasses, never a bare ValueError.
Every result has an explicit "not enough data" state: values are `None` (or `<NA>` in nullable frame
columns) with a `reason`; no NaN leaks out and nothing divides by zero.
"""
