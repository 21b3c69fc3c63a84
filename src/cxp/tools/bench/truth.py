"""Recovery of the planted experience truth per seed (`cxp bench truth`): incidents, touchpoint classes and
importance, churn early warning by lead time, the recovery paradox — the figures docs/analytics.md records.

Each seed's fleet (300 devices × 42 days, brew-c3/descale made to fail, 4 incidents; the recovery paradox planted
on seeds in --paradox-seeds) is loaded once into its own database `cxp_bench_truth<seed>` (`--db-prefix`),
reloaded when the simulator or store code changed; the test suite's truth fleets carry the same fingerprint, so
`--db-prefix cxp_test_truth` measures those without loading.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def fleet_params(seed: int, *, paradox: bool) -> dict[str, Any]:
    """The truth fleet of a seed (the same as tests/fixtures/fleet.py's truth fleets)."""
    return {
        "seed": seed,
        "devices": 300,
        "start": datetime(2025, 3, 3, tzinfo=UTC),
        "days": 42,
        "error_prone": ("brew-c3", "descale"),
        "incidents": 4,
        "recovery_paradox": paradox,
    }


def _fingerprint(params: dict[str, Any]) -> str:
    from cxp import device_sim, store

    digest = hashlib.sha256(json.dumps(params, default=str, sort_keys=True).encode())
    for package in (device_sim, store):
        for path in sorted(
            [*Path(package.__file__).parent.rglob("*.py"), *Path(package.__file__).parent.rglob("*.sql")]
        ):
            digest.update(path.read_bytes())
    return "cxp-fleet " + digest.hexdigest()[:16]  # the fingerprint the test fixtures write: loads are shared


def _ensure(conn: Any, params: dict[str, Any], out: Any) -> None:
    from psycopg import sql

    from cxp.store.admin import truncate_data
    from cxp.tools.fleet import load_fleet

    name = conn.execute("SELECT current_database()").fetchone()[0]
    stored = conn.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()"
    ).fetchone()[0]
    if stored == _fingerprint(params):
        return
    out(f"  loading seed {params['seed']} into {name} …")
    truncate_data(conn)
    load_fleet(conn, fleet_params=params, workers=1)
    conn.execute("ANALYZE")
    conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(_fingerprint(params)))
    )


def seed_figures(conn: Any, params: dict[str, Any]) -> dict[str, str]:
    """The recovery figures of one loaded truth fleet, as printable lines."""
    from scipy import stats as sps

    from cxp.analytics import service
    from cxp.analytics.query import AnalyticsQuery
    from cxp.device_sim import build_fleet
    from cxp.tools.truth import (
        auc_with_ci,
        churn_truth,
        churned_within,
        match_incidents,
        planted_incidents,
        still_active,
    )

    fleet = build_fleet(**params)
    lines: dict[str, str] = {}
    report = service.get_disruptions(conn=conn, days=10_000)
    incidents = pd.DataFrame(fleet.incident_truth()).rename(
        columns={"product": "product_id", "start": "start_at", "end": "end_at"}
    )
    table = match_incidents(planted_incidents(conn, incidents), report.incidents)
    findable = table[table["devices_hit"] >= 3]
    found = findable[findable["found"] >= 0]
    true = int((table["found"] >= 0).sum())
    error = (found["recovery_s"] - found["duration_s"]).abs()
    rec = next(r for r in report.recovery if r.scope == "all episodes")
    lines["incidents"] = (
        f"planted {len(table)} (≥ 3 devices hit: {len(findable)}), found {len(found)}, detected {len(report.incidents)}"
        f" (precision {true / max(len(report.incidents), 1):.2f}); start error ≤"
        f" {found['start_error_s'].abs().max() / 60:.0f} min; recovery time error ≤ {error.max() / 60:.0f} min;"
        f" never recovered {rec.never_recovered} of {rec.episodes} episodes"
    )
    tp = service.get_touchpoints(conn=conn, days=10_000)
    truth = pd.DataFrame(
        conn.execute(
            "SELECT product_id, touchpoint, kano_class, fail_penalty + success_reward FROM sim_touchpoint_truth"
        ).fetchall(),
        columns=["product_id", "touchpoint", "planted", "planted_importance"],
    )
    rows = pd.DataFrame([t.__dict__ for t in tp.touchpoints]).merge(truth, on=["product_id", "touchpoint"])
    classified = rows[rows["classification"].notna()]
    derived = rows[rows["spread"].notna()]
    rho = sps.spearmanr(derived["spread"].astype(float), derived["planted_importance"].astype(float)).statistic
    descale = rows[(rows["product_id"] == "brew-c3") & (rows["touchpoint"] == "descale")].iloc[0]
    lines["classes"] = (
        f"{len(classified)} classified, {(classified['classification'] == classified['planted']).mean():.0%} right;"
        f" Spearman {rho:.2f} over {len(derived)}; brew-c3/descale {descale['quadrant']}"
        f" (importance {descale['importance']:.2f})"
    )
    truth = churn_truth(conn)
    aucs: dict[str, list[list[tuple[float, float, float]]]] = {"fitted": [], "weighted": []}
    for days in (14, 21, 28):
        as_of = (params["start"] + timedelta(days=days)).date()
        cut = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)
        ids = list(still_active(truth, cut).index)
        for score in aucs:
            ranking = service.list_churn_risk(conn=conn, query=AnalyticsQuery(end=as_of), score=score)
            scores = pd.Series({e.entity_id: e.risk_score for e in ranking.entries})
            aucs[score].append(
                [auc_with_ci(churned_within(truth, ids, cut, lead), scores[ids].to_numpy()) for lead in (7, 14, 28)]
            )
    for score, table in aucs.items():
        lines[f"churn AUC 7/14/28 d ({score})"] = (
            "; ".join(
                f"as of day {d}: " + " / ".join(f"{a:.2f} [{lo:.2f}, {hi:.2f}]" for a, lo, hi in row)
                for d, row in zip((14, 21, 28), table, strict=True)
            )
            + "; mean "
            + " / ".join(f"{m:.2f}" for m in np.mean([[a for a, _, _ in row] for row in table], axis=0))
        )
    csat = next((p for p in report.paradox if p.metric == "csat"), None)
    lines["paradox"] = f"planted {params['recovery_paradox']}: {report.recovery_paradox}" + (
        f", CSAT {csat.difference:+.2f} [{csat.ci_low:+.2f}, {csat.ci_high:+.2f}]"
        if csat is not None and csat.difference is not None
        else ""
    )
    return lines


