"""Balanced panels as unit x period matrices (what the staggered estimators work on)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .panel import COHORT, TIME, UNIT, PanelError, check_panel


@dataclass(frozen=True)
class Wide:
    """A balanced panel in matrix form: rows are units (sorted), columns periods (sorted)."""

    units: np.ndarray          # (n,)
    periods: np.ndarray        # (T,)
    cohort: np.ndarray         # (n,) first treated period, 0 = never
    y: np.ndarray              # (n, T)
    x: dict[str, np.ndarray]   # covariate -> (n, T)

    @property
    def n(self) -> int:
        return self.units.size


def to_wide(panel: pd.DataFrame, outcome: str, covariates: Sequence[str] = (),
            who: str = "this estimator") -> Wide:
    """Validate ``panel`` and reshape it to matrices; unbalanced panels are refused with a
    clear error (these estimators are implemented for balanced panels)."""
    info, unit, time, arrays = check_panel(panel, (outcome,), tuple(covariates))
    if not info.balanced:
        raise PanelError(
            f"{who} needs a balanced panel; this one has {info.n_obs} rows for "
            f"{info.n_units} units x {info.n_periods} periods (drop or complete units first)"
        )
    n, t = info.n_units, info.n_periods
    # balanced: the (unit, period) codes are a permutation of 0..n*t-1, so each column is
    # scattered to its cell in O(N) (no sort, no pandas pivot); the codes count the sorted
    # levels, so rows come out in sorted units and columns in sorted periods
    key = unit * t + time

    def mat(v: np.ndarray) -> np.ndarray:
        out = np.empty(n * t, dtype=v.dtype)
        out[key] = v
        return out.reshape(n, t)

    unit_raw = panel[UNIT].to_numpy()
    units = np.empty(n, dtype=unit_raw.dtype)
    units[unit] = unit_raw
    periods = np.empty(t, dtype=np.int64)
    periods[time] = arrays[TIME]
    cohort = np.empty(n, dtype=np.int64)
    cohort[unit] = arrays[COHORT]  # constant within unit (checked by check_panel)
    return Wide(units, periods, cohort, mat(arrays[outcome]),
                {c: mat(arrays[c]) for c in covariates})
