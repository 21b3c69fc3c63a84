"""Dashboard pages for people who would rather look than read: overview, health, touchpoints, journey, disruptions
and pricing models. Server-rendered HTML with the data embedded as JSON; plotly (from the installed package) draws."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

import psycopg
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from cxp.alerts import repository as alert_store
from cxp.analytics import service as analytics
from cxp.analytics.core.health import HealthConfig
from cxp.analytics.models import Window
from cxp.analytics.query import AnalyticsQuery
from cxp.api.dashboard import assets, pages
from cxp.api.dashboard.alerts import alerts_page
from cxp.api.dashboard.comparison import comparison_plan_ids, model_comparison
from cxp.api.dashboard.decisions import decisions_page
from cxp.api.dashboard.journey_map import journey_map_page, journey_map_svg
from cxp.api.dashboard.measures import measures_page
from cxp.api.dashboard.render import HEADERS, Html, Viewer, el, filter_form, may_see, page, safe_next
from cxp.api.deps import (
    LEGACY_KEY_COOKIE,
    SESSION_COOKIE,
    Cached,
    ConnDep,
    DashboardCachedDep,
    DashboardKey,
    DashboardPricingKey,
    DashboardProductKey,
    DashboardUser,
    LightConnDep,
    SettingsDep,
)
from cxp.api.errors import NotAuthenticated, NotFound, Unprocessable, describe_error
from cxp.api.guard import FailedAuthThrottle
from cxp.api.metrics import count_failure
from cxp.api.routers.earned_growth import compose_earned_growth, resolve_plan
from cxp.pricing.decisions import get_decision_view
from cxp.pricing.errors import PricingError
from cxp.pricing.examples import solve_families
from cxp.store.apikeys import verify_key
from cxp.store.registry import list_products
from cxp.store.sessions import create_session, revoke_session


def _html(body: Html, *, status: int = 200, extra: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={**HEADERS, **(extra or {})})


def _error(status: int, title: str, message: str, details: tuple[str, ...] = (),
           extra: dict[str, str] | None = None) -> HTMLResponse:
    body = pages.error_body(message, details, other_key=status == 403)
    return _html(page(title=title, active="", viewer=Viewer(), body=body), status=status, extra=extra)


def _to_login(request: Request) -> RedirectResponse:
    # A form post that lost its session goes to the page it came from, not back to the post.
    target = "/dashboard" if request.method != "GET" else (
        request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    response = RedirectResponse(f"/dashboard/login?next={quote(target, safe='/')}", status_code=303)
    if SESSION_COOKIE in request.cookies or LEGACY_KEY_COOKIE in request.cookies:
        # ended or unknown: drop it so the sign-in form starts clean
        response.delete_cookie(SESSION_COOKIE, path="/dashboard", httponly=True, samesite="strict")
        response.delete_cookie(LEGACY_KEY_COOKIE, path="/", httponly=True, samesite="strict")
    return response


_PAGE_TITLES = {403: "Not allowed", 422: "Invalid request", 503: "Unavailable"}


def error_page(exc: Exception, request: Request | None = None) -> HTMLResponse:
    """The API's answer to `exc` (errors.ERROR_TABLE: same status, message and headers) as an HTML page."""
    failure = describe_error(exc)
    if request is not None:
        count_failure(request, failure.code)
    message = failure.message.replace("this endpoint", "this page")
    details = tuple(f"{'.'.join(map(str, d.loc))}: {d.message}" for d in failure.details)
    return _error(failure.status, _PAGE_TITLES.get(failure.status, "Error"), message, details, extra=failure.headers)


