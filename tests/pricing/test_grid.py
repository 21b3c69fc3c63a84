"""Rows of a metric query placed on the keys × months grid (pure: no database)."""

from __future__ import annotations

from datetime import date

import numpy as np

from cxp.pricing.metrics import _grid

JAN, FEB, MAR = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)


def test_rows_land_on_their_cells_and_the_rest_is_zero():
    rows = [("b", FEB, 7, None), ("a", JAN, 1, 2), ("zz", JAN, 99, 99), ("a", MAR, 5, 5)]
    grid = _grid(rows, ["a", "b"], [JAN, FEB])
    assert grid.keys == ("a", "b")
    assert grid.column(0).tolist() == [[1, 0], [0, 7]]  # the unknown key and the month outside are left out
    assert grid.column(1).tolist() == [[2, 0], [0, 0]]  # NULL is 0, as no row is
    assert grid.column(0).dtype == np.int64


def test_without_keys_the_grid_holds_the_rows_keys_sorted():
    grid = _grid([("b", JAN, 3), ("a", FEB, 4)], None, [JAN, FEB])
    assert grid.keys == ("a", "b") and grid.column(0).tolist() == [[0, 4], [3, 0]]


def test_no_rows_give_an_all_zero_grid():
    grid = _grid([], ["a"], [JAN, FEB, MAR])
    assert grid.column(0).tolist() == [[0, 0, 0]]
