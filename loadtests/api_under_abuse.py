"""API memory and `/healthz` latency under abuse, both rounds of issue 11's proof in one command.

    .venv/bin/python loadtests/api_under_abuse.py                      # defaults of both benchmarks
    .venv/bin/python loadtests/api_under_abuse.py --accounts 10000 --months 120 --plans 8   # the 6.7 M-bill job

(a) unauthenticated large bodies, half-sent heads and trickled bodies against the API (`cxp bench guard`):
API RSS and /healthz p50/p99 without and with a key; (b) a large backtest job read page by page and as a
streamed CSV (`cxp bench jobs`): time and API RSS per read. Options after the script name go to round (b);
each round is also a `cxp bench` command of its own with its own --help. Figures: README, Performance.
"""

from __future__ import annotations

import sys

from cxp.tools.bench import guard, jobs

if __name__ == "__main__":
    print("== (a) large unauthenticated bodies, slow heads and bodies", flush=True)
    guard.main([])
    print("== (b) a large backtest job read page by page and as CSV", flush=True)
    jobs.main(sys.argv[1:])
