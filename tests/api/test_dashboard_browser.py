"""Dashboard pages in a real headless Chromium (DevTools protocol) against a real uvicorn server on the fleet DB:
every chart must render with data and without script errors; screenshots go to .stack/screenshots/."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn
import websocket

from cxp.api.app import create_app
from cxp.store.apikeys import create_key
from cxp.store.db import connect

pytestmark = pytest.mark.integration

SCREENSHOTS = Path(__file__).resolve().parents[2] / ".stack" / "screenshots"
PAGE_TIMEOUT_S = 120  # the overview and disruptions pages compute for ~10 s on the 500-device fleet
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# ---------------------------------------------------------------- the DOM dump, read back


@dataclass
class ChartNode:
    """A `[data-chart]` element of the dumped DOM and what was drawn inside it."""

    name: str
    attrs: dict[str, str | None]
    main_svg: int = 0
    traces: int = 0


class _ChartScan(HTMLParser):
    """Finds every `[data-chart]` element and counts plotly's `svg.main-svg` and `g.trace` elements inside."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.open: list[tuple[int, ChartNode]] = []
        self.charts: dict[str, ChartNode] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        for _, node in self.open:
            node.main_svg += tag == "svg" and "main-svg" in classes
            node.traces += tag == "g" and "trace" in classes
        if "data-chart" in a:
            node = ChartNode(a["data-chart"] or "", a)
            self.charts[node.name] = node
            self.open.append((len(self.stack), node))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.stack:
            return
        while self.stack:
            if self.stack.pop() == tag:
                break
        self.open = [(depth, node) for depth, node in self.open if depth < len(self.stack)]


def scan_charts(html: str) -> dict[str, ChartNode]:
    """The chart containers of a dumped DOM."""
    scan = _ChartScan()
    scan.feed(html)
    return scan.charts


# ---------------------------------------------------------------- Chromium over the DevTools protocol


@dataclass
class Loaded:
    """A page after its scripts ran: final URL, the DOM as HTML, and the script/console errors it raised."""

    url: str
    html: str
    errors: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        parts = urlsplit(self.url)
        return parts.path + (f"?{parts.query}" if parts.query else "")


class Browser:
    """One headless Chromium process and a DevTools websocket to it (flattened target sessions)."""

    def __init__(self, binary: str, workdir: Path) -> None:
        profile = workdir / "profile"
        self.log = (workdir / "chromium.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", "--hide-scrollbars", "--window-size=1400,1000", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (see {workdir / 'chromium.log'})")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=PAGE_TIMEOUT_S,
                                              suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """One command; events that arrive meanwhile are kept."""
        self.next_id += 1
        msg: dict = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            data = json.loads(self.ws.recv())
            if data.get("id") == self.next_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})
            if "method" in data:
                self.events.append(data)

    def pump(self, timeout: float) -> None:
        """Read events for up to `timeout` seconds."""
        self.ws.settimeout(timeout)
        try:
            self.events.append(json.loads(self.ws.recv()))
        except websocket.WebSocketTimeoutException:
            pass
        finally:
            self.ws.settimeout(PAGE_TIMEOUT_S)

    def tab(self) -> Tab:
        """A tab in a fresh browser context (its own cookies)."""
        context = self.send("Target.createBrowserContext")["browserContextId"]
        target = self.send("Target.createTarget", {"url": "about:blank", "browserContextId": context})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        return Tab(self, session, context)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the socket may already be gone; the process is stopped below
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


