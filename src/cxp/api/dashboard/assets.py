"""Static assets of the dashboard: plotly.js from the installed plotly package (no CDN), the page script and CSS."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache

_JS = r"""'use strict';
// Draws every chart of the page from the JSON in #dashboard-data, then marks each container with the number
// of plotted points (data-points) and rendered traces (data-marks) so a test can tell "rendered with data".
(function () {
  const errors = [];
  function note(message) {
    errors.push(String(message));
    document.body.dataset.jsErrors = errors.join(' | ');
  }
  window.addEventListener('error', (e) => note(e.message || e));
  window.addEventListener('unhandledrejection', (e) => note(e.reason));
  document.addEventListener('securitypolicyviolation', (e) => note('CSP blocked ' + e.violatedDirective));

  function length(v) { return Array.isArray(v) ? v.length : 0; }
  function points(gd) {
    let n = 0;
    for (const t of gd.data) {
      if (t.visible === false) continue;
      n += Math.max(length(t.x), length(t.y), length(t.values));
    }
    return n;
  }
  const base = {
    margin: {l: 60, r: 20, t: 20, b: 50},
    font: {family: 'system-ui, -apple-system, Segoe UI, sans-serif', size: 12},
    legend: {orientation: 'h', y: -0.18},
    hoverlabel: {namelength: -1},
  };
  const config = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ['lasso2d', 'select2d']};

  const holder = document.getElementById('dashboard-data');
  const specs = holder ? JSON.parse(holder.textContent).charts : {};
  const jobs = [];
  for (const el of document.querySelectorAll('.chart[data-chart]')) {
    const spec = specs[el.dataset.chart];
    if (!spec) { note('no data for chart ' + el.dataset.chart); continue; }
    if (typeof Plotly === 'undefined') { note('plotly did not load'); break; }
    const layout = Object.assign({}, base, spec.layout || {});
    jobs.push(Plotly.newPlot(el, spec.data, layout, config).then((gd) => {
      el.dataset.points = String(points(gd));
      el.dataset.marks = String(gd.querySelectorAll('g.trace').length);
    }));
  }
  Promise.allSettled(jobs).then((results) => {
    for (const r of results) if (r.status === 'rejected') note(r.reason);
    document.body.dataset.charts = 'done';
  });
})();
"""

_CSS = """
:root { --fg: #1d2430; --muted: #667085; --line: #e4e7ec; --bg: #f6f7f9; --accent: #2557d6;
        --green: #2e9e5b; --amber: #d89b16; --red: #d33a2f; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
       background: var(--bg); }
nav { display: flex; gap: 4px; align-items: center; padding: 8px 20px; background: #1d2430; }
nav a { color: #d0d5dd; text-decoration: none; padding: 6px 10px; border-radius: 6px; }
nav a:hover, nav a.active { background: #344054; color: #fff; }
nav .brand { color: #fff; font-weight: 700; margin-right: 16px; letter-spacing: .04em; }
nav .user { margin-left: auto; color: #d0d5dd; display: flex; gap: 8px; align-items: center; }
nav .user form { margin: 0; }
nav button { background: #344054; color: #fff; border: 0; border-radius: 6px; padding: 5px 10px; cursor: pointer; }
.badge { background: #475467; color: #fff; border-radius: 10px; padding: 1px 8px; font-size: 12px; }
main { max-width: 1320px; margin: 0 auto; padding: 16px 20px 40px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 17px; margin: 24px 0 8px; }
h3 { font-size: 15px; margin: 0 0 8px; }
.subtitle, .note, .muted { color: var(--muted); }
.note { font-size: 12px; margin: 6px 0 0; }
.filters { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; margin: 8px 0 16px; }
.filters select, .filters input, .filters button { font: inherit; padding: 4px 8px; }
.filters input.short { width: 6em; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 16px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px; margin: 0 0 16px; }
.chart { width: 100%; }
.empty { display: flex; align-items: center; justify-content: center; min-height: 120px; color: var(--muted);
         border: 1px dashed var(--line); border-radius: 8px; padding: 16px; text-align: center; }
.kpis { display: flex; gap: 16px; flex-wrap: wrap; margin-bottom: 16px; }
.kpi { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 12px 18px; min-width: 170px; }
.kpi .value { font-size: 28px; font-weight: 700; }
.kpi .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.band-green { color: var(--green); } .band-amber { color: var(--amber); } .band-red { color: var(--red); }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: 13px; }
caption { text-align: left; font-weight: 600; padding: 4px 0 6px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { color: var(--muted); font-weight: 600; background: #fafbfc; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.concerns { list-style: none; padding: 0; margin: 0; }
.concerns li { padding: 8px 10px; border-left: 4px solid var(--line); margin-bottom: 6px; background: #fff; }
.concerns li.high { border-color: var(--red); } .concerns li.medium { border-color: var(--amber); }
.concerns li.low { border-color: #98a2b3; }
.sev { font-weight: 700; text-transform: uppercase; font-size: 11px; margin-right: 6px; }
.links { display: grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); gap: 12px; }
.links a { display: block; background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 12px;
           color: var(--fg); text-decoration: none; }
.links a:hover { border-color: var(--accent); }
.links a strong { display: block; color: var(--accent); }
.login { max-width: 420px; margin: 60px auto; }
.login input[type=password] { width: 100%; font: inherit; padding: 8px; margin: 6px 0 12px; }
.login button { font: inherit; padding: 8px 16px; }
.error { color: var(--red); font-weight: 600; }
dl.defs dt { font-weight: 600; margin-top: 6px; } dl.defs dd { margin: 0 0 0 12px; color: var(--muted); }
"""


@dataclass(frozen=True)
class Asset:
    """One static file: body, its gzip, media type and a strong ETag."""

    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


def _asset(body: bytes, media_type: str) -> Asset:
    return Asset(body, gzip.compress(body, 6, mtime=0), media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


@cache
def plotly_asset() -> Asset:
    """plotly.min.js of the installed plotly package (built once per process: ~4.8 MB, ~1.4 MB gzipped)."""
    from plotly.offline import get_plotlyjs

    return _asset(get_plotlyjs().encode(), "text/javascript; charset=utf-8")


@cache
def plotly_version() -> str:
    """The installed plotly package's version (cache-busts the long-cached script URL)."""
    import plotly

    return plotly.__version__


@cache
def script_asset() -> Asset:
    """The page script."""
    return _asset(_JS.encode(), "text/javascript; charset=utf-8")


@cache
def css_asset() -> Asset:
    """The stylesheet."""
    return _asset(_CSS.encode(), "text/css; charset=utf-8")


@cache
def asset_version() -> str:
    """A short digest of the page script and stylesheet (cache-busts their URLs)."""
    return hashlib.sha256(_JS.encode() + _CSS.encode()).hexdigest()[:12]


ASSETS = {"plotly.min.js": plotly_asset, "dashboard.js": script_asset, "dashboard.css": css_asset}
