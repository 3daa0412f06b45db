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
    key = unit * t + time
    order = np.argsort(key, kind="stable")

    def mat(v: np.ndarray) -> np.ndarray:
        return v[order].reshape(n, t)

    units = np.unique(panel[UNIT].to_numpy())
    periods = np.unique(arrays[TIME]).astype(np.int64)
    cohort = mat(arrays[COHORT])[:, 0].astype(np.int64)
    return Wide(units, periods, cohort, mat(arrays[outcome]),
                {c: mat(arrays[c]) for c in covariates})