class DashboardRoute(APIRoute):
    """Failures as pages, not the API's JSON: no valid key → 303 to sign-in; other errors → an HTML error page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except NotAuthenticated:
                return _to_login(request)
            except Exception as exc:  # noqa: BLE001 - a browser gets a page; the table logs what needs logging
                return error_page(exc, request)

        return route


router = APIRouter(prefix="/dashboard", route_class=DashboardRoute, include_in_schema=False)

Product = Annotated[str | None, Query(max_length=200, description="Product model id (default: all)")]


def _viewer(user: DashboardUser) -> Viewer:
    return Viewer(user.name, user.role, user.csrf)


def _products(conn: psycopg.Connection) -> list[str]:
    return [p.product_id for p in list_products(conn, limit=1000)[0]]


def _product_ids(cached: Cached) -> list[str]:
    """The registered products (for the filter forms), through the result cache."""
    return cached("registry.products", _products)


# ---------------------------------------------------------------- sign-in

KEY_IN_URL = ("A key in a URL stays in the browser's history and in server logs: paste it into this form instead "
              "(and consider revoking that key).")


def _login_page(*, next_url: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    form = el("form", el("input", type="hidden", name="next", value=next_url),
              el("label", "API key", el("input", type="password", name="key", autocomplete="off", required=True,
                                        autofocus=True, placeholder="cxp_…")),
              el("button", "Sign in", type="submit"), method="post", action="/dashboard/login")
    body = el("section", el("h3", "Sign in with an API key"),
              el("p", "Keys with the product role open the experience pages, pricing keys the pricing page, "
                      "admin keys everything.", class_="muted"),
              el("p", error, class_="error", role="alert") if error else None, form, class_="card login")
    return _html(page(title="Sign in", active="login", viewer=Viewer(), body=body), status=status)


def _end_session(conn: psycopg.Connection, request: Request) -> None:
    """End the session the request's cookie names, if any (signing in again or out)."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        revoke_session(conn, token=token)


def _forget_cookies(response: Response, *, session: bool = True) -> Response:
    if session:
        response.delete_cookie(SESSION_COOKIE, path="/dashboard", httponly=True, samesite="strict")
    # The key itself, as an older release kept it in the browser: gone at the next sign-in or out.
    response.delete_cookie(LEGACY_KEY_COOKIE, path="/", httponly=True, samesite="strict")
    return response


CROSS_SITE_SIGN_IN = ("This sign-in was sent from another site ({origin}), so it was refused: a page elsewhere "
                      "must not sign your browser in (login CSRF). Sign in from this form.")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an absolute URL, default ports filled in; None when it has no host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    return (parts.scheme.lower(), parts.hostname, port) if parts.hostname else None


def foreign_origin(request: Request, trusted: list[str]) -> str | None:
    """The sending page's origin when it is neither this dashboard's nor a trusted one, else None.

    Browsers send Origin on every cross-origin POST (and Referer unless told not to); a client that sends neither
    is not a browser someone else's page can drive, so it passes."""
    sent = request.headers.get("origin") or request.headers.get("referer")
    if sent is None:
        return None
    own = {_origin(str(request.base_url)), *(_origin(t) for t in trusted)}
    origin = _origin(sent)  # "null" (a sandboxed or file page) has no host: foreign
    return None if origin is not None and origin in own else sent.split("?")[0][:200]


@router.get("/login")
def login_form(
    request: Request,
    next: Annotated[str | None, Query(max_length=2000)] = None,  # noqa: A002 - the conventional name
) -> Response:
    """The sign-in form (POSTs the key in the body); a `?key=` in the URL is refused with a warning."""
    if "key" in request.query_params:
        return _login_page(next_url=safe_next(next), error=KEY_IN_URL, status=400)
    return _login_page(next_url=safe_next(next))


