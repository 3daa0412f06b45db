"""Synthetic control (Abadie, Diamond and Hainmueller 2010; Abadie 2021), one synthetic
control per treated unit on its own adoption date, with in-space placebo inference.

Shared with :mod:`estimators.sdid`: the wide panel split into cohorts and never-treated
donors (:func:`cohort_blocks`), the exact placebo covariance over assignments of the
treated units' adoption dates to donors (:func:`placebo_covariance`) and the event-time
frame.

The weights
-----------
For a treated unit with pre-period outcomes ``Z1`` (``T0``) and donors' ``Z0``
(``T0 x J``), predictors ``X1`` (``K``) and ``X0`` (``K x J``), the synthetic control is
``W(V) = argmin_{w in simplex} (X1 - X0 w)' V (X1 - X0 w)`` with ``V`` diagonal; ``V`` is
chosen to minimise the pre-period outcome MSPE ``|Z1 - Z0 W(V)|^2 / T0`` (the nested
optimisation of R ``Synth`` / Stata ``synth``: predictors standardised by their standard
deviation over treated and donor units, ``V = |p| / sum |p|`` searched by Nelder-Mead from
equal weights and from Synth's regression-based start, the better kept).

The inner problem is solved exactly: ``min |C w|^2`` on the simplex, ``C = V^(1/2) (X0 -
X1 1')``, equals the non-negative least squares problem ``min_{u >= 0} |C u|^2 + c^2 (1'u -
1)^2`` rescaled by ``w = u / 1'u`` (for ``u = s w`` the objective is ``s^2 q + c^2 (s -
1)^2``, minimised at ``q c^2 / (q + c^2)``, increasing in ``q = |C w|^2``), so one
Lawson-Hanson NNLS call gives the simplex solution, rank-deficient ``C`` included.

With every pre-period outcome as a predictor (the default ``predictors="outcomes"``) the
nested problem has a closed answer: ``V`` proportional to the squared standard deviations
of the outcome rows (zero on covariates) makes the inner problem the outer one, so the
optimal ``W`` is the plain pre-period outcome fit ``argmin |Z1 - Z0 w|^2`` and covariates
get no weight (Kaul, Kloessner, Pfeifer and Schieler 2022). didlab solves that fit directly
instead of searching for ``V``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import optimize

from .panel import (D, EstimationError, OptionError, check_alpha, check_choice,
                    check_count, excluding_always_treated)
from .result import Estimate, critical_value, p_value
from .wide import Wide, to_wide

PREDICTORS = ("outcomes", "mean")
V_WEIGHTS = ("optimized", "equal")


# --- the panel as cohorts and donors ---------------------------------------------------------

@dataclass(frozen=True)
class Cohort:
    """Treated units adopting at one period, with the never-treated donors."""

    period: int             # the adoption period (calendar)
    pos: int                # its position among the panel's periods (= T0, pre-periods)
    treated: np.ndarray     # row indices (into Wide) of the cohort's treated units

    @property
    def n(self) -> int:
        return int(self.treated.size)


@dataclass(frozen=True)
class Blocks:
    """A balanced panel split for synthetic-control-type estimators."""

    wide: Wide
    donors: np.ndarray                  # row indices of never-treated units
    cohorts: tuple[Cohort, ...] = field(default_factory=tuple)

    @property
    def n_treated(self) -> int:
        return sum(c.n for c in self.cohorts)

    @property
    def n_periods(self) -> int:
        return int(self.wide.periods.size)

    def cells(self) -> np.ndarray:
        """Treated unit-post-period cells of each cohort (its aggregation weight)."""
        return np.array([c.n * (self.n_periods - c.pos) for c in self.cohorts], dtype=float)


def cohort_blocks(panel: pd.DataFrame, outcome: str, covariates: Sequence[str] = (),
                  who: str = "this estimator", min_donors: int = 2) -> Blocks:
    """Reshape ``panel`` to matrices and split it into adoption cohorts and donors.

    Donors are the units never treated in the panel (``cohort == 0`` or a cohort after the
    last period: their ``d`` is 0 throughout). A cohort's pre-period is every period before
    its adoption date (position ``pos``); the panel's periods must be consecutive positions
    (a cohort between periods is refused by :func:`~estimators.design.period_positions`).
    """
    from .design import period_positions

    wide = to_wide(panel, outcome, covariates, who=who)
    periods = wide.periods
    last = periods[-1]
    never = (wide.cohort == 0) | (wide.cohort > last)
    donors = np.flatnonzero(never)
    if donors.size < min_donors:
        raise EstimationError(f"{who} needs at least {min_donors} never-treated donor units; "
                              f"the panel has {donors.size}")
    cohorts = []
    for g in np.unique(wide.cohort[~never]):
        pos = int(period_positions(np.array([float(g)]), periods.astype(float), what="cohort")[0])
        if pos < 1:
            continue  # always treated: dropped by excluding_always_treated before this
        cohorts.append(Cohort(int(g), pos, np.flatnonzero(wide.cohort == g)))
    if not cohorts:
        raise EstimationError(f"{who}: no treated unit is observed before and after adoption")
    return Blocks(wide, donors, tuple(cohorts))


def event_positions(blocks: Blocks, pre: bool = True) -> np.ndarray:
    """Event times covered by some cohort (``-pos .. T - 1 - pos``; ``e >= 0`` only when
    ``pre`` is False), sorted."""
    t = blocks.n_periods
    lo = -max(c.pos for c in blocks.cohorts) if pre else 0
    hi = max(t - 1 - c.pos for c in blocks.cohorts)
    return np.arange(lo, hi + 1)


def event_coefficients(blocks: Blocks, events: np.ndarray) -> np.ndarray:
    """``(n_cohorts, n_events)``: the weight of one treated unit of each cohort in the
    event-time term ``e`` (the mean over treated units observed at ``e``)."""
    t = blocks.n_periods
    have = np.array([[(-c.pos <= e <= t - 1 - c.pos) for e in events] for c in blocks.cohorts])
    n = np.array([c.n for c in blocks.cohorts], dtype=float)
    count = (have * n[:, None]).sum(axis=0)
    return np.where(have, 1.0 / np.where(count > 0, count, 1.0), 0.0)


def placebo_covariance(values: Sequence[np.ndarray], coef: np.ndarray,
                       counts: np.ndarray) -> np.ndarray:
    """Exact covariance, over every assignment of the treated units to distinct donors, of
    a linear statistic of placebo quantities.

    Slot ``k`` (a treated unit of cohort ``g``) takes the values ``values[g][j]`` (a row of
    ``Q`` quantities) of the donor ``j`` it is assigned to; the statistic is
    ``sum_k coef[g(k)] * values[g(k)][pi(k)]``, ``pi`` a uniformly drawn injective map from
    the ``sum(counts)`` slots to the ``J`` donors. With ``B_g = values[g] * coef[g]``,
    ``s_g`` its column sums, ``M = sum_g n_g B_g``, ``S = sum_g n_g s_g``, ``m = S / J``::

        Cov = 1/J sum_g n_g B_g'B_g
              + 1/(J(J-1)) (S S' - sum_g n_g s_g s_g' - M'M + sum_g n_g B_g'B_g) - m m'

    (the second moments of sampling without replacement). It is the variance that
    Arkhangelsky et al. (2021, Algorithm 4) estimate by redrawing the placebo assignment,
    computed exactly.
    """
    q = coef.shape[1]
    j = values[0].shape[0]
    if j < 2:
        raise EstimationError("the placebo variance needs at least two donors")
    bb = np.zeros((q, q))
    ss = np.zeros((q, q))
    big_m = np.zeros((j, q))
    big_s = np.zeros(q)
    for a, c, n in zip(values, coef, counts):
        b = np.nan_to_num(a) * c
        s = b.sum(axis=0)
        bb += n * (b.T @ b)
        ss += n * np.outer(s, s)
        big_m += n * b
        big_s += n * s
    m = big_s / j
    cov = (bb / j + (np.outer(big_s, big_s) - ss - big_m.T @ big_m + bb) / (j * (j - 1))
           - np.outer(m, m))
    return 0.5 * (cov + cov.T)


# --- the weights -----------------------------------------------------------------------------

def simplex_ls(c_mat: np.ndarray) -> np.ndarray:
    """``argmin_{w in simplex} |C w|^2`` through one NNLS call (see the module docstring)."""
    k, j = c_mat.shape
    scale = float(np.sqrt((c_mat ** 2).sum() / max(j, 1))) or 1.0
    a = np.vstack([c_mat, np.full((1, j), scale)])
    b = np.zeros(k + 1)
    b[-1] = scale
    u, _ = optimize.nnls(a, b, maxiter=50 * (j + k + 1))
    total = u.sum()
    if not total > 0:  # cannot happen for a finite problem; keep a defined answer
        return np.full(j, 1.0 / j)
    return u / total


def _standardise(x1: np.ndarray, x0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide each predictor by its standard deviation over donors and the treated unit
    (R Synth's ``divisor``)."""
    allx = np.column_stack([x0, x1])
    sd = allx.std(axis=1, ddof=1)
    if (x0.std(axis=1) == 0).any():
        raise EstimationError("a predictor has no variation across the donor units (R Synth "
                              "refuses it too); drop it")
    return x1 / sd, x0 / sd[:, None]


