"""The views the API benchmark opens: shared by `cxp bench api` (warm-up) and loadtests/locustfile_api.py."""

from __future__ import annotations

PRODUCTS = ("thermo-x1", "ebike-s2", "brew-c3")

# (request name, path) of every view a product manager opens; `cxp bench api` warms these first.
PRODUCT_VIEWS: dict[str, list[str]] = {
    "/v1/experience/report": ["/v1/experience/report"],
    "/v1/experience/health?level=product": ["/v1/experience/health?level=product&weeks=12"],
    "/v1/experience/health?level=device": [
        f"/v1/experience/health?level=device&latest=true&product={p}&limit=100" for p in PRODUCTS],
    "/v1/experience/health/{level}/{id}": [f"/v1/experience/health/product/{p}" for p in PRODUCTS],
    "/v1/experience/touchpoints": ["/v1/experience/touchpoints", *(f"/v1/experience/touchpoints?product={p}"
                                                                   for p in PRODUCTS)],
    "/v1/experience/voice": ["/v1/experience/voice?by=product", "/v1/experience/voice?by=product&by=touchpoint",
                             "/v1/experience/voice?by=segment&by=week"],
    "/v1/experience/churn-risk": [f"/v1/experience/churn-risk?limit=50&product={p}" for p in PRODUCTS],
    "/v1/experience/journey": ["/v1/experience/journey"],
    "/v1/experience/disruptions": ["/v1/experience/disruptions"],
    "/v1/experience/personas": [f"/v1/experience/personas?product={p}" for p in PRODUCTS],
}
PRICING_VIEWS: dict[str, list[str]] = {
    "/v1/pricing/comparison": [f"/v1/pricing/comparison?product={p}" for p in PRODUCTS],
}
# How often a product manager opens each view (relative).
VIEW_WEIGHTS = {"/v1/experience/report": 4, "/v1/experience/health?level=product": 4,
                "/v1/experience/health?level=device": 3, "/v1/experience/health/{level}/{id}": 2,
                "/v1/experience/touchpoints": 3, "/v1/experience/voice": 3, "/v1/experience/churn-risk": 2,
                "/v1/experience/journey": 1, "/v1/experience/disruptions": 1, "/v1/experience/personas": 1}
