"""Placebo and permutation inference that wraps any estimator.

* :class:`TimingPlacebo` moves the policy date back by k years and re-estimates on the
  pre-treatment years only;
* :class:`RandomizationInference` re-draws which units are pilots -- it permutes the
  unit -> cohort assignment (cohort sizes kept, optionally within strata) and rebuilds
  ``d`` -- and compares the actual statistic with its permutation distribution; exact
  enumeration when the assignments are few enough;
* :class:`LeaveOneOut` drops each treated unit in turn.

Each wraps an estimator with ``fit(panel) -> Estimate``; none re-implements one. For
:class:`~estimators.twfe.TWFE` the permutation distribution has a vectorised path (all
permutations at once, by Frisch-Waugh-Lovell) that a test pins to the generic loop.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .design import codes_of, fe_arrays
from .fe import cluster_scores, ssc_factor, within_balanced, within_general
from .panel import (excluding_always_treated, COHORT, D, TIME, UNIT, EstimationError, OptionError, PanelError,
                    check_choice, check_count, check_panel, treatment_from_cohort)
from .result import Estimate
from .regression import fit_fe
from .twfe import TWFE

STATISTICS = ("t", "coef")
#: relative tolerance of the ">=" tie rule: |T_b| counts as extreme if it reaches
#: |T_obs| * (1 - TIE_RTOL), so that floating-point noise between two exact computations of
#: the same statistic cannot decide a tie
TIE_RTOL = 1e-9


def _statistic(est: Estimate, statistic: str) -> float:
    return est.estimate if statistic == "coef" else est.statistic


def _with_cohorts(panel: pd.DataFrame, unit_cohort: dict[Any, int] | pd.Series) -> pd.DataFrame:
    """A copy of ``panel`` with new unit cohorts and the matching ``d``."""
    out = panel.copy()
    cohort = out[UNIT].map(unit_cohort).to_numpy()
    out[COHORT] = cohort.astype(np.int64)
    out[D] = treatment_from_cohort(cohort, out[TIME].to_numpy())
    return out


# --- timing placebo --------------------------------------------------------------------------

@dataclass(frozen=True)
class TimingPlacebo:
    """Fake treatment dates ``k`` years before the real ones, on pre-treatment years only.

    The sample keeps the untreated observations (``d == 0``) of the years before the last
    real cohort starts; treated units get the fake cohort ``cohort - k``. Under parallel
    trends and no anticipation every placebo effect is zero.

    Parameters
    ----------
    base
        The estimator to re-run (any ``fit(panel) -> Estimate``).
    shifts
        Years to move the date back (each >= 1).
    """

    base: Any
    shifts: Sequence[int] = (1, 2, 3)
    label: str = "timing_placebo"

    def placebo_panel(self, panel: pd.DataFrame, k: int) -> pd.DataFrame:
        """The pre-treatment sample with the date moved back by ``k`` years."""
        if k < 1:
            raise OptionError(f"shift {k} must be >= 1 (years before the real date)")
        last = panel.loc[panel[COHORT] > 0, COHORT].max()
        pre = panel[(panel[D] == 0) & (panel[TIME] < last)]
        fake = pre[COHORT].where(pre[COHORT] == 0, pre[COHORT] - k)
        first = pre[TIME].min()
        if (fake[fake > 0] <= first).any():
            raise OptionError(
                f"shift {k} puts a fake date at or before the first year {first}: "
                "no pre-period would remain"
            )
        out = pre.copy()
        out[COHORT] = fake.astype(np.int64)
        out[D] = treatment_from_cohort(out[COHORT].to_numpy(), out[TIME].to_numpy())
        return out

    def check(self) -> None:
        """Validate the options without data: at least one shift, each a whole number of
        years >= 1."""
        if not self.shifts:
            raise OptionError("shifts must list at least one year")
        bad = [k for k in self.shifts if not float(k).is_integer() or int(k) < 1]
        if bad:
            raise OptionError(f"shifts {list(self.shifts)}: {bad[0]} must be a whole number "
                              "of years >= 1 (years before the real date)")
        if callable(getattr(self.base, "check", None)):
            self.base.check()

    def fit(self, panel: pd.DataFrame) -> Estimate:
        self.check()
        check_panel(panel, (), ())
        rows = []
        for k in self.shifts:
            e = self.base.fit(self.placebo_panel(panel, int(k)))
            rows.append((k, e))
        alpha = rows[0][1].alpha
        names = [f"shift-{k}" for k, _ in rows]
        terms = pd.DataFrame({
            "term": names,
            "estimate": [e.estimate for _, e in rows],
            "std_error": [e.std_error for _, e in rows],
            "statistic": [e.statistic for _, e in rows],
            "p_value": [e.p_value for _, e in rows],
            "conf_low": [e.conf_low for _, e in rows],
            "conf_high": [e.conf_high for _, e in rows],
            "shift": [int(k) for k, _ in rows],
            "n_obs": [e.n_obs for _, e in rows],
        })
        first = rows[0][1]
        rejected = int((terms["p_value"] < alpha).sum())
        return Estimate(
            estimator=self.label, term=names[0], estimate=first.estimate,
            std_error=first.std_error, p_value=first.p_value, conf_low=first.conf_low,
            conf_high=first.conf_high, alpha=alpha, n_obs=first.n_obs, n_units=first.n_units,
            n_clusters=first.n_clusters, inference=f"{first.inference} (placebo dates)",
            terms=terms,
            diagnostics={"n_shifts": float(len(rows)), "n_rejected": float(rejected),
                         "share_rejected": rejected / len(rows)},
            notes=(f"placebo dates {list(self.shifts)} years early on pre-treatment years; "
                   f"{getattr(self.base, 'label', type(self.base).__name__)} re-estimated",),
        )


# --- randomization inference -----------------------------------------------------------------

def _multinomial(counts: Sequence[int]) -> int:
    total = math.factorial(sum(counts))
    for c in counts:
        total //= math.factorial(c)
    return total


def n_assignments(unit_cohort: np.ndarray, strata: np.ndarray | None = None) -> int:
    """Number of distinct unit -> cohort assignments with the cohort sizes kept (within
    strata): a product of multinomial coefficients. C(30, 6) = 593,775 for seed 002."""
    strata = np.zeros(unit_cohort.size, dtype=int) if strata is None else strata
    total = 1
    for s in np.unique(strata):
        _, counts = np.unique(unit_cohort[strata == s], return_counts=True)
        total *= _multinomial(counts.tolist())
    return total


def draw_assignments(unit_cohort: np.ndarray, n_draws: int, rng: np.random.Generator,
                     strata: np.ndarray | None = None) -> np.ndarray:
    """``n_draws`` random permutations of the unit -> cohort vector (within strata).

    Returns an array ``(n_draws, n_units)`` of cohorts. Draws are with replacement from the
    set of assignments (independent permutations), as randomization inference with
    Monte Carlo draws requires.
    """
    n = unit_cohort.size
    out = np.empty((n_draws, n), dtype=unit_cohort.dtype)
    if strata is None:
        keys = rng.random((n_draws, n))
        order = np.argsort(keys, axis=1)
        return unit_cohort[order]
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        keys = rng.random((n_draws, idx.size))
        out[:, idx] = unit_cohort[idx][np.argsort(keys, axis=1)]
    return out


def enumerate_assignments(unit_cohort: np.ndarray, strata: np.ndarray | None = None) -> np.ndarray:
    """Every distinct assignment (cohort sizes kept within strata), ``(n, n_units)``."""
    strata = np.zeros(unit_cohort.size, dtype=int) if strata is None else strata
    per_stratum = []
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        per_stratum.append((idx, _enumerate_one(unit_cohort[idx])))
    total = np.prod([a.shape[0] for _, a in per_stratum])
    out = np.empty((int(total), unit_cohort.size), dtype=unit_cohort.dtype)
    grids = np.meshgrid(*[np.arange(a.shape[0]) for _, a in per_stratum], indexing="ij")
    for (idx, a), g in zip(per_stratum, grids):
        out[:, idx] = a[g.ravel()]
    return out


def _enumerate_one(values: np.ndarray) -> np.ndarray:
    levels, counts = np.unique(values, return_counts=True)
    n = values.size
    rows: list[np.ndarray] = []

    def fill(current: np.ndarray, free: list[int], j: int) -> None:
        if j == len(levels) - 1:
            c = current.copy()
            c[free] = levels[j]
            rows.append(c)
            return
        for chosen in itertools.combinations(free, int(counts[j])):
            c = current.copy()
            c[list(chosen)] = levels[j]
            rest = [f for f in free if f not in chosen]
            fill(c, rest, j + 1)

    fill(np.zeros(n, dtype=values.dtype), list(range(n)), 0)
    return np.array(rows)


def randomization_p_value(actual: float, placebo: np.ndarray, exact: bool) -> tuple[float, float]:
    """Two-sided randomization p-value and its Monte Carlo standard error.

    Random draws: ``(1 + #{|T_b| >= |T|}) / (1 + B)`` (the +1 counts the actual
    assignment), MC SE ``sqrt(p(1-p)/B)``. Exact enumeration (the actual assignment is one
    of the enumerated ones): ``#{|T_b| >= |T|} / B`` with MC SE 0. Ties use
    :data:`TIE_RTOL`; non-finite placebo statistics count as not extreme and are reported.
    """
    finite = placebo[np.isfinite(placebo)]
    hits = int(np.sum(np.abs(finite) >= abs(actual) * (1 - TIE_RTOL)))
    b = finite.size
    if b == 0:
        return float("nan"), float("nan")
    if exact:
        return hits / b, 0.0
    p = (1 + hits) / (1 + b)
    return p, float(np.sqrt(p * (1 - p) / b))


#: spellings of ``exact`` a config may use
_EXACT = {"auto": "auto", "true": True, "false": False}


@dataclass(frozen=True)
class PlaceboDistribution:
    """What a randomization test produced, including the placebo distribution itself."""

    estimate: Estimate
    actual: float
    placebo: np.ndarray
    assignments: np.ndarray


@dataclass(frozen=True)
class RandomizationInference:
    """Fake-pilot placebo / randomization inference around any estimator.

    Parameters
    ----------
    base
        Estimator to re-run on every permuted assignment.
    n_perm
        Random permutations (ignored under exact enumeration).
    statistic
        ``"t"`` (studentized: the base estimator's estimate / SE, e.g. cluster-robust t) or
        ``"coef"`` (the estimate itself).
    exact
        ``False`` (default) draws ``n_perm`` random assignments; ``True`` enumerates every
        assignment; ``"auto"`` enumerates when there are at most ``max_exact`` of them
        (``max_exact_generic`` when the base estimator has no vectorised path, since each
        assignment is then a full refit).
    strata
        Column whose values define strata (e.g. regions); assignments are permuted within
        strata.
    fast
        Use the vectorised TWFE path when ``base`` is an unweighted TWFE (identical numbers,
        pinned by tests); ``False`` forces the generic loop.

    Notes
    -----
    Under the sharp null of no effect for any unit and an assignment that is exchangeable
    across units (within strata), the p-value is exact whatever the number of pilots --
    unlike cluster-robust t tests with six treated clusters. ``p_value`` is the
    randomization p-value. The interval is Fisher's: the constant additive effects ``tau``
    whose sharp null (every unit's effect is ``tau``) the same test does not reject at
    ``alpha``, found on the fast TWFE path, where each ``tau`` costs one pass over the
    stored per-assignment parts (:class:`PermutationParts`); it is exact under the sharp
    null's assumptions, as the p-value (Imbens and Rubin 2015, ch. 5). Around other base
    estimators no interval is reported (NaN); the base estimator's own is in
    ``diagnostics`` (``base_conf_low``, ``base_conf_high``).
    """

    base: Any
    n_perm: int = 999
    statistic: str = "t"
    exact: Any = False
    max_exact: int = 1_000_000
    max_exact_generic: int = 20_000
    strata: str | None = None
    fast: bool = True
    batch: int = 2000
    label: str = "randomization"

    def _unit_table(self, panel: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        units = panel.groupby(UNIT, sort=True)[COHORT].first()
        strata = None
        if self.strata is not None:
            if self.strata not in panel.columns:
                raise PanelError(f"strata column {self.strata!r} is not in the panel")
            per = panel.groupby(UNIT, sort=True)[self.strata].nunique()
            if (per > 1).any():
                raise PanelError(f"strata column {self.strata!r} varies within unit {per.index[per > 1][0]!r}")
            strata = codes_of(panel.groupby(UNIT, sort=True)[self.strata].first().to_numpy())[0]
        return units.index.to_numpy(), units.to_numpy().astype(np.int64), strata

    @property
    def exact_mode(self) -> bool | str:
        """``exact`` as True, False or "auto" (configs may spell them as strings)."""
        return _EXACT.get(str(self.exact).lower(), self.exact) if isinstance(self.exact, str) \
            else self.exact

    def check(self) -> None:
        """Validate every option, and the base estimator's (see :mod:`estimators.catalog`)."""
        check_choice("statistic", self.statistic, STATISTICS)
        check_choice("exact", self.exact_mode, ("auto", True, False))
        check_count("n_perm", self.n_perm, 1)
        check_count("max_exact", self.max_exact, 1)
        check_count("max_exact_generic", self.max_exact_generic, 1)
        check_count("batch", self.batch, 1)
        if not callable(getattr(self.base, "fit", None)):
            raise OptionError(f"base={self.base!r} must be an estimator")
        if callable(getattr(self.base, "check", None)):
            self.base.check()

    def assignments(self, panel: pd.DataFrame, rng: np.random.Generator | None) -> tuple[np.ndarray, bool]:
        """The permuted assignments (rows: draws, columns: units sorted) and whether they
        are an exact enumeration."""
        self.check()
        _, cohorts, strata = self._unit_table(panel)
        total = n_assignments(cohorts, strata)
        limit = self.max_exact if (self.fast and _fast_ok(self.base)) else self.max_exact_generic
        mode = self.exact_mode
        exact = mode is True or (mode == "auto" and total <= limit)
        if exact:
            if total > 5 * limit:
                raise OptionError(f"exact enumeration of {total:,} assignments is too many; "
                                  f"set exact=False or raise max_exact")
            return enumerate_assignments(cohorts, strata), True
        if rng is None:
            raise OptionError("random permutations need a generator: fit(panel, rng=...)")
        return draw_assignments(cohorts, self.n_perm, rng, strata), False

    @excluding_always_treated
    def run(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> PlaceboDistribution:
        """Actual estimate, permutation distribution and p-value."""
        actual_est = self.base.fit(panel)
        actual = _statistic(actual_est, self.statistic)
        draws, exact = self.assignments(panel, rng)
        parts = None
        if self.fast and _fast_ok(self.base):
            parts = twfe_permutation_parts(self.base, panel, draws, self.batch)
            placebo = parts.stats(self.statistic)
        else:
            placebo = self.slow_stats(panel, draws)
        p, mcse = randomization_p_value(actual, placebo, exact)
        alpha = actual_est.alpha
        if parts is not None and np.isfinite(actual_est.std_error) and actual_est.std_error > 0:
            # Fisher's interval: the constant effects tau the test does not reject. On
            # y - tau d the actual assignment's coefficient is b - tau and its SE is
            # unchanged (d is a regressor); each permuted assignment's statistic follows
            # from the same parts
            b0, se0 = actual_est.estimate, actual_est.std_error

            def p_of(tau: float) -> float:
                stat = (b0 - tau) / (se0 if self.statistic == "t" else 1.0)
                return randomization_p_value(stat, parts.stats(self.statistic, tau), exact)[0]

            conf_low, conf_high, one_piece = fisher_interval(p_of, b0, se0, alpha)
            interval = ("interval: Fisher's, inverting the randomization test over constant "
                        "effects (the effects not rejected at alpha)"
                        + ("" if one_piece else "; the accepted set has gaps, its hull is shown"))
        else:
            conf_low = conf_high = float("nan")
            interval = ("no interval: inverting the randomization test needs the TWFE fast "
                        "path (an unweighted TWFE base); the base estimator's interval is in "
                        "diagnostics")
        finite = placebo[np.isfinite(placebo)]
        beyond = float(np.mean(np.abs(finite) >= abs(actual) * (1 - TIE_RTOL))) if finite.size else np.nan
        qs = np.quantile(finite, [0.025, 0.975]) if finite.size else [np.nan, np.nan]
        terms = pd.concat([actual_est.terms.assign(source="base"),
                           pd.DataFrame({"term": ["placebo_q025", "placebo_q975"],
                                         "estimate": qs, "source": "placebo"})],
                          ignore_index=True)
        est = Estimate(
            estimator=self.label, term=actual_est.term, estimate=actual_est.estimate,
            std_error=actual_est.std_error, p_value=p, conf_low=conf_low,
            conf_high=conf_high, alpha=alpha, n_obs=actual_est.n_obs,
            n_units=actual_est.n_units, n_clusters=actual_est.n_clusters,
            inference=(f"randomization ({'exact, ' if exact else ''}{len(placebo)} assignments, "
                       f"{'studentized' if self.statistic == 't' else 'coefficient'} statistic"
                       f"{', stratified' if self.strata else ''})"),
            terms=terms,
            diagnostics={"ri_p_value": p, "ri_p_mcse": mcse, "actual_statistic": actual,
                         "share_beyond": beyond, "n_assignments": float(len(placebo)),
                         "n_failed": float(np.sum(~np.isfinite(placebo))),
                         "exact": float(exact), "base_p_value": actual_est.p_value,
                         "base_conf_low": actual_est.conf_low,
                         "base_conf_high": actual_est.conf_high},
            notes=(f"p_value is the randomization p-value; {interval}",),
        )
        return PlaceboDistribution(est, actual, placebo, draws)

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        return self.run(panel, rng).estimate

    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        return self.base.estimand(panel) if hasattr(self.base, "estimand") else {}

    def slow_stats(self, panel: pd.DataFrame, draws: np.ndarray) -> np.ndarray:
        """The reference path: refit the base estimator on every permuted panel."""
        units, _, _ = self._unit_table(panel)
        out = np.empty(draws.shape[0])
        for b, row in enumerate(draws):
            try:
                e = self.base.fit(_with_cohorts(panel, dict(zip(units, row))))
                out[b] = _statistic(e, self.statistic)
            except (EstimationError, np.linalg.LinAlgError):
                out[b] = np.nan
        return out


def _fast_ok(base: Any) -> bool:
    return (isinstance(base, TWFE) and base.weights is None and not base.paper_terms
            and base.time_by is None)


@dataclass(frozen=True)
class PermutationParts:
    """What TWFE's statistic under each permuted assignment is made of, as a function of
    a hypothesised constant effect ``tau`` (the outcome ``y - tau d``, ``d`` the actual
    treatment). By Frisch-Waugh-Lovell, with ``d''`` the assignment's treatment residualised
    on the fixed effects and controls and ``D''`` the actual one's:

    * coefficient ``b - tau c`` with ``c = d''D'' / d''d''``;
    * residuals ``e - tau f`` with ``f = D'' - c d''``, so the variance's sum of squares
      is the quadratic ``qa - 2 tau qb + tau^2 qc`` (of residuals, of scores, or of
      cluster sums of scores by ``se``), scaled by ``factor / denom``.

    Arrays have one value per assignment; a statistic is NaN where the treatment is
    absorbed under that assignment.
    """

    b: np.ndarray
    c: np.ndarray
    qa: np.ndarray
    qb: np.ndarray
    qc: np.ndarray
    denom: np.ndarray
    factor: float
    absorbed: np.ndarray

    def stats(self, statistic: str, tau: float = 0.0) -> np.ndarray:
        """Each assignment's statistic (``"t"`` or ``"coef"``) on ``y - tau d``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            b = self.b - tau * self.c if tau else self.b
            if statistic == "coef":
                out = b.copy()
            else:
                q = self.qa - 2 * tau * self.qb + tau**2 * self.qc if tau else self.qa
                out = b / np.sqrt(self.factor * q / self.denom)
        out[self.absorbed] = np.nan
        return out


def twfe_permutation_parts(base: TWFE, panel: pd.DataFrame, draws: np.ndarray,
                           batch: int = 2000) -> PermutationParts:
    """:class:`PermutationParts` of TWFE for many permuted assignments at once.

    The outcome, the controls and the actual treatment are residualised on the fixed
    effects (and on the controls) once; for each assignment only the treatment column
    changes. The coefficient is ``d''y'' / d''d''``, the full regression's residuals are
    ``y'' - b d''``, and the cluster-robust variance of ``b`` is
    ``sum_g (d''_g'e_g)^2 / (d''d'')^2`` times the small-sample factor -- exactly what
    :class:`TWFE` computes on each permuted panel.
    """
    cluster = base.cluster if base.se == "cluster" else None
    controls = tuple(base.controls)
    arrays = fe_arrays(panel, base.outcome, (D, *controls), cluster=cluster)
    # residualised outcome, actual treatment and controls (fixed over permutations)
    yt, xt = arrays.within()
    xc = xt[:, 1:]
    res = fit_fe(arrays, base.se, base.ssc, base.dist)  # dof and identification as in TWFE
    if not res.fit.keep.all():
        raise EstimationError("the fast path needs every control identified; use fast=False")
    if xc.shape[1]:
        proj = np.linalg.solve(xc.T @ xc, xc.T)
        y2 = yt - xc @ (proj @ yt)
        da = xt[:, 0] - xc @ (proj @ xt[:, 0])
    else:
        proj = None
        y2 = yt
        da = xt[:, 0]
    factor = ssc_factor(base.se, base.ssc, res.dof)
    # arrays.unit codes index the sorted units, as the draws' columns do
    time_vals = np.unique(panel[TIME].to_numpy())[arrays.time]
    n = draws.shape[0]
    parts = {k: np.empty(n) for k in ("b", "c", "qa", "qb", "qc", "denom")}
    absorbed = np.zeros(n, dtype=bool)
    for lo in range(0, n, batch):
        chunk = draws[lo:lo + batch]                       # (B, n_units)
        coh = chunk[:, arrays.unit].T                      # (N, B)
        dmat = ((coh > 0) & (time_vals[:, None] >= coh)).astype(float)
        if arrays.balanced:
            dt = within_balanced(dmat, arrays.n_units, arrays.n_periods)
        else:
            dt = within_general(dmat, arrays.unit, arrays.time, arrays.n_units, arrays.n_periods)
        d2 = dt - xc @ (proj @ dt) if proj is not None else dt
        dd = np.einsum("ij,ij->j", d2, d2)
        sl = slice(lo, lo + chunk.shape[0])
        with np.errstate(divide="ignore", invalid="ignore"):
            b = (d2.T @ y2) / dd
            c = (d2.T @ da) / dd
            e = y2[:, None] - d2 * b[None, :]
            f = da[:, None] - d2 * c[None, :]
        if base.se == "conventional":
            u, v, denom = e, f, dd
        elif base.se == "robust":
            u, v, denom = d2 * e, d2 * f, dd**2
        else:
            u, v, denom = d2 * e, d2 * f, dd**2
            if arrays.clusters is arrays.unit and arrays.balanced:
                u = u.reshape(arrays.n_units, arrays.n_periods, -1).sum(axis=1)
                v = v.reshape(arrays.n_units, arrays.n_periods, -1).sum(axis=1)
            else:
                u = cluster_scores(u, arrays.clusters, arrays.n_clusters)
                v = cluster_scores(v, arrays.clusters, arrays.n_clusters)
        parts["b"][sl], parts["c"][sl], parts["denom"][sl] = b, c, denom
        parts["qa"][sl] = np.einsum("ij,ij->j", u, u)
        parts["qb"][sl] = np.einsum("ij,ij->j", u, v)
        parts["qc"][sl] = np.einsum("ij,ij->j", v, v)
        absorbed[sl] = ~(dd > 1e-12 * arrays.y.size)  # treatment absorbed under this assignment
    return PermutationParts(**parts, factor=float(factor), absorbed=absorbed)


def twfe_permutation_stats(base: TWFE, panel: pd.DataFrame, draws: np.ndarray,
                           statistic: str = "t", batch: int = 2000) -> np.ndarray:
    """TWFE statistics for many permuted assignments at once
    (:func:`twfe_permutation_parts` at ``tau = 0``)."""
    check_choice("statistic", statistic, STATISTICS)
    return twfe_permutation_parts(base, panel, draws, batch).stats(statistic)


def fisher_interval(p_of: Any, estimate: float, scale: float, alpha: float,
                    grid: int = 201, max_widen: int = 6) -> tuple[float, float, bool]:
    """The ``1 - alpha`` confidence set ``{tau: p(tau) > alpha}`` of a randomization test
    inverted over constant effects ``tau``, as an interval: its lowest and highest
    accepted points (``-inf`` / ``inf`` where acceptance reaches as far as the search
    goes), each located to ``1e-6 scale`` by bisection, and whether the accepted set was
    one piece on the search grid.

    The search starts on ``estimate +- 8 scale`` (``grid`` points) and doubles its
    half-width, up to ``max_widen`` times, while the edge points are accepted. Returns NaN
    endpoints when even ``estimate`` is rejected at every grid point.
    """
    half = 8.0 * scale
    for _ in range(max_widen + 1):
        taus = np.linspace(estimate - half, estimate + half, grid)
        ok = np.array([p_of(t) > alpha for t in taus])
        if not ok.any():
            return float("nan"), float("nan"), True
        if not (ok[0] or ok[-1]):
            break
        half *= 2.0
    idx = np.flatnonzero(ok)
    one_piece = bool(idx[-1] - idx[0] + 1 == idx.size)

    def edge(inside: float, outside: float) -> float:
        for _ in range(60):
            if abs(inside - outside) <= 1e-6 * scale:
                break
            mid = 0.5 * (inside + outside)
            if p_of(mid) > alpha:
                inside = mid
            else:
                outside = mid
        return inside

    lo = -np.inf if ok[0] else edge(taus[idx[0]], taus[idx[0] - 1])
    hi = np.inf if ok[-1] else edge(taus[idx[-1]], taus[idx[-1] + 1])
    return float(lo), float(hi), one_piece


# --- leave one out -----------------------------------------------------------------------------

@dataclass(frozen=True)
class LeaveOneOut:
    """In-space robustness: drop each treated unit in turn and re-estimate."""

    base: Any
    name_column: str | None = None  # a column naming units (e.g. province) for the terms
    label: str = "leave_one_out"

    def fit(self, panel: pd.DataFrame) -> Estimate:
        full = self.base.fit(panel)
        treated = np.unique(panel.loc[panel[COHORT] > 0, UNIT].to_numpy())
        if treated.size < 2:
            raise EstimationError("leave-one-out needs at least two treated units")
        names = {}
        if self.name_column is not None:
            if self.name_column not in panel.columns:
                raise PanelError(f"name column {self.name_column!r} is not in the panel")
            names = panel.groupby(UNIT)[self.name_column].first().to_dict()
        rows = []
        for u in treated:
            e = self.base.fit(panel[panel[UNIT] != u])
            rows.append({"term": f"drop {names.get(u, u)}", "estimate": e.estimate, "std_error": e.std_error,
                         "statistic": e.statistic, "p_value": e.p_value,
                         "conf_low": e.conf_low, "conf_high": e.conf_high, "dropped": u})
        terms = pd.DataFrame(rows)
        est = terms["estimate"].to_numpy()
        sign_flips = int(np.sum(np.sign(est) != np.sign(full.estimate)))
        insignificant = int(np.sum(terms["p_value"] >= full.alpha))
        return replace(
            full, estimator=self.label, terms=terms,
            diagnostics={"min_estimate": float(est.min()), "max_estimate": float(est.max()),
                         "n_sign_flips": float(sign_flips),
                         "n_insignificant": float(insignificant), "n_dropped": float(len(rows))},
            notes=(f"headline: full sample; terms: {len(rows)} fits, each without one treated unit",),
        )

    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        return self.base.estimand(panel) if hasattr(self.base, "estimand") else {}
