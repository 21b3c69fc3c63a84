"""Incident detection: runs of hours in which far more of a touchpoint's users hit one error code than usual.

Per product × touchpoint × error code and hour: k = devices with that error, n = devices that used the touchpoint
(the exposure). The baseline rate p0 of the key is pooled over every hour given (the window and the history
before it): (Σk + ½) / (Σn + 1). Pooled over the whole period it needs no trailing history, so an incident on the
first day is tested like any other; an incident itself raises p0 only a little, being a few hours among hundreds.
An hour is *raised* when k ≥ 1 and k / n ≥ `edge_ratio` · p0; hours nobody used the touchpoint in are neutral.
Raised hours, with neutral ones and at most `gap_hours` quiet used hours between them, form a candidate run;
it is an incident run when its Σk against Binomial(Σn, p0) has a p-value below `alpha` (small: every key × run
is tested), Σk ≥ `min_errors` and Σk ≥ `min_ratio` · p0 · Σn. So a run starts and ends with the hours the error
rate is up, and a long incident that hits a few devices an hour adds up over its hours. Of a chain, the span with
the highest scan statistic (binomial log-likelihood ratio) is the one tested, so hours raised by chance at its
edges are left out. Whole-array statistics over keys × hours.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from cxp.analytics.core._frames import epoch_seconds, float_column, require_columns, to_nullable
from cxp.analytics.errors import InvalidParameter

INCIDENT_KEYS: tuple[str, ...] = ("product_id", "touchpoint", "code")
HOUR_S = 3600.0
RUN_COLUMNS = [*INCIDENT_KEYS, "start", "end", "hours", "k", "n", "p0", "p_value"]


def _hour_matrices(errors: pd.DataFrame, exposure: pd.DataFrame) -> tuple[pd.MultiIndex, float, np.ndarray, np.ndarray]:
    """keys, the first hour (epoch s), k and n as keys × hours matrices (n ≥ k: a failed use is a use)."""
    err_t, exp_t = epoch_seconds(errors["bucket"]), epoch_seconds(exposure["bucket"])
    both = np.concatenate([err_t, exp_t])
    t0 = float(np.floor(np.nanmin(both) / HOUR_S) * HOUR_S)
    hours = int((np.nanmax(both) - t0) // HOUR_S) + 1
    # Each key column as integer codes in sorted order, combined into one integer per row: the keys come out in the
    # order of their tuples, without building a tuple per row (most of this function's time over a fleet's hours).
    levels, codes = [], []
    for name in INCIDENT_KEYS:
        column_codes, uniques = pd.factorize(errors[name].astype(str), sort=True)
        levels.append(pd.Index(uniques))
        codes.append(column_codes)
    sizes = tuple(max(len(level), 1) for level in levels)
    key_codes, key_id = np.unique(np.ravel_multi_index(codes, sizes), return_inverse=True)
    key_levels = np.unravel_index(key_codes, sizes)
    keys = pd.MultiIndex.from_arrays([levels[i][key_levels[i]] for i in range(len(INCIDENT_KEYS))],
                                     names=[None] * len(INCIDENT_KEYS))
    k_mat = np.zeros((len(keys), hours))
    np.add.at(k_mat, (key_id.ravel(), ((err_t - t0) // HOUR_S).astype(int)), float_column(errors, "devices"))
    # exposure per product × touchpoint, shared by each of its codes
    pair_codes, pair_of_key = np.unique(key_levels[0] * sizes[1] + key_levels[1], return_inverse=True)
    exp_product = levels[0].get_indexer(exposure["product_id"].astype(str))
    exp_touchpoint = levels[1].get_indexer(exposure["touchpoint"].astype(str))
    exp_code = exp_product * sizes[1] + exp_touchpoint
    exp_row = np.minimum(np.searchsorted(pair_codes, exp_code), max(len(pair_codes) - 1, 0))
    ok = (exp_product >= 0) & (exp_touchpoint >= 0) & (pair_codes[exp_row] == exp_code) & np.isfinite(exp_t)
    n_pair = np.zeros((len(pair_codes), hours))
    np.add.at(n_pair, (exp_row[ok], ((exp_t[ok] - t0) // HOUR_S).astype(int)), float_column(exposure, "users")[ok])
    return keys, t0, k_mat, np.fmax(n_pair[pair_of_key.ravel()], k_mat)


def incident_runs(
    *,
    errors: pd.DataFrame,
    exposure: pd.DataFrame,
    alpha: float = 1e-5,
    min_errors: int = 3,
    min_ratio: float = 3.0,
    edge_ratio: float = 3.0,
    gap_hours: int = 1,
) -> pd.DataFrame:
    """Runs of raised hours per product × touchpoint × error code that are anomalous (module docstring).

    `errors`: product_id, touchpoint, code, bucket (hour start), devices (distinct devices with that error).
    `exposure`: product_id, touchpoint, bucket, users (distinct devices that used the touchpoint in the hour).
    Returns keys, start (first hour of the run), end (end of its last hour), hours, k (device-hours with the
    error), n (device-hours of use), p0 (the key's baseline rate), p_value (of the run's k against p0).
    """
    require_columns(errors, [*INCIDENT_KEYS, "bucket", "devices"], what="incident_runs errors")
    require_columns(exposure, ["product_id", "touchpoint", "bucket", "users"], what="incident_runs exposure")
    if not 0 < alpha < 1 or min_errors < 1 or min_ratio < 1 or edge_ratio < 1 or gap_hours < 0:
        raise InvalidParameter("need 0 < alpha < 1, min_errors ≥ 1, min_ratio ≥ 1, edge_ratio ≥ 1, gap_hours ≥ 0")
    if errors.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    keys, t0, k_mat, n_mat = _hour_matrices(errors, exposure)
    p0 = (k_mat.sum(axis=1) + 0.5) / (n_mat.sum(axis=1) + 1.0)
    raised = (k_mat > 0) & (k_mat >= edge_ratio * p0[:, None] * n_mat)
    open_ = raised | (n_mat == 0)
    ck = np.concatenate([np.zeros((len(keys), 1)), np.cumsum(k_mat, axis=1)], axis=1)
    cn = np.concatenate([np.zeros((len(keys), 1)), np.cumsum(n_mat, axis=1)], axis=1)
    rows, starts, ends = [], [], []
    for row in np.nonzero(raised.any(axis=1))[0]:
        for chain in _chains(raised[row], open_[row], gap_hours):
            a, b = _best_span(chain, ck[row], cn[row], float(p0[row]))
            rows.append(row)
            starts.append(a)
            ends.append(b)
    if not rows:
        return pd.DataFrame(columns=RUN_COLUMNS)
    r, a, b = np.asarray(rows), np.asarray(starts), np.asarray(ends)
    k_run, n_run = ck[r, b] - ck[r, a], cn[r, b] - cn[r, a]
    p_value = sps.binom.sf(k_run - 1, n_run, p0[r])
    keep = (p_value < alpha) & (k_run >= min_errors) & (k_run >= min_ratio * p0[r] * n_run)
    out = keys[r[keep]].to_frame(index=False, name=list(INCIDENT_KEYS))
    out["start"] = pd.to_datetime(t0 + a[keep] * HOUR_S, unit="s", utc=True)
    out["end"] = pd.to_datetime(t0 + b[keep] * HOUR_S, unit="s", utc=True)
    out["hours"] = (b - a)[keep].astype(int)
    out["k"], out["n"], out["p0"], out["p_value"] = k_run[keep], n_run[keep], p0[r[keep]], p_value[keep]
    return to_nullable(out[RUN_COLUMNS].sort_values([*INCIDENT_KEYS, "start"], kind="stable").reset_index(drop=True))


def _chains(raised: np.ndarray, open_: np.ndarray, gap_hours: int) -> list[list[tuple[int, int]]]:
    """Stretches of raised hours (neutral hours inside kept, at the edges dropped), chained across at most
    `gap_hours` quiet used hours: each chain is a list of (start, end) hour spans."""
    edges = np.diff(np.concatenate([[0], open_.astype(int), [0]]))
    chains: list[list[tuple[int, int]]] = []
    last_end = None
    for lo, hi in zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0], strict=True):
        inside = np.nonzero(raised[lo:hi])[0]
        if not inside.size:
            continue
        span = (int(lo + inside[0]), int(lo + inside[-1] + 1))
        if last_end is not None and (~open_[last_end : span[0]]).sum() <= gap_hours:
            chains[-1].append(span)
        else:
            chains.append([span])
        last_end = span[1]
    return chains


def _best_span(chain: list[tuple[int, int]], ck: np.ndarray, cn: np.ndarray, p0: float) -> tuple[int, int]:
    """The sub-chain (from one stretch's start to a later one's end) with the highest binomial log-likelihood
    ratio against p0 (Kulldorff's scan statistic): chance raised hours at a chain's edges are left out."""
    best, best_llr = (chain[0][0], chain[-1][1]), -np.inf
    for i in range(len(chain)):
        for j in range(i, len(chain)):
            a, b = chain[i][0], chain[j][1]
            k, n = ck[b] - ck[a], cn[b] - cn[a]
            if n <= 0 or k <= p0 * n:
                continue
            llr = k * np.log(k / (n * p0)) + ((n - k) * np.log((n - k) / (n * (1 - p0))) if n > k else 0.0)
            if llr > best_llr:
                best, best_llr = (a, b), llr
    return best


def closing_successes(*, errors: pd.DataFrame, successes: pd.DataFrame) -> pd.DataFrame:
    """Per error, the first successful use of its touchpoint by its device after it: device_key, touchpoint, code,
    ts (errors whose touchpoint never worked again are left out).

    `errors`: device_key, ts, touchpoint, code; `successes`: device_key, touchpoint, ts (at least each error's next
    successful use).
    """
    require_columns(errors, ["device_key", "ts", "touchpoint", "code"], what="closing_successes errors")
    require_columns(successes, ["device_key", "touchpoint", "ts"], what="closing_successes successes")
    cols = ["device_key", "touchpoint", "code", "ts"]
    if errors.empty or successes.empty:
        return pd.DataFrame(columns=cols)
    left = errors[["device_key", "touchpoint", "code"]].copy()
    left["t"] = pd.to_datetime(errors["ts"], utc=True)
    right = successes[["device_key", "touchpoint"]].copy()
    right["t"] = pd.to_datetime(successes["ts"], utc=True)
    right["ts"] = right["t"]
    for frame in (left, right):
        frame["device_key"] = frame["device_key"].astype("int64")
        frame["touchpoint"] = frame["touchpoint"].astype(str)
    merged = pd.merge_asof(
        left.sort_values("t"),
        right.sort_values("t"),
        on="t",
        by=["device_key", "touchpoint"],
        direction="forward",
        allow_exact_matches=False,
    )
    merged = merged[merged["ts"].notna()]
    return merged[cols].drop_duplicates().reset_index(drop=True)
