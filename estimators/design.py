"""From a validated panel to the arrays the fixed-effects kernels use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .fe import Dof, use_fast, within_balanced, within_general
from .panel import COHORT, D, TIME, UNIT, EstimationError, PanelError, _codes, check_panel


@dataclass(frozen=True)
class FEArrays:
    """A panel's outcome, regressors and index codes, ready for the within transform.

    Rows are in the panel's order unless the panel was balanced and unsorted, in which case
    they are sorted unit-major (``order`` maps back).
    """

    y: np.ndarray
    x: np.ndarray
    names: tuple[str, ...]
    unit: np.ndarray
    time: np.ndarray
    n_units: int
    n_periods: int
    balanced: bool
    clusters: np.ndarray | None
    n_clusters: int
    weights: np.ndarray | None
    n_time_groups: int = 1   # group-by-period effects: periods are (group, period) cells

    def within(self) -> tuple[np.ndarray, np.ndarray]:
        """Residualise outcome and regressors on unit and period effects."""
        if use_fast(self.y.shape[0]):  # no stacked copy: outcome and regressors apart
            if self.balanced and self.weights is None:
                return (within_balanced(self.y[:, None], self.n_units, self.n_periods)[:, 0],
                        within_balanced(self.x, self.n_units, self.n_periods))
            return (within_general(self.y[:, None], self.unit, self.time, self.n_units,
                                   self.n_periods, self.weights)[:, 0],
                    within_general(self.x, self.unit, self.time, self.n_units,
                                   self.n_periods, self.weights))
        z = np.column_stack([self.y, self.x])
        if self.balanced and self.weights is None:
            zt = within_balanced(z, self.n_units, self.n_periods)
        else:
            zt = within_general(z, self.unit, self.time, self.n_units, self.n_periods, self.weights)
        return zt[:, 0], zt[:, 1:]

    def dof(self, k: int) -> Dof:
        unit_nested = time_nested = False
        if self.clusters is self.unit:
            unit_nested = True
            time_nested = self.n_periods == 1
        elif self.clusters is not None:
            unit_nested = _nested(self.unit, self.clusters, self.n_units)
            time_nested = _nested(self.time, self.clusters, self.n_periods)
        return Dof(
            n_obs=self.y.shape[0],
            k=k,
            n_units=self.n_units,
            n_periods=self.n_periods,
            n_clusters=self.n_clusters,
            unit_nested=unit_nested,
            time_nested=time_nested,
            n_time_groups=self.n_time_groups,
        )


def _nested(codes: np.ndarray, clusters: np.ndarray, n_codes: int) -> bool:
    """True if every level of ``codes`` lies inside a single cluster."""
    first = np.empty(n_codes, dtype=clusters.dtype)
    first[codes] = clusters
    return bool(np.array_equal(first[codes], clusters))


def codes_of(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer codes 0..n-1 of a column (sorted levels)."""
    return _codes(np.asarray(values))


