"""Stated importance × quality per touchpoint, from an importance–performance questionnaire (touchpoint_survey)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from cxp.store.errors import mapped_errors


@dataclass(frozen=True)
class SurveyRow:
    """One touchpoint's stated importance and quality (means over `respondents`, on [scale_min, scale_max])."""

    product_id: str
    touchpoint: str
    importance: float
    quality: float
    respondents: int
    scale_min: float
    scale_max: float


def replace_survey(conn: psycopg.Connection, *, rows: Iterable[SurveyRow]) -> int:
    """Store the rows; each product present in them has its earlier table replaced as a whole. Returns rows stored."""
    values = list(rows)
    with mapped_errors(), conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "DELETE FROM touchpoint_survey WHERE product_id = ANY(%s)", (sorted({r.product_id for r in values}),)
        )
        cur.executemany(
            "INSERT INTO touchpoint_survey (product_id, touchpoint, importance, quality, respondents, scale_min,"
            " scale_max) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [
                (r.product_id, r.touchpoint, r.importance, r.quality, r.respondents, r.scale_min, r.scale_max)
                for r in values
            ],
        )
    return len(values)


def list_survey(conn: psycopg.Connection, *, product: str | None = None) -> list[SurveyRow]:
    """The stored rows (of one product, or all), ordered by product and touchpoint."""
    with mapped_errors():
        rows = conn.execute(
            "SELECT product_id, touchpoint, importance, quality, respondents, scale_min, scale_max"
            " FROM touchpoint_survey WHERE %(p)s::text IS NULL OR product_id = %(p)s ORDER BY 1, 2",
            {"p": product},
        ).fetchall()
    return [SurveyRow(*r) for r in rows]