FIT_DAYS = range(10, 33)  # as-of days of the training fleet: 14-day outcomes all inside its 42 days


def fit_model(conn: Any, params: dict[str, Any], *, lead_days: int = 14) -> Any:
    """Fit the churn model (core churn_model) on one truth fleet: the inputs of the devices still active as of
    each day in FIT_DAYS, labelled churned within `lead_days` (as lived)."""
    from cxp.analytics import service
    from cxp.analytics.core.churn_model import fit_churn_model
    from cxp.analytics.query import AnalyticsQuery
    from cxp.tools.truth import churn_truth, churned_within, still_active

    truth = churn_truth(conn)
    frames, labels = [], []
    for days in FIT_DAYS:
        as_of = (params["start"] + timedelta(days=days)).date()
        cut = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)
        inputs = service.get_churn_model_inputs(conn=conn, query=AnalyticsQuery(end=as_of)).set_index("entity_id")
        ids = [i for i in still_active(truth, cut).index if i in inputs.index]
        frames.append(inputs.loc[ids].reset_index())
        labels.append(churned_within(truth, ids, cut, lead_days))
    return fit_churn_model(
        inputs=pd.concat(frames, ignore_index=True),
        churned=np.concatenate(labels),
        lead_days=lead_days,
        trained_on=f"truth fleet seed {params['seed']}, as-of days {FIT_DAYS.start}-{FIT_DAYS.stop - 1}",
    )


def main(argv: list[str] | None = None) -> None:
    """Load (once) and measure each seed's truth fleet."""
    from cxp.core.config import Settings
    from cxp.stack import start_stack
    from cxp.store.db import connect
    from cxp.store.migrate import apply_migrations

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--paradox-seeds", type=int, nargs="*", default=[1, 3])
    parser.add_argument(
        "--db-prefix",
        default="cxp_bench_truth",
        help="database name prefix (+ seed); cxp_test_truth reuses the test suite's truth fleets",
    )
    parser.add_argument(
        "--fit-seed",
        type=int,
        default=None,
        help="fit the churn model on this seed's fleet (use a seed outside --seeds) and print it for DEFAULT_MODEL",
    )
    args = parser.parse_args(argv)
    env = Settings()
    for seed in args.seeds if args.fit_seed is None else [args.fit_seed]:
        settings = env.model_copy(update={"db": env.db.model_copy(update={"name": f"{args.db_prefix}{seed}"})})
        start_stack(settings)
        params = fleet_params(seed, paradox=seed in args.paradox_seeds)
        with connect(settings.db, autocommit=True) as conn:
            apply_migrations(conn)
            _ensure(conn, params, lambda line: print(line, flush=True))
            if args.fit_seed is not None:
                print(repr(fit_model(conn, params)), flush=True)
                continue
            print(f"seed {seed}: 300 devices × 42 days, brew-c3/descale failing, paradox {params['recovery_paradox']}")
            for key, value in seed_figures(conn, params).items():
                print(f"  {key}: {value}", flush=True)


if __name__ == "__main__":
    main()
