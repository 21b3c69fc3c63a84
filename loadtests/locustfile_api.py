"""Locust load on the HTTP API: product managers and pricing analysts working over a simulated fleet.

    locust -f loadtests/locustfile_api.py --headless -u 20 -r 5 -t 60s --host http://127.0.0.1:18000 \\
        --product-key cxp_... --pricing-key cxp_...
`cxp bench api` loads the 10,000-device × 90-day fleet, starts the API on it, creates a key per user, times the
first (uncached) answer of every view below and then runs this file for a bounded time. Product managers
open the views a dashboard offers (per product or fleet-wide; paging through devices); pricing analysts
read plans and comparisons and run backtests, which are computed afresh on every call. Requests are named
by endpoint, so the per-endpoint figures aggregate over the views.
"""

from __future__ import annotations

import random

from locust import FastHttpUser, between, events, task

from cxp.tools.bench.api_views import PRICING_VIEWS, PRODUCT_VIEWS, PRODUCTS, VIEW_WEIGHTS


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    # One key per person, as in a real team: the API limits heavy requests running at once per key.
    parser.add_argument("--product-key", default="", help="API keys with the product role, comma-separated")
    parser.add_argument("--pricing-key", default="", help="API keys with the pricing role, comma-separated")


class _ApiUser(FastHttpUser):
    """A caller with one role's key; a non-200 answer counts as a failure with its error text."""

    abstract = True
    role = ""
    network_timeout = 300.0
    connection_timeout = 60.0

    started = 0

    def on_start(self) -> None:
        keys = getattr(self.environment.parsed_options, f"{self.role}_key").split(",")
        key = keys[type(self).started % len(keys)]  # each user of a role its own key while there are enough
        type(self).started += 1
        self.auth = {"Authorization": f"Bearer {key}"}

    def _get(self, path: str, name: str) -> None:
        with self.client.get(path, headers=self.auth, name=name, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")


class ProductManager(_ApiUser):
    """Looks at fleet and product health, drills into touchpoints, voice, churn risk and devices."""

    role = "product"
    weight = 3
    wait_time = between(0.5, 2.0)

    @task
    def open_a_view(self) -> None:
        name = random.choices(list(VIEW_WEIGHTS), weights=list(VIEW_WEIGHTS.values()))[0]
        path = random.choice(PRODUCT_VIEWS[name])
        if name == "/v1/experience/health?level=device":
            path += f"&offset={random.randrange(0, 3000, 100)}"  # paging through the product's devices
        self._get(path, name)


class PricingAnalyst(_ApiUser):
    """Compares revenue models, reads plans and runs backtests of example plans."""

    role = "pricing"
    weight = 1
    wait_time = between(1.0, 3.0)

    @task(3)
    def comparison(self) -> None:
        self._get(random.choice(PRICING_VIEWS["/v1/pricing/comparison"]), "/v1/pricing/comparison")

    @task(2)
    def plans(self) -> None:
        self._get("/v1/pricing/plans", "/v1/pricing/plans")

    @task(1)
    def examples(self) -> None:
        self._get("/v1/pricing/examples", "/v1/pricing/examples")

    @task(1)
    def backtest(self) -> None:
        """Two stored example plans on one product's first quarter: computed afresh on every call."""
        body = {"plans": [{"plan_id": "hw-connect"}, {"plan_id": random.choice(("ppu-graduated", "hybrid"))}],
                "period": {"start_month": "2025-01", "months": 3},
                "cohort": {"product": random.choice(PRODUCTS)}}
        with self.client.post("/v1/pricing/backtests", json=body, headers=self.auth, name="/v1/pricing/backtests",
                              catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
