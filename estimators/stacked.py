"""Stacked difference-in-differences with the corrective weights of Wing, Freedman and
Hollingsworth (2024).

Cengiz, Dube, Lindner and Zipperer (2019, QJE) build one *sub-experiment* per adoption
cohort -- the cohort's units and the *clean controls* (units not treated within the
sub-experiment's event window), observed only inside the window -- stack them, and fit one
event-study regression with stack-specific unit and period effects. Wing, Freedman and
Hollingsworth (2024, NBER w32054, "Stacked difference-in-differences") show that the
unweighted stacked regression weights the sub-experiments by the variance of their
treatment indicator, not by their share of the treated, and give sample weights (their
``Q`` weights) under which the stacked regression estimates the *trimmed aggregate ATT*:
the average effect at each event time over the treated units of the sub-experiments that
fit in the window. Their R code (github.com/hollina/stacked-did-weights,
``create_sub_exp`` / ``compute_weights``) is what this module reproduces; the tests pin it
to fixest fitted with their weights on R did's ``mpdta``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .design import FEArrays, codes_of, period_positions
from .panel import (COHORT, D, TIME, UNIT, EstimationError, OptionError, PanelError, check_choice,
                    check_count, check_panel, excluding_always_treated)
from .regression import InferenceOptions, fit_fe
from .result import Estimate, critical_value, p_value

#: clean controls of a sub-experiment: never-treated units only, or also units first
#: treated after the window's last period (WFH's ``create_sub_exp``; Cengiz et al.)
CONTROL_GROUPS = ("notyettreated", "nevertreated")
#: ``corrective``: WFH's Q weights (the trimmed aggregate ATT); ``none``: the unweighted
#: stack of Cengiz et al. (a variance-weighted average of the sub-experiments' effects)
WEIGHTINGS = ("corrective", "none")
#: covariance conventions the stacked regression supports (those of :func:`fit_fe`)
SE_TYPES = ("cluster", "robust", "conventional")


@dataclass(frozen=True)
class _StackArrays(FEArrays):
    """:class:`~estimators.design.FEArrays` of the stacked regression, whose two-way
    within transform (unit-by-stack and period-by-stack effects, weighted) is solved
    exactly by eliminating the unit block.

    The unit block of the normal equations is diagonal, and there are few period-by-stack
    cells, so the residual of ``z`` on both sets of dummies is ``z - a[unit] - c[cell]``
    with ``c`` from a cells-square Schur complement (the first cell of each stack set to 0:
    the unit-by-stack dummies span one cell per stack) and ``a`` the weighted unit means of
    ``z - c[cell]``. No dense dummy matrix, no iteration; the generic path
    (:func:`~estimators.fe.within_general`) gives the same residuals and a test pins the
    two together.
    """

    #: cells whose effect is set to 0 (the first of each stack: the unit-by-stack effects
    #: span one cell per stack), so that the Schur complement is nonsingular
    base_cells: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.intp))

    def within(self) -> tuple[np.ndarray, np.ndarray]:
        z = np.column_stack([self.y, self.x])
        n_u, n_c = self.n_units, self.n_periods
        w = np.ones(z.shape[0]) if self.weights is None else self.weights
        free = np.ones(n_c, dtype=bool)
        free[self.base_cells] = False
        wu = np.bincount(self.unit, weights=w, minlength=n_u)
        wc = np.bincount(self.time, weights=w, minlength=n_c)[free]
        cross = np.bincount(self.time * n_u + self.unit, weights=w,
                            minlength=n_c * n_u).reshape(n_c, n_u)[free]    # C'WD
        schur = np.diag(wc) - cross @ (cross.T / wu[:, None])
        wz = z * w[:, None]
        dz = np.column_stack([np.bincount(self.unit, weights=wz[:, j], minlength=n_u)
                              for j in range(z.shape[1])])
        cz = np.column_stack([np.bincount(self.time, weights=wz[:, j], minlength=n_c)
                              for j in range(z.shape[1])])[free]
        c = np.zeros((n_c, z.shape[1]))
        c[free] = np.linalg.solve(schur, cz - cross @ (dz / wu[:, None]))
        a = (dz - cross.T @ c[free]) / wu[:, None]
        zt = z - a[self.unit] - c[self.time]
        return zt[:, 0], zt[:, 1:]


@dataclass(frozen=True)
class _Stack:
    """The stacked data set, as row indices into the panel plus per-row stack labels."""

    rows: np.ndarray          # panel row of each stacked row
    stack: np.ndarray         # sub-experiment index (0..n_stacks-1) of each stacked row
    event: np.ndarray         # event time of each stacked row relative to its stack's cohort
    treat: np.ndarray         # bool: the row's unit is the stack's treated cohort
    cohorts: tuple[int, ...]  # cohort (first treated period) of each stack
    n_treated: tuple[int, ...]
    n_control: tuple[int, ...]
    infeasible: tuple[int, ...]   # cohorts whose window leaves the panel's periods (trimmed)
    no_control: tuple[int, ...]   # cohorts without any clean control in their window


@dataclass(frozen=True)
class StackedDID(InferenceOptions):
    """Stacked DID event study with Wing-Freedman-Hollingsworth corrective weights.

    For each adoption cohort ``g`` a sub-experiment holds the units first treated in ``g``
    and the clean controls, observed in the event window ``[g - pre, g + post]`` (counted in
    the panel's periods). The sub-experiments are stacked and one weighted regression is
    fitted::

        y_{s,i,t} = a_{s,i} + l_{s,t} + sum_{k != -1} b_k 1[treated_{s,i}] 1[t - g_s = k] + e

    with unit-by-stack and period-by-stack fixed effects. Under ``weighting="corrective"``
    treated rows weigh 1 and a control row of sub-experiment ``s`` at event time ``k``
    weighs ``(N^D_{s,k} / N^D_k) / (N^C_{s,k} / N^C_k)`` (WFH's Q weights: treated and
    control counts of the sub-experiment over those of the whole stack, per event time), so
    that ``b_k`` is the trimmed aggregate ATT at event time ``k``: the average over
    sub-experiments of their DID at ``k`` against ``-1``, weighted by their numbers of
    treated units. The headline ``ATT`` is the mean of ``b_0 .. b_post`` (WFH's average
    post-treatment effect) with the delta-method SE from the regression's covariance.

    Parameters
    ----------
    outcome
        Outcome column.
    controls
        Time-varying covariate columns beside the fixed effects (their coefficients are
        common to the stacks).
    pre, post
        Event window: ``pre`` periods before adoption (>= 1; -1 is the reference) and
        ``post`` periods from adoption on (>= 0). WFH's example uses 3 and 2.
    control_group
        ``"notyettreated"`` (default, WFH's ``create_sub_exp``): never-treated units and
        units first treated after the window's last period ``g + post``;
        ``"nevertreated"``: never-treated units only (a cohort first treated after the
        panel's last period counts as never treated).
    weighting
        ``"corrective"`` (default): WFH's Q weights. ``"none"``: the unweighted stacked
        regression of Cengiz et al., which weights sub-experiments by the variance of their
        treatment indicator; its coefficients are not the trimmed aggregate ATT.
    cluster, se, ssc, dist, alpha
        Inference, keyword only (:class:`~estimators.regression.InferenceOptions`). The
        default clusters by the *original* unit -- a control unit appearing in several
        sub-experiments is one cluster -- with Stata's small-sample factor, as fixest's
        ``feols(..., cluster = ~unit)`` on the stacked data (unit-by-stack effects nest in
        the units and are not counted). ``se`` may be ``cluster``, ``robust`` or
        ``conventional``.

    Notes
    -----
    Trimming: a cohort whose window does not fit in the panel's periods (``g - pre``
    before the first period or ``g + post`` after the last) is dropped, as WFH's
    ``feasible`` flag does, so every remaining sub-experiment contributes to every event
    time (a compositionally balanced event study); so is a cohort without a clean control
    in its window. Both are named in the Estimate's notes; no sub-experiment left is an
    :class:`~estimators.panel.EstimationError`. Rows the panel lacks (an unbalanced panel)
    are simply missing from the stack; the weights are computed per event time from the
    rows present, as WFH's R ``compute_weights`` does.

    Identification: parallel trends between each cohort and its clean controls inside the
    window, no anticipation before ``-1``.
    """

    outcome: str
    controls: Sequence[str] = ()
    pre: int = 3
    post: int = 2
    control_group: str = "notyettreated"
    weighting: str = "corrective"
    label: str = "stacked"

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        self.check_inference()
        check_choice("se", self.se, SE_TYPES)
        check_count("pre", self.pre, 1)
        check_count("post", self.post, 0)
        check_choice("control_group", self.control_group, CONTROL_GROUPS)
        check_choice("weighting", self.weighting, WEIGHTINGS)
        controls = tuple(self.controls)
        if D in controls or self.outcome in controls:
            raise OptionError(f"controls {list(controls)} must not include {D!r} or the outcome")

    # --- the stack ------------------------------------------------------------------------

    def _stack(self, panel: pd.DataFrame) -> _Stack:
        """Sub-experiments of ``panel``: which rows, in which stack, at which event time.

        One vectorised mask per cohort builds the index arrays; no regression is fitted
        per stack.
        """
        grid = np.unique(panel[TIME].to_numpy()).astype(float)
        tpos = period_positions(panel[TIME].to_numpy(float), grid)
        cohort = panel[COHORT].to_numpy(float)
        last = float(grid.size - 1)
        cpos = np.full(cohort.shape, np.inf)   # never treated: after every window
        has = cohort > 0
        cpos[has] = period_positions(cohort[has], grid, what="cohort")
        # a cohort first treated after the last period is never treated in the data
        cpos[cpos > last] = np.inf
        rows_all, stack_all, event_all, treat_all = [], [], [], []
        cohorts, n_treated, n_control, infeasible, no_control = [], [], [], [], []
        unit = panel[UNIT].to_numpy()
        for g in np.unique(cohort[np.isfinite(cpos) & has]):
            gpos = float(cpos[cohort == g][0])
            lo, hi = gpos - self.pre, gpos + self.post
            if lo < 0 or hi > last:
                infeasible.append(int(g))
                continue
            window = (tpos >= lo) & (tpos <= hi)
            treated = cohort == g
            if self.control_group == "nevertreated":
                clean = np.isinf(cpos)
            else:
                clean = cpos > hi
            if not (clean & window).any():
                no_control.append(int(g))
                continue
            rows = np.flatnonzero((treated | clean) & window)
            rows_all.append(rows)
            stack_all.append(np.full(rows.size, len(cohorts)))
            event_all.append(tpos[rows] - gpos)
            treat_all.append(treated[rows])
            cohorts.append(int(g))
            n_treated.append(int(np.unique(unit[rows[treated[rows]]]).size))
            n_control.append(int(np.unique(unit[rows[~treated[rows]]]).size))
        if not cohorts:
            why = []
            if infeasible:
                why.append(f"cohort(s) {infeasible} have no full window [-{self.pre}, "
                           f"+{self.post}] inside the panel's periods")
            if no_control:
                why.append(f"cohort(s) {no_control} have no {self.control_group} clean control")
            raise EstimationError("no sub-experiment to stack: " + "; ".join(why)
                                  + "; shorten pre/post or use control_group='notyettreated'")
        return _Stack(np.concatenate(rows_all), np.concatenate(stack_all),
                      np.concatenate(event_all), np.concatenate(treat_all), tuple(cohorts),
                      tuple(n_treated), tuple(n_control), tuple(infeasible), tuple(no_control))

    def _weights(self, st: _Stack) -> np.ndarray:
        """WFH's Q weights (their R ``compute_weights``): 1 for treated rows; for a control
        row of stack s at event time k, (N^D_{s,k}/N^D_k) / (N^C_{s,k}/N^C_k)."""
        n_stacks = len(st.cohorts)
        ecode, n_e = codes_of(st.event)
        cell = st.stack * n_e + ecode
        t = st.treat.astype(float)
        nd_e = np.bincount(ecode, weights=t, minlength=n_e)
        nc_e = np.bincount(ecode, weights=1 - t, minlength=n_e)
        nd_se = np.bincount(cell, weights=t, minlength=n_stacks * n_e)
        nc_se = np.bincount(cell, weights=1 - t, minlength=n_stacks * n_e)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = (nd_se[cell] / nd_e[ecode]) / (nc_se[cell] / nc_e[ecode])
        # a control row in a cell without treated rows weighs 0 (it identifies nothing)
        return np.where(st.treat, 1.0, np.nan_to_num(q, nan=0.0, posinf=0.0))

    # --- fit ------------------------------------------------------------------------------

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Build the stack, fit the weighted stacked event study; ``rng`` is not used."""
        self.check()
        controls = tuple(self.controls)
        _, unit_codes, _, arrays = check_panel(panel, (self.outcome,), controls)
        cluster = self.cluster_column
        if cluster is not None and cluster not in panel.columns:
            raise PanelError(f"cluster column {cluster!r} is not in the panel; columns: "
                             f"{list(panel.columns)[:20]}")
        st = self._stack(panel)
        w = self._weights(st) if self.weighting == "corrective" else None
        keep = np.ones(st.rows.size, dtype=bool) if w is None else w > 0
        rows, stack, event, treat = st.rows[keep], st.stack[keep], st.event[keep], st.treat[keep]
        w = None if w is None else w[keep]
        n_stacks = len(st.cohorts)
        # stack-specific fixed effects: unit x stack, and period x stack (within a stack a
        # period is its event time)
        ucode, n_su = codes_of(stack * (int(unit_codes.max()) + 1) + unit_codes[rows])
        tcode, n_cells = codes_of(stack * (self.pre + self.post + 1)
                                  + (event + self.pre).astype(np.int64))
        if cluster is None:
            clusters, n_clusters = None, 0
        elif cluster == UNIT:
            clusters, n_clusters = codes_of(unit_codes[rows])
        else:
            clusters, n_clusters = codes_of(panel[cluster].to_numpy()[rows])
        events = [k for k in range(-self.pre, self.post + 1) if k != -1]
        names = [f"ev{k:+d}" for k in events]
        cols = [(treat & (event == k)).astype(float) for k in events]
        cols += [arrays[c][rows] for c in controls]
        x = np.column_stack(cols)
        y = arrays[self.outcome][rows]
        # the first cell of each stack is the base (cells are numbered stack by stack)
        cell_stack = np.empty(n_cells, dtype=np.intp)
        cell_stack[tcode] = stack
        first = np.r_[True, cell_stack[1:] != cell_stack[:-1]]
        fe = _StackArrays(y, x, tuple(names) + controls, ucode, tcode, n_su, n_cells, False,
                          clusters, n_clusters, w, n_stacks, base_cells=np.flatnonzero(first))
        res = fit_fe(fe, self.se, self.ssc, self.dist)
        keep_ev = res.fit.keep[:len(events)]
        post_names = [n for k, n, ok in zip(events, names, keep_ev) if k >= 0 and ok]
        if not post_names:
            raise EstimationError("no post-treatment event time is identified in the stack")
        ids = res.identified
        ev_ids = [n for n, ok in zip(names, keep_ev) if ok]
        idx = [ids.index(n) for n in ev_ids]
        wvec = np.zeros(len(ids))
        for n in post_names:
            wvec[ids.index(n)] = 1.0 / len(post_names)
        att = float(wvec @ res.fit.coef)
        att_se = float(np.sqrt(wvec @ res.cov @ wvec))
        crit = critical_value(self.alpha, res.df)
        reg_terms = res.terms(self.alpha)
        ev_time = np.r_[np.asarray(events, dtype=float), np.full(len(controls), np.nan)]
        reg_terms.insert(len(reg_terms.columns), "event_time", ev_time)
        stat = att / att_se if att_se > 0 else np.nan
        head = pd.DataFrame({"term": ["ATT"], "estimate": [att], "std_error": [att_se],
                             "statistic": [stat], "p_value": [p_value(stat, res.df)],
                             "conf_low": [att - crit * att_se],
                             "conf_high": [att + crit * att_se], "event_time": [np.nan]})
        terms = pd.concat([reg_terms, head], ignore_index=True)
        sub = ", ".join(f"{g} ({a} treated, {b} controls)"
                        for g, a, b in zip(st.cohorts, st.n_treated, st.n_control))
        notes = [f"sub-experiments (cohort: units) in window [-{self.pre}, +{self.post}]: {sub}"]
        if st.infeasible:
            notes.append(f"cohort(s) {list(st.infeasible)} trimmed: their window "
                         f"[-{self.pre}, +{self.post}] leaves the panel's periods")
        if st.no_control:
            notes.append(f"cohort(s) {list(st.no_control)} dropped: no {self.control_group} "
                         "clean control in their window")
        missing = [n for n, ok in zip(names, keep_ev) if not ok]
        if missing:
            notes.append(f"event-time terms {missing} not identified")
        cov = res.cov[np.ix_(idx, idx)]
        weighting = "WFH corrective weights" if self.weighting == "corrective" else "unweighted"
        return Estimate(
            estimator=self.label, term="ATT", estimate=att, std_error=att_se,
            p_value=float(p_value(stat, res.df)), conf_low=att - crit * att_se,
            conf_high=att + crit * att_se, alpha=self.alpha, n_obs=res.dof.n_obs,
            n_units=int(np.unique(unit_codes[rows]).size), n_clusters=res.dof.n_clusters,
            inference=self.describe_inference(res.df) + f", {weighting}",
            terms=terms,
            diagnostics={"n_stacks": float(n_stacks), "n_stacked_obs": float(rows.size),
                         "r2_within": res.r2_within},
            notes=tuple(notes),
            event_cov=pd.DataFrame(cov, index=ev_ids, columns=ev_ids),
        )

    # --- truth ----------------------------------------------------------------------------

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True values on a simulated panel: the trimmed aggregate ATT.

        ``ev+k``: the mean effect ``te_<outcome>`` over the treated rows of the stacked
        sub-experiments at event time ``k``, minus the same at ``-1`` (zero without
        anticipation); each treated unit counts once, so sub-experiments weigh by their
        numbers of treated units. ``ATT``: the mean of ``ev+0 .. ev+post``.
        """
        self.check()
        st = self._stack(panel)
        te = panel[f"te_{self.outcome}"].to_numpy(float)[st.rows[st.treat]]
        ev = st.event[st.treat]
        base = te[ev == -1].mean() if (ev == -1).any() else 0.0
        out = {f"ev{k:+d}": float(te[ev == k].mean() - base)
               for k in range(-self.pre, self.post + 1) if k != -1 and (ev == k).any()}
        post = [out[f"ev{k:+d}"] for k in range(self.post + 1) if f"ev{k:+d}" in out]
        out["ATT"] = float(np.mean(post)) if post else float("nan")
        return out


__all__ = ["StackedDID", "CONTROL_GROUPS", "WEIGHTINGS"]
