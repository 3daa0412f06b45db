"""Heterogeneity analysis (seed 001): treatment effects by subgroup, a test of equality
across subgroups, Holm-adjusted tests of each subgroup's effect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import special

from .design import fe_arrays
from .panel import excluding_always_treated, D, UNIT, EstimationError, OptionError, PanelError, check_panel
from .result import Estimate, critical_value, p_value, terms_frame
from .regression import InferenceOptions, fit_fe


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values."""
    p = np.asarray(p, dtype=float)
    order = np.argsort(p)
    m = p.size
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


@dataclass(frozen=True)
class Heterogeneity(InferenceOptions):
    """Effects by subgroup from one two-way fixed-effects regression.

    ``y_it = a_i + l_t + sum_k tau_k d_it 1[g_i = k] + x_it'b + e_it`` for a unit-level
    attribute ``by`` (region developed or not, resource-based, old industrial base...).
    The equality test is the cluster-robust Wald test of ``tau_1 = ... = tau_K`` (F with
    K - 1 and G - 1 degrees of freedom under ``dist="t"``, as Stata's ``test``); each
    group's own test is reported with Holm-adjusted p-values, since cutting many groups
    multiplies false discoveries. The headline is the gap between the last and the first
    group (levels sorted). The inference options ``cluster``, ``se``, ``ssc``, ``dist`` and
    ``alpha`` are keyword only (:class:`~estimators.regression.InferenceOptions`).
    """

    outcome: str
    by: str = "developed"
    controls: Sequence[str] = ()
    label: str = "heterogeneity"

    def _groups(self, panel: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        if self.by not in panel.columns:
            raise PanelError(f"heterogeneity column {self.by!r} is not in the panel; "
                             f"columns: {list(panel.columns)[:20]}")
        per_unit = panel.groupby(UNIT)[self.by].nunique()
        if (per_unit > 1).any():
            raise PanelError(f"column {self.by!r} must be constant within each unit "
                             f"(unit {per_unit.index[per_unit > 1][0]!r} changes)")
        values = panel[self.by].to_numpy()
        levels = np.unique(values)
        treated_levels = np.unique(values[panel[D].to_numpy() == 1])
        if treated_levels.size < 2:
            raise EstimationError(f"treated units fall in {treated_levels.size} group(s) of "
                                  f"{self.by!r}; heterogeneity needs at least two")
        return values, levels[np.isin(levels, treated_levels)]

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        self.check_inference()
        if not isinstance(self.by, str) or not self.by:
            raise OptionError(f"by={self.by!r} must name a unit-level column")
        if self.outcome in tuple(self.controls) or self.by in tuple(self.controls):
            raise OptionError(f"controls {list(self.controls)} must not include the outcome "
                              f"or the split column {self.by!r}")

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Estimate the effects by subgroup; ``rng`` is not used."""
        self.check()
        cluster = self.cluster_column
        _, unit, time, arrays = check_panel(panel, (self.outcome,), tuple(self.controls))
        values, levels = self._groups(panel)
        d = arrays[D]
        extra = {f"d:{self.by}={lv}": d * (values == lv) for lv in levels}
        fe = fe_arrays(panel, self.outcome, tuple(self.controls), cluster=cluster, extra=extra,
                       validate=False, checked=(unit, time, arrays), extra_first=True)
        res = fit_fe(fe, self.se, self.ssc, self.dist)
        names = list(extra)
        ids = res.identified
        if not all(n in ids for n in names):
            raise EstimationError("a subgroup's effect is not identified")
        idx = [ids.index(n) for n in names]
        tau = res.fit.coef[idx]
        cov = res.cov[np.ix_(idx, idx)]
        se = np.sqrt(np.diag(cov))
        k = len(names)
        # equality: R tau = 0 with R the successive differences
        R = np.zeros((k - 1, k))
        for j in range(k - 1):
            R[j, j], R[j, j + 1] = -1.0, 1.0
        diff = R @ tau
        wald = float(diff @ np.linalg.solve(R @ cov @ R.T, diff)) / (k - 1)
        p_eq = (float(special.fdtrc(k - 1, res.df, wald)) if res.df is not None
                else float(special.chdtrc(k - 1, wald * (k - 1))))
        w = np.zeros(k)
        w[0], w[-1] = -1.0, 1.0
        gap, gap_se = float(w @ tau), float(np.sqrt(w @ cov @ w))
        crit = critical_value(self.alpha, res.df)
        terms = terms_frame(names, tau, se, self.alpha, res.df, group=[str(v) for v in levels])
        terms["p_holm"] = holm(terms["p_value"].to_numpy())
        gap_p = float(p_value(gap / gap_se, res.df))
        return Estimate(
            estimator=self.label, term="gap", estimate=gap, std_error=gap_se, p_value=gap_p,
            conf_low=gap - crit * gap_se, conf_high=gap + crit * gap_se, alpha=self.alpha,
            n_obs=res.dof.n_obs, n_units=res.dof.n_units, n_clusters=res.dof.n_clusters,
            inference=self.describe_inference(res.df),
            terms=terms,
            diagnostics={"equality_F": wald, "equality_p": p_eq, "n_groups": float(k)},
            notes=(f"gap = effect in {self.by}={levels[-1]} minus effect in {self.by}={levels[0]}",),
        )

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True effect of each group and the gap (mean unit-period effect over treated cells)."""
        values, levels = self._groups(panel)
        te = panel[f"te_{self.outcome}"].to_numpy()
        d = panel[D].to_numpy() == 1
        out = {f"d:{self.by}={lv}": float(te[d & (values == lv)].mean()) for lv in levels}
        out["gap"] = out[f"d:{self.by}={levels[-1]}"] - out[f"d:{self.by}={levels[0]}"]
        return out