@router.post("/login")
def login(
    request: Request,
    conn: ConnDep,
    settings: SettingsDep,
    key: Annotated[str, Form(max_length=500)],
    next: Annotated[str | None, Form(max_length=2000)] = None,  # noqa: A002
) -> Response:
    """Check the pasted key, open a server-side session and set its opaque `cxp_session` cookie."""
    next_url = safe_next(next)
    if (foreign := foreign_origin(request, settings.api.trusted_origins)) is not None:
        return _login_page(next_url=next_url, status=403, error=CROSS_SITE_SIGN_IN.format(origin=foreign))
    client = request.client.host if request.client else "unknown"
    throttle: FailedAuthThrottle = request.app.state.login_throttle
    wait = throttle.retry_after(client)
    if wait is not None:
        refused = _login_page(next_url=next_url, status=429,
                              error=f"Too many failed sign-ins from this address: retry in {wait} s.")
        refused.headers["Retry-After"] = str(wait)
        return refused
    api_key = verify_key(conn, token=key)
    if api_key is None:
        throttle.failed(client)
        return _login_page(next_url=next_url, error="That key is not valid (unknown, mistyped or revoked).",
                           status=401)
    _end_session(conn, request)  # signing in with another key: the previous session ends here
    opened = create_session(conn, key=api_key, ttl=timedelta(seconds=settings.api.session_ttl_s))
    response = _forget_cookies(RedirectResponse(next_url, status_code=303, headers={"Cache-Control": "no-store"}),
                               session=False)
    response.set_cookie(SESSION_COOKIE, opened.token, max_age=int(settings.api.session_ttl_s), path="/dashboard",
                        httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout(conn: ConnDep, user: DashboardKey) -> Response:
    """End the session server-side (the dependency checked its CSRF token) and go back to the sign-in form."""
    if user.session_token:
        revoke_session(conn, token=user.session_token)
    return _forget_cookies(RedirectResponse("/dashboard/login", status_code=303))


# ---------------------------------------------------------------- static files


@router.get("/static/{name}")
def static(name: str, request: Request) -> Response:
    """plotly.min.js (from the installed plotly package), the page script and CSS; long-cached, gzip when accepted."""
    make = assets.ASSETS.get(name)
    if make is None:
        return Response("not found", status_code=404, media_type="text/plain")
    asset = make()
    # URLs carry ?v=<version>: a year's caching is safe, a new release changes the URL.
    headers = {"Cache-Control": "public, max-age=31536000, immutable", "ETag": asset.etag,
               "Vary": "Accept-Encoding", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(asset.gzipped, media_type=asset.media_type, headers={**headers, "Content-Encoding": "gzip"})
    return Response(asset.body, media_type=asset.media_type, headers=headers)


# ---------------------------------------------------------------- pages


@router.get("")
def overview(key: DashboardKey, cached: DashboardCachedDep,
             weeks: Annotated[int, Query(ge=1, le=104, description="Weeks of history")] = 4) -> HTMLResponse:
    """Fleet report with the top concerns, and links to the pages the key may open."""
    report = cached.service(analytics.get_fleet_report, weeks=weeks) if may_see(key.role, "product") else None
    body, charts = pages.overview(report, role=key.role)
    sub = f"As of {report.window.as_of}, {report.devices:,} devices" if report and report.devices else ""
    return _html(page(title="Overview", active="overview", viewer=_viewer(key), body=body, charts=charts,
                      subtitle=sub))


def _markers(conn: psycopg.Connection, window: Window, *, product: str | None, touchpoint: bool = False) -> list[dict]:
    """The product alerts live at some time in the window's days, read fresh (never from the result cache)."""
    start = datetime.combine(window.start, time(0), tzinfo=UTC)
    end = datetime.combine(window.end + timedelta(days=1), time(0), tzinfo=UTC)
    return alert_store.list_markers(conn, start=start, end=end, product_id=product, touchpoint=touchpoint)


@router.get("/health")
def health(key: DashboardProductKey, cached: DashboardCachedDep, conn: LightConnDep, product: Product = None,
           weeks: Annotated[int, Query(ge=1, le=104)] = 12) -> HTMLResponse:
    """Health over time per product and for the fleet, with components and drivers, and the alerts of the window."""
    by_product = cached.service(analytics.get_health, query=AnalyticsQuery(product=product), level="product",
                                weeks=weeks)
    scope = by_product if product else cached.service(analytics.get_health, level="fleet", weeks=weeks)
    body, charts = pages.health(by_product, scope, scope_name=product or "fleet", config=HealthConfig(),
                                markers=_markers(conn, by_product.window, product=product))
    filters = filter_form(products=_product_ids(cached), product=product, span_name="weeks", span_value=weeks,
                          span_label="Weeks")
    return _html(page(title="Fleet health", active="health", viewer=_viewer(key), body=body, charts=charts,
                      filters=filters))


def _days_page(key: DashboardUser, cached: Cached, *, service: Callable[..., Any], render: Callable[[Any], Any],
               title: str, active: str, product: str | None, days: int) -> HTMLResponse:
    """A page of one analytics service over the last `days` days, with the product/days filter form."""
    body, charts = render(cached.service(service, query=AnalyticsQuery(product=product), days=days))
    filters = filter_form(products=_product_ids(cached), product=product, span_name="days", span_value=days,
                          span_label="Days")
    return _html(page(title=title, active=active, viewer=_viewer(key), body=body, charts=charts, filters=filters))


@router.get("/touchpoints")
def touchpoints(key: DashboardProductKey, cached: DashboardCachedDep, conn: LightConnDep, product: Product = None,
                days: Annotated[int, Query(ge=7, le=3660)] = 56,
                survey_crosshairs: Annotated[Literal["data", "midpoint"], Query()] = "data") -> HTMLResponse:
    """Importance–performance chart per product (with the stated survey, crosshairs as chosen), the table and the
    touchpoint alerts of the window."""
    report = cached.service(analytics.get_touchpoints, query=AnalyticsQuery(product=product), days=days,
                            survey_crosshairs=survey_crosshairs)
    body, charts = pages.touchpoints(report, _markers(conn, report.window, product=product, touchpoint=True))
    filters = filter_form(products=_product_ids(cached), product=product, span_name="days", span_value=days,
                          span_label="Days")
    return _html(page(title="Touchpoints", active="touchpoints", viewer=_viewer(key), body=body, charts=charts,
                      filters=filters))


@router.get("/journey")
def journey(key: DashboardProductKey, cached: DashboardCachedDep, product: Product = None,
            days: Annotated[int, Query(ge=7, le=3660)] = 90) -> HTMLResponse:
    """Lifecycle funnel, cohorts and time to first value."""
    return _days_page(key, cached, service=analytics.get_journey, render=pages.journey, title="Journey",
                      active="journey", product=product, days=days)


Text = Annotated[str | None, Query(max_length=200)]


def _journey_map(cached: Cached, *, product: str | None, segment: str | None, persona: str | None, days: int):
    query = AnalyticsQuery(product=product or None, segment=segment or None)
    return cached.service(analytics.get_journey_map, query=query, days=days, persona=persona or None)


def _map_title(product: str | None, segment: str | None, persona: str | None) -> str:
    scope = [f"product {product}" if product else "all products"]
    scope += [f"segment {segment}"] if segment else []
    scope += [f"persona {persona}"] if persona else []
    return "Journey map · " + ", ".join(scope)


@router.get("/journey-map")
def journey_map(request: Request, key: DashboardProductKey, cached: DashboardCachedDep, product: Product = None,
                segment: Text = None, persona: Text = None,
                days: Annotated[int, Query(ge=7, le=3660)] = 56) -> HTMLResponse:
    """Stages × touchpoints with reach, performance, satisfaction, pain points and drop-off, for a product, a segment
    or a persona; the same map as a standalone SVG at /dashboard/journey-map/svg."""
    m = _journey_map(cached, product=product, segment=segment, persona=persona, days=days)
    scope = AnalyticsQuery(product=product or None, segment=segment or None)
    personas = cached.service(analytics.get_segments, query=scope, days=days, with_health=False)  # names only
    names = sorted({s.name for s in personas.segments} | ({persona} if persona else set()))
    extra = (el("label", "Segment ", el("input", type="text", name="segment", value=segment or "", size=10)),
             el("label", "Persona ", el("select", el("option", "All personas", value="", selected=not persona),
                                        *(el("option", n, value=n, selected=n == persona) for n in names),
                                        name="persona")))
    filters = filter_form(products=_product_ids(cached), product=product, span_name="days", span_value=days,
                          span_label="Days", extra=extra)
    svg_href = "/dashboard/journey-map/svg" + (f"?{request.url.query}" if request.url.query else "")
    title = _map_title(product, segment, persona)
    body = journey_map_page(m, svg=journey_map_svg(m, title=title), svg_href=svg_href)
    return _html(page(title="Journey map", active="journey-map", viewer=_viewer(key), body=body, filters=filters,
                      subtitle=title.removeprefix("Journey map · ")))


@router.get("/journey-map/svg")
def journey_map_image(key: DashboardProductKey, cached: DashboardCachedDep, product: Product = None,
                      segment: Text = None, persona: Text = None,
                      days: Annotated[int, Query(ge=7, le=3660)] = 56) -> Response:
    """The journey map as a standalone SVG file (to print or put on a wall)."""
    title = _map_title(product, segment, persona)
    m = _journey_map(cached, product=product, segment=segment, persona=persona, days=days)
    return Response(journey_map_svg(m, title=title), media_type="image/svg+xml",
                    headers={"Content-Disposition": 'inline; filename="journey-map.svg"', "Cache-Control": "no-store",
                             "X-Content-Type-Options": "nosniff",
                             "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})


@router.get("/measures")
def measures(key: DashboardProductKey, cached: DashboardCachedDep, product: Product = None,
             plan: Annotated[str, Query(max_length=80, description="Plan whose bills are the revenue")] = "hw-connect",
             weeks: Annotated[int, Query(ge=1, le=104)] = 8,
             month: Annotated[date | None, Query(description="1st of the month compared (default: last whole)")] = None,
             ) -> HTMLResponse:
    """Earned growth beside NPS under a plan, the engagement rate and the smart-capability ladder."""
    growth, error = None, None
    try:
        chosen = resolve_plan(cached, plan)
        growth = compose_earned_growth(cached, plan=chosen, by=("product",), month=month, product=product, min_n=10)
    except NotFound as exc:
        error = str(exc)
    except PricingError as exc:
        error = f"earned growth cannot be computed: {exc}"
    query = AnalyticsQuery(product=product)
    body, charts = measures_page(
        growth=growth, growth_error=error,
        engagement=cached.service(analytics.get_engagement_rate, query=query, weeks=weeks),
        ladder=cached.service(analytics.get_capability_ladder, query=query, weeks=weeks),
    )
    extra = [el("label", "Plan ", el("input", type="text", name="plan", value=plan, maxlength=80)),
             el("label", "Month ", el("input", type="date", name="month", value=month.isoformat() if month else None))]
    filters = filter_form(products=_product_ids(cached), product=product, span_name="weeks", span_value=weeks,
                          span_label="Weeks", extra=extra)
    return _html(page(title="CX measures", active="measures", viewer=_viewer(key), body=body, charts=charts,
                      filters=filters))


@router.get("/disruptions")
def disruptions(key: DashboardProductKey, cached: DashboardCachedDep, product: Product = None,
                days: Annotated[int, Query(ge=7, le=3660)] = 56) -> HTMLResponse:
    """Incidents, spikes, recovery times and their effect on later satisfaction."""
    return _days_page(key, cached, service=analytics.get_disruptions, render=pages.disruptions,
                      title="Disruptions", active="disruptions", product=product, days=days)


@router.get("/alerts")
def alerts(key: DashboardProductKey, conn: ConnDep) -> HTMLResponse:
    """Live alerts and the latest history, read fresh (never from the result cache)."""
    body = alerts_page(alert_store.list_alerts(conn, live_only=True, limit=1000),
                       alert_store.list_alerts(conn, limit=100))
    return _html(page(title="Alerts", active="alerts", viewer=_viewer(key), body=body))


@router.get("/pricing")
def pricing(
    key: DashboardPricingKey,
    cached: DashboardCachedDep,
    product: Product = None,
    theta: Annotated[Decimal, Query(ge=0, le=10, description="Bill shock: bill > (1 + theta) × baseline")] =
    Decimal("0.2"),
    baseline: Annotated[str | None, Query(max_length=100, description="Baseline plan id")] = None,
) -> HTMLResponse:
    """Revenue models side by side on a product's recorded usage: revenue, bills, shock, winners and losers."""
    products = _product_ids(cached)
    plan_ids = comparison_plan_ids()
    if baseline is not None and baseline not in plan_ids:
        raise Unprocessable(f"unknown baseline plan {baseline!r}; one of {', '.join(plan_ids)}")
    # The example plans price a thermostat: prefer it when present.
    chosen = product or ("thermo-x1" if "thermo-x1" in products or not products else products[0])
    body, charts = pages.pricing(cached.service(model_comparison, product=chosen, theta=theta, baseline=baseline))
    extra = (el("label", "Shock: bill > (1 + θ) × baseline, θ ", el("input", type="number", name="theta", value=theta,
                                                                    min=0, max=10, step="0.05", class_="short")),
             el("label", "Baseline ", el("select", *(el("option", p, value=p, selected=p == (baseline or plan_ids[0]))
                                                     for p in plan_ids), name="baseline")))
    filters = filter_form(products=products, product=chosen, extra=extra, all_label=None)
    return _html(page(title="Pricing models side by side", active="pricing", viewer=_viewer(key), body=body,
                      charts=charts, filters=filters))


@router.get("/pricing/decisions")
def pricing_decisions_page(
    key: DashboardPricingKey,
    cached: DashboardCachedDep,
    product: Product = None,
    family: Annotated[str, Query(max_length=40, description="Plan family: " + ", ".join(solve_families()))] =
    "ppu-kwh",
    goal: Annotated[Literal["neutral", "max"], Query(description="neutral: revenue-neutral price; max: most "
                                                                 "revenue within the limits")] = "neutral",
    max_losers: Annotated[float | None, Query(ge=0, le=1, description="max: share of customers paying more")] = None,
    max_shock: Annotated[float | None, Query(ge=0, le=1, description="max: share of account-months shocked")] = None,
    theta: Annotated[Decimal, Query(ge=0, le=10, description="Bill shock: bill > (1 + theta) × baseline")] =
    Decimal("0.2"),
    price: Annotated[list[Decimal] | None, Query(max_length=3, description="The family's parameter values to show "
                                                                            "side by side, one per parameter")] = None,
) -> HTMLResponse:
    """A plan family solved (revenue-neutral or the most revenue within limits), its trade-off curves, a point side by
    side."""
    products = _product_ids(cached)
    chosen = product or ("thermo-x1" if "thermo-x1" in products or not products else products[0])
    data = cached.service(get_decision_view, product=chosen, family=family, goal=goal, theta=theta,
                          chosen=tuple(price) if price else None, max_losers=max_losers, max_shock=max_shock)
    families = solve_families()
    extra = (
        el("label", "Family ", el("select", *(el("option", f.title, value=k, selected=k == family)
                                              for k, f in families.items()), name="family")),
        el("label", "Goal ", el("select", el("option", "revenue-neutral", value="neutral", selected=goal == "neutral"),
                                el("option", "most revenue within limits", value="max", selected=goal == "max"),
                                name="goal")),
        el("label", "≤ paying more ", el("input", type="number", name="max_losers", value=max_losers, min=0, max=1,
                                         step="0.01", class_="short")),
        el("label", "≤ shocks ", el("input", type="number", name="max_shock", value=max_shock, min=0, max=1,
                                    step="0.01", class_="short")),
        el("label", "Shock: bill > (1 + θ) × baseline, θ ", el("input", type="number", name="theta", value=theta,
                                                               min=0, max=10, step="0.05", class_="short")),
    )
    filters = filter_form(products=products, product=chosen, extra=extra, all_label=None)
    return _html(page(title="Pricing decisions", active="decisions", viewer=_viewer(key),
                      body=decisions_page(data, theta=theta), filters=filters))
