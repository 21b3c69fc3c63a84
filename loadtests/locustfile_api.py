"""Locust load on the HTTP API: product managers and pricing analysts working over a simulated fleet.

    locust -f loadtests/locustfile_api.py --headless -u 20 -r 5 -t 60s --host http://127.0.0.1:18000 \\
        --product-key cxp_... --pricing-key cxp_...
`cxp bench api` loads the 10,000-device × 90-day fleet, starts the API on it, creates the keys and runs
this file for a bounded time. Requests are named by endpoint template, so the per-endpoint figures
aggregate over the varied query parameters.
"""

from __future__ import annotations

import random

from locust import FastHttpUser, between, events, task

PRODUCTS = ("thermo-x1", "ebike-s2", "brew-c3")


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--product-key", default="", help="API key with the product role")
    parser.add_argument("--pricing-key", default="", help="API key with the pricing role")
    parser.add_argument("--accounts", type=int, default=3000, help="Account ids acct-000000… to look up")


class _ApiUser(FastHttpUser):
    """A caller with one role's key; a non-200 answer counts as a failure with its error text."""

    abstract = True
    role = ""

    def on_start(self) -> None:
        key = getattr(self.environment.parsed_options, f"{self.role}_key")
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

    @task(4)
    def fleet_report(self) -> None:
        self._get("/v1/experience/report", "/v1/experience/report")

    @task(4)
    def product_health(self) -> None:
        self._get(f"/v1/experience/health?level=product&weeks={random.choice((4, 8, 12))}",
                  "/v1/experience/health?level=product")

    @task(2)
    def device_health_page(self) -> None:
        product = random.choice(PRODUCTS)
        offset = random.randrange(0, 3000, 100)
        self._get(f"/v1/experience/health?level=device&latest=true&product={product}&limit=100&offset={offset}",
                  "/v1/experience/health?level=device")

    @task(2)
    def product_history(self) -> None:
        self._get(f"/v1/experience/health/product/{random.choice(PRODUCTS)}", "/v1/experience/health/{level}/{id}")

    @task(3)
    def touchpoints(self) -> None:
        product = random.choice((*PRODUCTS, None))
        self._get("/v1/experience/touchpoints" + (f"?product={product}" if product else ""),
                  "/v1/experience/touchpoints")

    @task(3)
    def voice(self) -> None:
        by = random.choice(("product", "product&by=touchpoint", "segment&by=week"))
        self._get(f"/v1/experience/voice?by={by}", "/v1/experience/voice")

    @task(2)
    def churn_risk(self) -> None:
        self._get(f"/v1/experience/churn-risk?limit=50&product={random.choice(PRODUCTS)}",
                  "/v1/experience/churn-risk")

    @task(1)
    def journey(self) -> None:
        self._get("/v1/experience/journey", "/v1/experience/journey")

    @task(1)
    def disruptions(self) -> None:
        self._get("/v1/experience/disruptions", "/v1/experience/disruptions")

    @task(1)
    def personas(self) -> None:
        self._get(f"/v1/experience/personas?product={random.choice(PRODUCTS)}", "/v1/experience/personas")


class PricingAnalyst(_ApiUser):
    """Compares revenue models, reads plans and looks up experiment assignments."""

    role = "pricing"
    weight = 1
    wait_time = between(1.0, 3.0)

    @task(3)
    def comparison(self) -> None:
        self._get(f"/v1/pricing/comparison?product={random.choice(PRODUCTS)}", "/v1/pricing/comparison")

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