def _inner(v: np.ndarray, x1: np.ndarray, x0: np.ndarray) -> np.ndarray:
    return simplex_ls(np.sqrt(v)[:, None] * (x0 - x1[:, None]))


def synth_weights(x1: np.ndarray | None, x0: np.ndarray | None, z1: np.ndarray,
                  z0: np.ndarray, v_weights: str = "optimized",
                  maxiter: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Donor weights ``W`` (and predictor weights ``V``) of one synthetic control.

    ``x1``/``x0`` are the predictors (None: the plain pre-period outcome fit, the exact
    answer of the nested problem when every pre-period outcome is a predictor); ``z1``,
    ``z0`` the pre-period outcomes (``T0``, ``T0 x J``).
    """
    if x1 is None:
        return simplex_ls(z0 - z1[:, None]), None
    x1s, x0s = _standardise(x1, x0)
    k = x1s.size
    if k == 1 or v_weights == "equal":
        v = np.full(k, 1.0 / k)
        return _inner(v, x1s, x0s), v

    def loss(p: np.ndarray) -> float:
        a = np.abs(p)
        tot = a.sum()
        v = a / tot if tot > 0 else np.full(k, 1.0 / k)
        w = _inner(v, x1s, x0s)
        r = z1 - z0 @ w
        return float(r @ r) / z1.size

    starts = [np.full(k, 1.0 / k)]
    # Synth's second start: squared coefficients of the pre-period outcomes regressed on
    # the standardised predictors (over treated and donors), normalised
    xall = np.column_stack([np.ones(x0s.shape[1] + 1), np.column_stack([x1s, x0s]).T])
    zall = np.column_stack([z1, z0]).T
    try:
        beta = np.linalg.solve(xall.T @ xall, xall.T @ zall)[1:]
        sv2 = (beta ** 2).sum(axis=1)
        if np.isfinite(sv2).all() and sv2.sum() > 0:
            starts.append(sv2 / sv2.sum())
    except np.linalg.LinAlgError:
        pass
    # the outer problem is not convex (many local minima): Powell's direction search from
    # both starts, then a Nelder-Mead polish of the better one; R Synth runs Nelder-Mead
    # and BFGS from the same two starts
    best = None
    for s in starts:
        res = optimize.minimize(loss, s, method="Powell",
                                options={"xtol": 1e-4, "ftol": 1e-9, "maxiter": maxiter})
        if best is None or res.fun < best.fun:
            best = res
    polish = optimize.minimize(loss, best.x, method="Nelder-Mead",
                               options={"xatol": 1e-8, "fatol": 1e-12,
                                        "maxiter": maxiter or 100 * k, "adaptive": k > 4})
    if polish.fun < best.fun:
        best = polish
    a = np.abs(best.x)
    v = a / a.sum()
    return _inner(v, x1s, x0s), v


# --- the estimator ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Fit:
    """One synthetic control: its weights and gap path."""

    gap: np.ndarray        # (T,) treated minus synthetic, every period
    pos: int               # adoption position (T0)

    @property
    def att(self) -> float:
        return float(self.gap[self.pos:].mean())

    @property
    def ratio(self) -> float:
        pre = np.sqrt(np.mean(self.gap[:self.pos] ** 2))
        post = np.sqrt(np.mean(self.gap[self.pos:] ** 2))
        return float(post / pre) if pre > 0 else float("inf")


@dataclass(frozen=True)
class SyntheticControl:
    """Synthetic control (Abadie, Diamond and Hainmueller 2010) with in-space placebo
    inference.

    Each treated unit gets its own synthetic control, a convex combination of the
    never-treated units fitted on the periods before its own adoption date; the headline is
    the average post-period gap over treated unit-post-period cells (the ATT over treated
    cells; one treated unit: its average post-period gap). Event-time terms are the gaps
    at each event time averaged over the treated units observed there; pre-period terms
    are in-sample fit residuals, not tests, so no ``event_cov`` is reported and honest
    sensitivity analysis (which reads pre-period terms as pre-trends) does not apply.

    Parameters
    ----------
    outcome
        Outcome column.
    predictors
        ``"outcomes"`` (default): every pre-period outcome is a predictor; the optimal
        ``V`` then gives the plain pre-period outcome fit, solved directly (covariates get
        zero weight, Kaul et al. 2022). ``"mean"``: the pre-period mean of the outcome, plus
        the pre-period means of ``covariates``, with ``V`` chosen by the nested optimisation.
    covariates
        Columns whose pre-period means are predictors (only their pre-period values are
        used).
    v_weights
        ``"optimized"`` (default): ``V`` minimises the pre-period outcome MSPE (R
        ``Synth``'s nested search). ``"equal"``: equal weights on the standardised
        predictors (Synth's ``custom.v = rep(1, K)``).
    n_perm
        Random assignments of the treated units to donors for the RMSPE-ratio p-value when
        there are several treated units (one treated unit: every donor, exactly).
    alpha
        Level of the interval.

    Notes
    -----
    Inference comes from in-space placebos (Abadie et al. 2010): each never-treated unit,
    on each cohort's adoption date, gets a synthetic control from the other never-treated
    units.

    - p-value: the permutation p-value of the post/pre RMSPE ratio. One treated unit: its
      rank among the placebos, ``(1 + #{placebo ratio >= treated ratio}) / (1 + J)``.
      Several: the cell-weighted mean ratio of the treated units against the same
      statistic for ``n_perm`` random assignments of the treated units' adoption dates to
      distinct donors, ``(1 + #{>=}) / (1 + n_perm)``.
    - standard error: the placebo variance of Arkhangelsky et al. (2021, Algorithm 4) --
      the variance of the estimator when the treated units' adoption dates go to randomly
      drawn donors -- computed exactly over all assignments from the in-space placebo fits
      (:func:`placebo_covariance`), instead of by redrawing; a placebo's donor pool is the
      other never-treated units (Abadie's placebos). The interval is ``estimate +- z se``
      (normal, as synthdid). It needs more donors than treated units.
    """

    outcome: str
    predictors: str = "outcomes"
    covariates: Sequence[str] = ()
    v_weights: str = "optimized"
    n_perm: int = 999
    alpha: float = 0.05
    label: str = "synthetic_control"

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        check_choice("predictors", self.predictors, PREDICTORS)
        check_choice("v_weights", self.v_weights, V_WEIGHTS)
        check_count("n_perm", self.n_perm, minimum=1)
        check_alpha(self.alpha)
        if isinstance(self.covariates, str):
            raise OptionError(f"covariates={self.covariates!r} must be a list of columns")
        if self.outcome in tuple(self.covariates) or D in tuple(self.covariates):
            raise OptionError(f"covariates {list(self.covariates)} must not include the "
                              f"outcome or {D!r}")

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True ATT over treated cells and by event time (``e >= 0``) on a simulated panel."""
        return treated_event_truth(panel, self.outcome)

    def _uses_search(self) -> bool:
        return self.predictors != "outcomes" or self.v_weights == "equal"

    def _predictors(self, blocks: Blocks, rows: np.ndarray, pos: int) -> np.ndarray | None:
        """``(K, len(rows))`` predictors on the pre-period ``[:pos]`` (None: plain fit)."""
        if not self._uses_search():
            return None
        y = blocks.wide.y[rows, :pos]
        parts = [y.T] if self.predictors == "outcomes" else [y.mean(axis=1)[None, :]]
        for c in self.covariates:
            parts.append(blocks.wide.x[c][rows, :pos].mean(axis=1)[None, :])
        return np.vstack(parts)

    def _fit_one(self, blocks: Blocks, unit: int, donors: np.ndarray, pos: int,
                 x_all: np.ndarray | None, cols: np.ndarray) -> _Fit:
        y = blocks.wide.y
        z1, z0 = y[unit, :pos], y[donors, :pos].T
        x1 = x0 = None
        if x_all is not None:
            x1 = x_all[:, cols[unit]]
            x0 = x_all[:, cols[donors]]
        w, _ = synth_weights(x1, x0, z1, z0, self.v_weights)
        return _Fit(y[unit] - w @ y[donors], pos)

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Estimate the ATT (see the class docstring); ``rng`` draws the assignments of the
        RMSPE-ratio test when there are several treated units."""
        self.check()
        blocks = cohort_blocks(panel, self.outcome, tuple(self.covariates),
                               who="synthetic control", min_donors=3)
        donors = blocks.donors
        j = donors.size
        n1 = blocks.n_treated
        if j <= n1:
            raise EstimationError(f"synthetic control's placebo inference needs more "
                                  f"never-treated units ({j}) than treated units ({n1})")
        if n1 > 1 and rng is None:
            raise OptionError("synthetic control with several treated units draws the "
                              "RMSPE-ratio test's assignments: fit(panel, rng=...)")
        events = event_positions(blocks)
        coef_ev = event_coefficients(blocks, events)
        t = blocks.n_periods
        cells = blocks.cells()
        w_unit = np.array([(t - c.pos) for c in blocks.cohorts], dtype=float) / cells.sum()
        unit_rows, unit_ratio, unit_w = [], [], []
        placebo_vals, placebo_ratio = [], []
        est_ev = np.zeros(events.size)
        att = 0.0
        notes: list[str] = []
        for g, c in enumerate(blocks.cohorts):
            rows = np.r_[c.treated, donors]
            cols = np.full(blocks.wide.n, -1)
            cols[rows] = np.arange(rows.size)
            x_all = self._predictors(blocks, rows, c.pos)
            ev_idx = np.arange(t) - c.pos - events[0]       # gap period -> event column
            for u in c.treated:
                f = self._fit_one(blocks, u, donors, c.pos, x_all, cols)
                att += w_unit[g] * f.att
                est_ev[ev_idx] += coef_ev[g, ev_idx] * f.gap
                unit_rows.append((blocks.wide.units[u], c.period, f.att, f.ratio))
                unit_ratio.append(f.ratio)
                unit_w.append(w_unit[g])
            vals = np.full((j, 1 + events.size), np.nan)
            ratios = np.empty(j)
            for i, dnr in enumerate(donors):
                f = self._fit_one(blocks, dnr, np.delete(donors, i), c.pos, x_all, cols)
                vals[i, 0] = f.att
                vals[i, 1 + ev_idx] = f.gap
                ratios[i] = f.ratio
            placebo_vals.append(vals)
            placebo_ratio.append(ratios)
        coef = np.column_stack([w_unit, coef_ev])
        counts = np.array([c.n for c in blocks.cohorts], dtype=float)
        cov = placebo_covariance(placebo_vals, coef, counts)
        se_all = np.sqrt(np.clip(np.diag(cov), 0, None))
        p_rank, n_draws = self._rmspe_p(blocks, np.array(unit_ratio), np.array(unit_w),
                                        placebo_ratio, rng)
        if self.covariates and not self._uses_search():
            notes.append("covariates get zero weight: with every pre-period outcome as a "
                         "predictor the optimal V ignores them (Kaul et al. 2022); use "
                         "predictors='mean' to match on them")
        return self._estimate(blocks, att, se_all, est_ev, events, p_rank, n_draws,
                              unit_rows, np.array(unit_w), notes)

    def _rmspe_p(self, blocks: Blocks, ratio: np.ndarray, w: np.ndarray,
                 placebo: list[np.ndarray], rng: np.random.Generator | None
                 ) -> tuple[float, int]:
        """Permutation p-value of the (cell-weighted mean) post/pre RMSPE ratio."""
        if ratio.size == 1:
            r = placebo[0]
            return float((1 + np.sum(r >= ratio[0])) / (1 + r.size)), int(r.size)
        assert rng is not None
        j = blocks.donors.size
        stat = float(w @ ratio)
        perm = rng.permuted(np.tile(np.arange(j), (self.n_perm, 1)), axis=1)[:, :ratio.size]
        cohort_of_slot = np.repeat(np.arange(len(blocks.cohorts)),
                                   [c.n for c in blocks.cohorts])
        table = np.vstack(placebo)                      # (n_cohorts, J)
        draws = table[cohort_of_slot[None, :], perm] @ w
        return float((1 + np.sum(draws >= stat - 1e-12 * abs(stat))) / (1 + self.n_perm)), \
            self.n_perm

    def _estimate(self, blocks: Blocks, att: float, se_all: np.ndarray, est_ev: np.ndarray,
                  events: np.ndarray, p_rank: float, n_draws: int, unit_rows: list,
                  unit_w: np.ndarray, notes: list[str]) -> Estimate:
        crit = critical_value(self.alpha, None)
        se = float(se_all[0])
        names = [f"ev{int(e):+d}" for e in events]
        ev_se = se_all[1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            stat = np.where(ev_se > 0, est_ev / ev_se, np.nan)
        terms = pd.DataFrame({
            "term": ["ATT", *names],
            "estimate": np.r_[att, est_ev],
            "std_error": np.r_[se, ev_se],
            "statistic": np.r_[att / se if se > 0 else np.nan, stat],
            "p_value": np.r_[p_rank, p_value(stat, None)],
            "conf_low": np.r_[att - crit * se, est_ev - crit * ev_se],
            "conf_high": np.r_[att + crit * se, est_ev + crit * ev_se],
            "event_time": np.r_[np.nan, events.astype(float)],
        })
        units = pd.DataFrame(unit_rows, columns=["unit", "cohort", "att", "rmspe_ratio"])
        diag = {"n_donors": float(blocks.donors.size),
                "n_treated": float(blocks.n_treated),
                "rmspe_ratio": float(np.average(units["rmspe_ratio"], weights=unit_w)),
                "rmspe_draws": float(n_draws)}
        if len(units) <= 12:
            for r in units.itertuples():
                diag[f"rmspe_ratio[{r.unit}]"] = float(r.rmspe_ratio)
        return Estimate(
            estimator=self.label, term="ATT", estimate=float(att), std_error=se,
            p_value=p_rank, conf_low=float(att - crit * se), conf_high=float(att + crit * se),
            alpha=self.alpha, n_obs=int(blocks.wide.y.size), n_units=int(blocks.wide.n),
            n_clusters=0,
            inference=("in-space placebos: p = post/pre RMSPE-ratio permutation rank (Abadie "
                       "et al. 2010); se = exact placebo variance over assignments of the "
                       "treated units' dates to donors (Arkhangelsky et al. 2021 Alg. 4), "
                       "normal interval"),
            terms=terms, diagnostics=diag, notes=tuple(notes),
        )


def treated_event_truth(panel: pd.DataFrame, outcome: str) -> dict[str, float]:
    """The ATT over treated cells (``mean te`` over ``d == 1`` rows) and the mean effect at
    each event time ``e >= 0`` over the treated units observed there."""
    from .design import event_time

    te = panel[f"te_{outcome}"].to_numpy()
    d = panel[D].to_numpy() == 1
    out = {"ATT": float(te[d].mean())}
    rel = event_time(panel)
    for e in np.unique(rel[d]):
        out[f"ev{int(e):+d}"] = float(te[d & (rel == e)].mean())
    return out


__all__ = ["Blocks", "Cohort", "SyntheticControl", "cohort_blocks", "event_coefficients",
           "event_positions", "placebo_covariance", "simplex_ls", "synth_weights",
           "treated_event_truth"]