def fe_arrays(
    panel: pd.DataFrame,
    outcome: str,
    regressors: Sequence[str],
    *,
    cluster: str | None = UNIT,
    weights: str | None = None,
    extra: dict[str, np.ndarray] | None = None,
    validate: bool = True,
    checked: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]] | None = None,
    time_by: str | None = None,
    extra_first: bool = False,
    extra_matrix: tuple[Sequence[str], np.ndarray] | None = None,
) -> FEArrays:
    """Pull the arrays of a fixed-effects regression out of a panel.

    ``extra`` supplies regressors computed by the caller (event-time dummies), appended after
    the panel columns named in ``regressors``. ``extra_matrix`` = ``(names, matrix)`` does
    the same with the columns already in one ``(N, k)`` array (used instead of ``extra``;
    with no other regressor the matrix itself becomes ``x``, no copy: the 1,000,000-row
    path). ``checked`` passes on the unit codes, time codes and arrays of a
    :func:`check_panel` call the caller already made on this panel.
    """
    if extra_matrix is not None and extra:
        raise ValueError("give extra or extra_matrix, not both")
    if checked is not None:
        unit, time, arrays = checked
        n_units, n_periods = int(unit.max()) + 1, int(time.max()) + 1
    elif validate:
        _, unit, time, arrays = check_panel(panel, outcomes=(outcome,), covariates=tuple(regressors))
        n_units, n_periods = int(unit.max()) + 1, int(time.max()) + 1
    else:
        unit, n_units = codes_of(panel[UNIT].to_numpy())
        time, n_periods = codes_of(panel[TIME].to_numpy())
        arrays = {}

    def column(name: str) -> np.ndarray:
        got = arrays.get(name)
        return got if got is not None else panel[name].to_numpy(dtype=float)

    if cluster is not None and cluster not in panel.columns:
        raise PanelError(
            f"cluster column {cluster!r} is not in the panel; columns: {list(panel.columns)[:20]}"
        )
    n = len(panel)
    balanced = n == n_units * n_periods
    n_time_groups = 1
    if time_by is not None:
        if time_by not in panel.columns:
            raise PanelError(f"time_by column {time_by!r} is not in the panel")
        g, n_time_groups = codes_of(panel[time_by].to_numpy())
        first = np.empty(n_units, dtype=g.dtype)
        first[unit] = g
        if not np.array_equal(first[unit], g):
            raise PanelError(f"time_by column {time_by!r} must be constant within each unit")
        time, n_periods = codes_of(g * n_periods + time)
        balanced = False  # the closed-form two-way transform does not apply
    cols = [column(c) for c in regressors]
    names = list(regressors)
    if extra_matrix is not None:
        mnames, mat = list(extra_matrix[0]), np.asarray(extra_matrix[1], dtype=float)
        if mat.ndim != 2 or mat.shape != (n, len(mnames)):
            raise ValueError(f"extra_matrix has shape {mat.shape}, expected ({n}, {len(mnames)})")
        if not cols:
            x, names = mat, mnames
        else:
            x = np.empty((n, mat.shape[1] + len(cols)))
            own = slice(mat.shape[1], None) if extra_first else slice(0, len(cols))
            at = slice(0, mat.shape[1]) if extra_first else slice(len(cols), None)
            x[:, at] = mat
            x[:, own] = np.column_stack(cols)
            names = mnames + names if extra_first else names + mnames
    elif extra:
        extra_cols = [np.asarray(v, dtype=float) for v in extra.values()]
        if extra_first:
            cols, names = extra_cols + cols, list(extra.keys()) + names
        else:
            cols.extend(extra_cols)
            names.extend(extra.keys())
    if extra_matrix is None:
        x = np.column_stack(cols) if cols else np.empty((n, 0))
    y = column(outcome)
    if cluster is None:
        clusters, n_clusters = None, 0
    elif cluster == UNIT:
        clusters, n_clusters = unit, n_units
    else:
        clusters, n_clusters = codes_of(panel[cluster].to_numpy())
    w = None
    if weights is not None:
        if weights not in panel.columns:
            raise PanelError(f"weights column {weights!r} is not in the panel")
        w = panel[weights].to_numpy(dtype=float)
        if (w < 0).any() or not np.isfinite(w).all():
            raise PanelError(f"weights column {weights!r} must be finite and non-negative")
        keep = w > 0
        if not keep.all():  # zero-weight rows carry no information; drop them so counts are honest
            return fe_arrays(
                panel.loc[keep], outcome, regressors, cluster=cluster, weights=weights,
                extra={k: np.asarray(v)[keep] for k, v in (extra or {}).items()}, validate=False,
                time_by=time_by, extra_first=extra_first,
                extra_matrix=(None if extra_matrix is None
                              else (extra_matrix[0], np.asarray(extra_matrix[1])[keep])),
            )
    if balanced and w is None:
        key = unit * n_periods + time
        if not np.all(key[1:] > key[:-1]):
            order = np.argsort(key, kind="stable")
            y, x, unit, time = y[order], x[order], unit[order], time[order]
            if cluster == UNIT:
                clusters = unit  # identity lets Dof see at once that units nest in clusters
            elif clusters is not None:
                clusters = clusters[order]
    return FEArrays(y, x, tuple(names), unit, time, n_units, n_periods, balanced,
                    clusters, n_clusters, w, n_time_groups)


def event_time(panel: pd.DataFrame, times: np.ndarray | None = None) -> np.ndarray:
    """Periods since treatment, counted in the panel's periods; NaN for never-treated units.

    With consecutive years this is ``time - cohort``. With a regular step (biennial
    surveys: 2004, 2006, ...) it is ``(time - cohort) / step``, so event time -1 is the
    period before treatment, not a calendar year that has no rows. With irregular gaps it
    is the difference of the periods' positions. A cohort that does not fall on the panel's
    periods (treated in 2011 in a biennial panel observed in 2010 and 2012) has no
    well-defined event time and is refused.

    Parameters
    ----------
    panel
        Canonical panel (``time``, ``cohort``).
    times
        The panel's periods, when ``panel`` is a subset of the rows (default: its own).
    """
    cohort = panel[COHORT].to_numpy(dtype=float)
    t = panel[TIME].to_numpy(dtype=float)
    grid = np.unique(panel[TIME].to_numpy() if times is None else np.asarray(times)).astype(float)
    treated = cohort > 0
    rel = np.full(t.shape, np.nan)
    rel[treated] = (period_positions(t[treated], grid)
                    - period_positions(cohort[treated], grid, what="cohort"))
    return rel


def period_positions(values: np.ndarray, grid: np.ndarray, what: str = "period") -> np.ndarray:
    """Positions of ``values`` on the panel's periods ``grid`` (0 = first period).

    A regular grid (consecutive years, or every ``step`` years) extends beyond its ends, so a
    cohort treated after the last period or before the first has a position; on an
    irregular grid only observed periods (and cohorts before the first, counted from it)
    do. A value that falls between periods is refused: its event time is undefined.
    """
    values = np.asarray(values, dtype=float)
    grid = np.asarray(grid, dtype=float)
    steps = np.diff(grid)
    if steps.size == 0 or np.all(steps == steps[0]):
        step = steps[0] if steps.size else 1.0
        pos = (values - grid[0]) / step
        off = pos != np.round(pos)
        if off.any():
            raise EstimationError(
                f"{what} {values[off][0]:g} does not fall on the panel's periods (every "
                f"{step:g} from {grid[0]:g}): event time is undefined; give the first treated "
                "period the panel observes")
        return pos
    position = {v: float(i) for i, v in enumerate(grid)}
    missing = [v for v in values if v not in position and v >= grid[0]]
    if missing:
        raise EstimationError(
            f"{what} {missing[0]:g} is not one of the panel's periods, which are irregular "
            f"({', '.join(f'{v:g}' for v in grid[:6])}{' ...' if grid.size > 6 else ''}): "
            "event time is undefined; give the first treated period the panel observes")
    return np.array([position.get(v, 0.0) for v in values])


__all__ = ["FEArrays", "fe_arrays", "codes_of", "event_time", "period_positions", "D"]