@dataclass
class Tab:
    """One page target, driven through its session."""

    browser: Browser
    session: str
    context: str

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, self.session)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result["result"].get("value")

    def _mine(self, start: int) -> list[dict]:
        return [e for e in self.browser.events[start:] if e.get("sessionId") == self.session]

    def open(self, url: str) -> Loaded:
        """Navigate (following redirects), wait for the load event and for every chart to settle."""
        start = len(self.browser.events)
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + PAGE_TIMEOUT_S

        def loaded() -> bool:
            # The load event of a main-frame navigation to an http URL that happened after ours started.
            seen = False
            for e in self._mine(start):
                frame = e.get("params", {}).get("frame", {})
                if e["method"] == "Page.frameNavigated" and not frame.get("parentId"):
                    seen = frame.get("url", "").startswith("http")
                elif e["method"] == "Page.loadEventFired" and seen:
                    return True
            return False

        while not loaded():
            assert time.monotonic() < deadline, f"{url} did not load in {PAGE_TIMEOUT_S} s"
            self.browser.pump(0.5)
        settled = ("document.readyState === 'complete' && (document.querySelectorAll('.chart[data-chart]')"
                   ".length === 0 || document.body.dataset.charts === 'done')")
        while not self.evaluate(settled):
            assert time.monotonic() < deadline, f"{url}: charts did not settle in {PAGE_TIMEOUT_S} s"
            self.browser.pump(0.2)
        self.browser.pump(0.2)  # late console messages
        html = self.evaluate("document.documentElement.outerHTML")
        return Loaded(self.evaluate("location.href"), html, self._errors(start))

    def _errors(self, start: int) -> list[str]:
        out = []
        for e in self._mine(start):
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log ({p['entry'].get('source')}): {p['entry']['text']} {p['entry'].get('url', '')}")
        return out

    def screenshot(self, path: Path) -> Path:
        """The whole page as PNG (height capped)."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000), "scale": 1}
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path


# ---------------------------------------------------------------- fixtures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_url(fleet_settings, loaded_fleet) -> Iterator[str]:
    """The app in a real uvicorn server (thread) on a free loopback port, over the fleet database."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(fleet_settings), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="dashboard-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def tokens(fleet_settings, loaded_fleet) -> dict[str, str]:
    """A fresh key per role."""
    with connect(fleet_settings.db) as conn:
        return {r: create_key(conn, name=f"pytest dashboard browser {r}", role=r).token
                for r in ("product", "pricing", "admin")}


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Browser]:
    """Headless Chromium (the Debian `chromium` package the provisioning installs)."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: the dashboard's browser test needs it (apt-get install chromium)")
    b = Browser(binary, tmp_path_factory.mktemp("chromium"))
    try:
        yield b
    finally:
        b.close()


def sign_in(tab: Tab, live_url: str, token: str, target: str) -> Loaded:
    """Open `target` signed out (303 to the form), type the key and submit the form as a person would."""
    form = tab.open(live_url + target)
    assert form.path.startswith("/dashboard/login?next="), form.url
    assert 'type="password"' in form.html and not form.errors
    browser = tab.browser
    start = len(browser.events)
    tab.evaluate(f"document.querySelector('input[name=key]').value = {json.dumps(token)};"
                 "document.querySelector('.login form').submit();")
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    while tab.evaluate("location.pathname + location.search") != target or tab.evaluate(
            "document.readyState !== 'complete' || (document.querySelectorAll('.chart[data-chart]').length > 0"
            " && document.body.dataset.charts !== 'done')"):
        assert time.monotonic() < deadline, f"the form did not lead to {target}"
        browser.pump(0.2)
    return Loaded(tab.evaluate("location.href"), tab.evaluate("document.documentElement.outerHTML"),
                  tab._errors(start))


@pytest.fixture(scope="module")
def admin_tab(browser, live_url, tokens) -> Tab:
    """A tab signed in as admin through the sign-in form (the key is POSTed, never in a URL)."""
    tab = browser.tab()
    page = sign_in(tab, live_url, tokens["admin"], "/dashboard/health")
    assert page.path == "/dashboard/health", page.url
    return tab


# ---------------------------------------------------------------- tests


def _fleet_products(loaded_fleet) -> list[str]:
    return sorted(set(loaded_fleet.truth["product_id"]))


PAGES = {
    "overview": ("/dashboard", ["fleet-components", "fleet-bands"]),
    "health": ("/dashboard/health", ["health-score", "health-components", "health-drivers"]),
    "touchpoints": ("/dashboard/touchpoints", None),  # one chart per product
    "journey": ("/dashboard/journey", ["journey-funnel", "journey-cohorts", "journey-ttv"]),
    "disruptions": ("/dashboard/disruptions",
                    ["disruptions-incidents", "disruptions-spikes", "disruptions-recovery", "disruptions-effects"]),
    "pricing": ("/dashboard/pricing", ["pricing-revenue", "pricing-bills", "pricing-shock", "pricing-winners"]),
    # April against March (the fleet starts on 3 March): every product has base customers and NPS answers
    "measures": ("/dashboard/measures?month=2025-04-01", ["earned-growth-nps"]),
}


def assert_rendered_with_data(page: Loaded, expected: list[str], empty: tuple[str, ...] = ()) -> None:
    """Every expected chart holds plotly's SVG with at least one trace and a positive data-points count;
    the `empty` ones say "not enough data" instead of drawing empty axes."""
    assert not page.errors, page.errors
    assert "data-js-errors" not in page.html
    charts = scan_charts(page.html)
    assert sorted(charts) == sorted([*expected, *empty]), f"{page.url}: charts {sorted(charts)}"
    for name in empty:
        assert "data-empty" in charts[name].attrs and charts[name].main_svg == 0, name
    for name, node in charts.items():
        if name in empty:
            continue
        assert "data-empty" not in node.attrs, f"{name}: not enough data on the fleet"
        assert node.main_svg >= 1, f"{name}: no plotly SVG"
        assert node.traces >= 1, f"{name}: no trace drawn"
        assert int(node.attrs.get("data-points") or 0) > 0, f"{name}: no plotted points ({node.attrs})"
        assert int(node.attrs.get("data-marks") or 0) >= 1, f"{name}: {node.attrs}"


@pytest.mark.parametrize("name", list(PAGES))
def test_page_renders_its_charts_with_data(name, admin_tab, live_url, loaded_fleet):
    path, expected = PAGES[name]
    expected = expected or [f"ipa-{p}" for p in _fleet_products(loaded_fleet)]
    page = admin_tab.open(live_url + path)
    assert page.path == path
    assert_rendered_with_data(page, expected)
    shot = admin_tab.screenshot(SCREENSHOTS / f"dashboard-{name}.png")
    print(f"\nscreenshot {name}: {shot} ({sum(int(scan_charts(page.html)[c].attrs['data-points']) for c in expected)}"
          " points)")


def test_filters_redraw_for_one_product(admin_tab, live_url):
    page = admin_tab.open(f"{live_url}/dashboard/health?product=thermo-x1&weeks=4")
    # One product: its drivers have nothing to be compared with.
    assert_rendered_with_data(page, ["health-score", "health-components"], empty=("health-drivers",))
    charts = scan_charts(page.html)
    assert charts["health-score"].attrs["data-points"] == "4"  # 4 weeks of one product, no fleet line
    assert charts["health-components"].attrs["data-points"] == "20"  # 5 components × 4 weeks
    print(f"\nscreenshot health thermo-x1: {admin_tab.screenshot(SCREENSHOTS / 'dashboard-health-thermo-x1.png')}")


def test_signed_out_browser_signs_in_with_the_form(browser, live_url, tokens):
    tab = browser.tab()
    page = sign_in(tab, live_url, tokens["product"], "/dashboard/journey?days=60")
    assert page.path == "/dashboard/journey?days=60"
    assert_rendered_with_data(page, ["journey-funnel", "journey-cohorts", "journey-ttv"])
    assert tab.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read the session
    assert tokens["product"] not in tab.evaluate("JSON.stringify(performance.getEntries().map(e => e.name))")


def test_sign_out_button_ends_the_session(browser, live_url, tokens):
    tab = browser.tab()
    sign_in(tab, live_url, tokens["product"], "/dashboard/journey")
    start = len(browser.events)
    tab.evaluate("document.querySelector('nav form[action=\"/dashboard/logout\"] button').click();")
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    while tab.evaluate("location.pathname") != "/dashboard/login" or tab.evaluate("document.readyState") != "complete":
        assert time.monotonic() < deadline, "sign out did not lead to the sign-in form"
        browser.pump(0.2)
    assert not tab._errors(start)  # no 403: the form carried its CSRF token
    again = tab.open(f"{live_url}/dashboard/journey")
    assert again.path == "/dashboard/login?next=/dashboard/journey"


def test_product_key_is_refused_the_pricing_page(browser, live_url, tokens):
    tab = browser.tab()
    home = sign_in(tab, live_url, tokens["product"], "/dashboard/journey")
    assert home.path == "/dashboard/journey" and 'href="/dashboard/pricing"' not in home.html  # not in the nav
    page = tab.open(f"{live_url}/dashboard/pricing")
    assert "Not allowed" in page.html and "data-chart" not in page.html
    print(f"\nscreenshot forbidden: {tab.screenshot(SCREENSHOTS / 'dashboard-forbidden.png')}")
