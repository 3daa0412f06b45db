"""Stepwise (Baron-Kenny) mediation with unit and period fixed effects.

For each mediator ``M`` (optionally lagged ``k`` periods within unit) the three equations
of the stepwise method are fitted by two-way fixed effects with the same controls on the
same sample:

* total effect ``c``: ``Y`` on ``D``;
* path ``a``: ``M`` on ``D``;
* paths ``b`` and ``c'``: ``Y`` on ``D`` and ``M``;

the indirect effect is ``a*b``. Inference on ``a*b`` is by a cluster bootstrap that
resamples units and refits every equation (percentile or bias-corrected intervals); the
first-order Sobel and the Aroian standard errors are reported beside it, and the "full /
partial / none" classification the papers use is reported alongside the intervals, never
in their place.

The bootstrap has a vectorised path: on a balanced panel, the within transform of a
resampled panel (duplicated units counted as distinct units) only needs each unit's
cross-product matrix and its period profile, so every draw's Gram matrix -- and every
equation's coefficients -- come from two matrix products (:func:`bootstrap_grams`). A
test pins it to the reference path, which rebuilds each resampled panel and refits
:func:`~estimators.regression.fit_fe` on it.

:func:`stepwise_ols`, :func:`sobel_se`, :func:`aroian_se` and :func:`mediation_shares` work
on cross-sections too (plain OLS with an intercept, no fixed effects).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import special

from .design import FEArrays, codes_of, fe_arrays
from .fe import within_general
from .panel import (excluding_always_treated, COHORT, D, TIME, UNIT, DidlabError, EstimationError, OptionError,
                    PanelError, check_choice, check_panel)
from .result import Estimate, critical_value, p_value
from .resample import draw_units
from .regression import FEResult, InferenceOptions, fit_fe
from .catalog import renamed

EQUATIONS = ("separate", "joint")
BOOTSTRAPS = ("cluster", "stratified", "none")
CIS = ("percentile", "bc")
CLASSES = ("full", "partial", "partial (competitive)", "none")


# --- formulas ---------------------------------------------------------------------------------

def sobel_se(a: float, b: float, se_a: float, se_b: float) -> float:
    """First-order Sobel (1982) delta-method SE of ``a*b``: ``sqrt(b^2 se_a^2 + a^2 se_b^2)``."""
    return float(np.sqrt(b**2 * se_a**2 + a**2 * se_b**2))


def aroian_se(a: float, b: float, se_a: float, se_b: float) -> float:
    """Aroian (1947) second-order SE of ``a*b``: ``sqrt(b^2 se_a^2 + a^2 se_b^2 + se_a^2 se_b^2)``."""
    return float(np.sqrt(b**2 * se_a**2 + a**2 * se_b**2 + se_a**2 * se_b**2))


def mediation_shares(a: float, b: float, c_prime: float) -> dict[str, float]:
    """Proportion mediated, both ways.

    ``share_total = a*b / (c' + a*b)``: the indirect effect's share of the total effect
    (``c = c' + a*b`` exactly when the equations share sample and controls).
    ``share_direct = a*b / c'``: indirect over direct, the "share" seed 002 reports
    (Tables 6-8; with ``a*b`` and ``c'`` of the same sign it equals ``|a*b| / |c'|``).
    Either is unbounded when its denominator is near zero and meaningless when ``a*b`` and
    ``c'`` have opposite signs (competitive mediation).
    """
    ab = a * b
    with np.errstate(divide="ignore", invalid="ignore"):
        total = ab / (c_prime + ab) if c_prime + ab != 0 else float("nan")
        direct = ab / c_prime if c_prime != 0 else float("nan")
    return {"share_total": float(total), "share_direct": float(direct)}


def classify(low: float, high: float, ab: float, c_prime: float, c_prime_p: float,
             alpha: float) -> str:
    """The papers' label: ``"none"`` when the indirect-effect interval ``[low, high]`` covers
    zero; else ``"full"`` when ``c'`` is not significant at ``alpha``, ``"partial"`` when it
    is (``"partial (competitive)"`` when ``a*b`` and ``c'`` have opposite signs, Zhao, Lynch
    and Chen 2010). A label, not a test: read it with the interval."""
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 <= high:
        return "none"
    if not c_prime_p < alpha:
        return "full"
    return "partial" if np.sign(ab) == np.sign(c_prime) else "partial (competitive)"


def _normal_quantile(q: np.ndarray | float) -> np.ndarray | float:
    return special.ndtri(q)


def bootstrap_interval(draws: np.ndarray, estimate: float, alpha: float, ci: str) -> tuple[float, float]:
    """Percentile or bias-corrected (Efron 1981) interval from finite bootstrap draws.

    BC: ``z0 = Phi^-1(#{draw < estimate} + #{draw = estimate}/2) / B)`` and the bounds are
    the draws' quantiles at ``Phi(2 z0 -+ z_{1-alpha/2})``; ``z0 = 0`` is the percentile
    interval. Quantiles interpolate linearly (numpy's default).
    """
    draws = draws[np.isfinite(draws)]
    if draws.size < 2:
        return float("nan"), float("nan")
    z0 = _bias_z0(draws, estimate) if ci == "bc" else 0.0
    z = _normal_quantile(1 - alpha / 2)
    lo, hi = special.ndtr(2 * z0 - z), special.ndtr(2 * z0 + z)
    q = np.quantile(draws, [lo, hi])
    return float(q[0]), float(q[1])


def _bias_z0(draws: np.ndarray, estimate: float) -> float:
    b = draws.size
    share = (np.sum(draws < estimate) + 0.5 * np.sum(draws == estimate)) / b
    share = min(max(share, 1 / (b + 1)), b / (b + 1))
    return float(_normal_quantile(share))


def bootstrap_p_value(draws: np.ndarray, estimate: float, ci: str) -> float:
    """Two-sided p-value of ``H0: theta = 0`` that inverts the bootstrap interval.

    Zero lies at the draws' quantile ``q0`` (ties count half; clipped to
    ``[1/(B+1), B/(B+1)]``, so the smallest p-value is about ``2/(B+1)``). The ``1 - alpha``
    BC interval excludes zero exactly when ``|Phi^-1(q0) - 2 z0| > z_{1-alpha/2}``, hence
    ``p = 2 (1 - Phi(|Phi^-1(q0) - 2 z0|))``; with ``z0 = 0`` (percentile) this is
    ``2 min(q0, 1 - q0)``.
    """
    draws = draws[np.isfinite(draws)]
    b = draws.size
    if b < 2:
        return float("nan")
    q0 = (np.sum(draws < 0) + 0.5 * np.sum(draws == 0)) / b
    q0 = min(max(q0, 1 / (b + 1)), b / (b + 1))
    z0 = _bias_z0(draws, estimate) if ci == "bc" else 0.0
    return float(2 * special.ndtr(-abs(_normal_quantile(q0) - 2 * z0)))


# --- samples with lagged mediators ------------------------------------------------------------

def lag_within_unit(unit: np.ndarray, time: np.ndarray, k: int) -> np.ndarray:
    """Row index of ``(unit, time - k)`` for every row, -1 where that row does not exist.

    ``unit`` holds integer codes and ``time`` integer periods; the lag is by period value,
    so a gap in a unit's years leaves the row after it without a lagged value.
    """
    if k == 0:
        return np.arange(unit.size)
    tmin = int(time.min())
    span = int(time.max()) - tmin + 1
    table = np.full((int(unit.max()) + 1, span), -1, dtype=np.intp)
    table[unit, time - tmin] = np.arange(unit.size)
    back = time - tmin - k
    out = np.full(unit.size, -1, dtype=np.intp)
    ok = back >= 0
    out[ok] = table[unit[ok], back[ok]]
    return out


def mediator_label(mediator: str, lag: int) -> str:
    """Column name of a mediator lagged ``lag`` periods: ``L2.lntech`` (no prefix for 0)."""
    return mediator if lag == 0 else f"L{lag}.{mediator}"


@dataclass(frozen=True)
class _Block:
    """Mediators that share an estimation sample, and that sample's arrays."""

    labels: tuple[str, ...]        # mediator labels (with lag prefix)
    rows: np.ndarray               # panel rows in the sample
    n_dropped: int                 # rows without every lagged value
    arrays: FEArrays               # y = outcome, x = (d, mediators..., controls...)
    unit_index: np.ndarray         # block unit code -> index among the panel's sorted units


# --- the fits ---------------------------------------------------------------------------------

def _subset(arrays: FEArrays, z: np.ndarray, z_names: tuple[str, ...], resp: int,
            cols: list[int]) -> FEArrays:
    """The arrays of one equation: response column ``resp`` of ``z`` on columns ``cols``."""
    return replace(arrays, y=z[:, resp], x=z[:, cols], names=tuple(z_names[j] for j in cols))


@dataclass(frozen=True)
class _Paths:
    """Point estimates of one fit: term -> (estimate, std_error, df, n_obs, n_clusters)."""

    values: dict[str, tuple[float, float, float | None, int, int]]
    notes: tuple[str, ...]
    all_identified: bool

    def coef(self, term: str) -> float:
        return self.values[term][0]


def _equation_sets(n_med: int, k_ctrl: int, equations: str) -> list[tuple[str, int, list[int], int | None]]:
    """Equations of one block as (kind, response column, regressor columns, mediator j).

    Columns index ``[y, d, m_1..m_q, controls]`` (0 = outcome)."""
    ctrl = list(range(2 + n_med, 2 + n_med + k_ctrl))
    eqs: list[tuple[str, int, list[int], int | None]] = [("c", 0, [1, *ctrl], None)]
    for j in range(n_med):
        eqs.append(("a", 2 + j, [1, *ctrl], j))
    if equations == "joint":
        eqs.append(("b", 0, [1, *range(2, 2 + n_med), *ctrl], None))
    else:
        for j in range(n_med):
            eqs.append(("b", 0, [1, 2 + j, *ctrl], j))
    return eqs


def _fit_block(block_arrays: FEArrays, labels: tuple[str, ...], k_ctrl: int, equations: str,
               se: str, ssc: str, dist: str) -> _Paths:
    """Fit every equation of one block with :func:`fit_fe` and collect the path terms.

    ``block_arrays`` holds the outcome as ``y`` and ``(d, mediators..., controls...)`` as
    ``x``. Terms: ``c`` and ``c'`` (joint) or ``c[m]`` and ``c'[m]`` (separate), ``a[m]``,
    ``b[m]``.
    """
    z_cols = np.column_stack([block_arrays.y, block_arrays.x])
    z_names = ("(outcome)", *block_arrays.names)
    out: dict[str, tuple[float, float, float | None, int, int]] = {}
    notes: list[str] = []
    all_ok = True
    n_med = len(labels)

    def record(term: str, res: FEResult, j: int) -> None:
        if not res.fit.keep[j]:
            raise EstimationError(f"{res.names[j]!r} is {res.fit.reasons[j]} in the equation "
                                  f"for {term}: the path is not identified")
        i = res.index(res.names[j])
        out[term] = (float(res.fit.coef[i]), float(np.sqrt(res.cov[i, i])), res.df,
                     res.dof.n_obs, res.dof.n_clusters)

    for kind, resp, cols, j in _equation_sets(n_med, k_ctrl, equations):
        arr = _subset(block_arrays, z_cols, z_names, resp, cols)
        res = fit_fe(arr, se, ssc, dist)
        if not res.fit.keep.all():
            all_ok = False
            notes.extend(f"{n} not identified in the {kind} equation: {r}"
                         for n, r in zip(res.names, res.fit.reasons) if r)
        if kind == "c" and equations == "joint":
            record("c", res, 0)
        elif kind == "c":
            for lab in labels:
                record(f"c[{lab}]", res, 0)
        elif kind == "a":
            record(f"a[{labels[j]}]", res, 0)
        elif equations == "joint":
            record("c'", res, 0)
            for jj in range(n_med):
                record(f"b[{labels[jj]}]", res, 1 + jj)
        else:
            record(f"c'[{labels[j]}]", res, 0)
            record(f"b[{labels[j]}]", res, 1)
    return _Paths(out, tuple(notes), all_ok)


def _coefficients_from_grams(grams: np.ndarray, n_med: int, k_ctrl: int, equations: str,
                             labels: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Every path coefficient for a stack of Gram matrices ``(B, m, m)`` of the within-
    transformed ``[y, d, mediators, controls]``; NaN where a draw's system is singular."""
    out: dict[str, np.ndarray] = {}
    n_draws = grams.shape[0]
    for kind, resp, cols, j in _equation_sets(n_med, k_ctrl, equations):
        gxx = grams[:, cols][:, :, cols]
        gxy = grams[:, cols, resp]
        try:
            beta = np.linalg.solve(gxx, gxy[..., None])[..., 0]
        except np.linalg.LinAlgError:
            beta = np.full((n_draws, len(cols)), np.nan)
            for i in range(n_draws):
                try:
                    beta[i] = np.linalg.solve(gxx[i], gxy[i])
                except np.linalg.LinAlgError:
                    pass
        if kind == "c" and equations == "joint":
            out["c"] = beta[:, 0]
        elif kind == "c":
            for lab in labels:
                out[f"c[{lab}]"] = beta[:, 0]
        elif kind == "a":
            out[f"a[{labels[j]}]"] = beta[:, 0]
        elif equations == "joint":
            out["c'"] = beta[:, 0]
            for jj in range(n_med):
                out[f"b[{labels[jj]}]"] = beta[:, 1 + jj]
        else:
            out[f"c'[{labels[j]}]"] = beta[:, 0]
            out[f"b[{labels[j]}]"] = beta[:, 1]
    return out


# --- bootstrap kernels ------------------------------------------------------------------------


def unit_counts(draws: np.ndarray, n_units: int) -> np.ndarray:
    """How many times each unit appears in each draw, ``(n_boot, n_units)``."""
    n_boot = draws.shape[0]
    flat = (draws + n_units * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_units).reshape(n_boot, n_units).astype(float)


def bootstrap_grams(z: np.ndarray, n_units: int, n_periods: int, counts: np.ndarray) -> np.ndarray:
    """Gram matrices of the two-way within transform of many unit-resampled balanced panels.

    Parameters
    ----------
    z
        ``(n_units * n_periods, m)`` balanced panel, unit-major, periods ascending.
    counts
        ``(B, n_units)`` times each unit is drawn (duplicates are distinct units).

    Notes
    -----
    With ``r_it = z_it - mean_t z_it`` (fixed under resampling: a unit's mean is its own),
    the resampled panel's within transform is ``r_{i t} - rbar*_t`` with ``rbar*_t =
    sum_i w_i r_it / n`` (its period means, counting duplicates), so its Gram matrix is
    ``sum_i w_i S_i - n sum_t rbar*_t rbar*_t'`` with ``S_i = sum_t r_it r_it'``. Exactly the
    Gram matrix of :func:`~estimators.fe.within_balanced` on the stacked resampled arrays.
    """
    m = z.shape[1]
    c = z.reshape(n_units, n_periods, m)
    r = c - c.mean(axis=1, keepdims=True)
    s = np.einsum("itj,itk->ijk", r, r).reshape(n_units, m * m)
    n = counts.sum(axis=1)
    grams = (counts @ s).reshape(-1, m, m)
    rbar = (counts @ r.reshape(n_units, n_periods * m)).reshape(-1, n_periods, m) / n[:, None, None]
    grams -= n[:, None, None] * np.einsum("btj,btk->bjk", rbar, rbar)
    return grams


def bootstrap_grams_general(z: np.ndarray, unit: np.ndarray, time: np.ndarray, n_periods: int,
                            draws: np.ndarray) -> np.ndarray:
    """Gram matrices of the within transform of unit-resampled panels, any panel.

    Each draw stacks the rows of its units (slot ``j`` = unit ``j``; entries -1, units
    without rows in this sample, are skipped) and residualises them on unit and period
    dummies by :func:`~estimators.fe.within_general`.
    """
    n_units = int(unit.max()) + 1
    order = np.argsort(unit, kind="stable")
    starts = np.searchsorted(unit[order], np.arange(n_units + 1))
    rows_of = [order[starts[i]:starts[i + 1]] for i in range(n_units)]
    sizes = np.diff(starts)
    m = z.shape[1]
    out = np.empty((draws.shape[0], m, m))
    for b, row in enumerate(draws):
        row = row[row >= 0]
        if not row.size:
            out[b] = np.nan
            continue
        rows = np.concatenate([rows_of[i] for i in row])
        slot, n_slots = codes_of(np.repeat(np.arange(row.size), sizes[row]))
        zt = within_general(z[rows], slot, time[rows], n_slots, n_periods)
        out[b] = zt.T @ zt
    return out


# --- the estimator ----------------------------------------------------------------------------

@dataclass(frozen=True)
class MediationRun:
    """A mediation fit with its bootstrap: the estimate, the unit draws and every term's
    bootstrap values (``(n_boot, n_terms)``, NaN where a draw could not be fitted)."""

    estimate: Estimate
    units: np.ndarray
    draws: pd.DataFrame


def _old_bootstrap(old: str, n_boot: int | None) -> dict[str, Any]:
    """``bootstrap="cluster"|"stratified"|"none"`` (before the shared vocabulary)."""
    check_choice("bootstrap", old, BOOTSTRAPS)
    if old == "none":
        return {"n_boot": 0}
    return {"stratify": old == "stratified", **({"n_boot": n_boot} if n_boot else {})}


@renamed(lags="mediator_lags", ci="boot_ci", bootstrap=("stratify", _old_bootstrap))
@dataclass(frozen=True)
class Mediation(InferenceOptions):
    """Stepwise (Baron-Kenny) mediation with unit and period fixed effects.

    Parameters
    ----------
    outcome
        Outcome column ``Y``.
    mediators
        Mediator columns ``M`` (default ``("lnes",)``: seed 002 Table 6's energy structure).
    mediator_lags
        Periods each mediator is lagged within unit: one integer for all, or one per
        mediator (seed 002: ``mediators=("lnes", "lntech", "lnis2"),
        mediator_lags=(0, 2, 2)``). Rows without a lagged value are dropped; ``notes`` says
        how many. (Before: ``lags``.)
    controls
        Covariates in every equation. A mediator may not also be a control at lag 0.
    equations
        ``"separate"`` (default; one ``b`` equation per mediator, as Tables 6-8 do, each on
        the sample its lag allows) or ``"joint"`` (one ``b`` equation with all mediators,
        every equation on the sample where all lags exist).
    n_boot
        Cluster-bootstrap draws (default 999); ``0`` gives Sobel normal intervals for the
        indirect effects instead.
    stratify
        Resample units within cohorts, keeping the number of treated units (default
        ``False``: resample units with replacement). (Before: ``bootstrap="cluster"``,
        ``"stratified"`` or ``"none"``, which still work for one release.)
    boot_ci
        Bootstrap interval: ``"percentile"`` (default) or ``"bc"`` (bias-corrected).
        (Before: ``ci``.)
    headline
        ``"indirect"`` (default: the sum of ``a*b`` over the mediators) or a mediator label
        (``"lnes"``, ``"L2.lntech"``) for that mediator's ``a*b``.
    cluster, se, ssc, dist
        Inference for the path coefficients ``a, b, c, c'``, as :class:`~estimators.twfe.TWFE`
        (keyword only, from :class:`~estimators.regression.InferenceOptions`).
    alpha
        Significance level of every interval (keyword only).
    fast
        Use the vectorised bootstrap (identical draws and numbers, pinned by a test);
        ``False`` refits every equation on every resampled panel.

    Notes
    -----
    With unit effects ``alpha_i``, period effects ``lambda_t``, controls ``X`` and the
    mediator ``M*_it = M_{i,t-k}``, on one sample:

    .. math::

        Y_{it} &= \\alpha_i + \\lambda_t + c\\,D_{it} + X_{it}'\\gamma + e_{it} \\\\
        M^*_{it} &= \\alpha^M_i + \\lambda^M_t + a\\,D_{it} + X_{it}'\\delta + u_{it} \\\\
        Y_{it} &= \\alpha'_i + \\lambda'_t + c'\\,D_{it} + b\\,M^*_{it} + X_{it}'\\gamma' + v_{it}

    and the indirect effect is ``a*b``; by the omitted-variable formula ``c = c' + a*b``
    exactly (``c = c' + sum_m a_m b_m`` with ``equations="joint"``).

    Identification. ``c`` and ``a`` are DID contrasts: they need parallel trends and no
    anticipation for ``Y`` and for ``M``. ``b`` and ``c'`` further need *sequential
    ignorability*: given ``D``, the controls and the fixed effects, the mediator is as good
    as random with respect to the outcome's errors -- no unobserved mediator-outcome
    confounder, and no confounder that treatment itself moves. Fixed effects remove only
    time-invariant unit and common-period confounders: an unobserved unit-specific trend
    shared by ``M`` and ``Y`` biases ``b`` and ``a*b`` although ``c`` and ``a`` stay
    unbiased (``simulate.mediators.Channel.trend_sd`` produces one). With heterogeneous
    paths, ``a*b`` is a product of averages, not the average indirect effect.

    Inference. Path SEs follow :class:`~estimators.twfe.TWFE` (cluster-robust, ``ssc``,
    t(G-1) by default). ``a*b`` is not normal in small samples; its interval and p-value
    come from the cluster bootstrap (units resampled with replacement, a unit drawn twice is
    two units with their own fixed effect, every equation refitted; a draw without a treated
    unit is dropped and counted in ``n_boot_failed``), inverted for the p-value. Sobel
    (first-order delta method) and Aroian SEs are reported in ``diagnostics`` and ``terms``;
    both ignore the covariance of ``a`` and ``b`` and assume normality. The pairs cluster
    bootstrap has no small-sample factor: on the 30-province design (six pilots, a channel
    with a = -0.1, b = 0.5) its 95% percentile interval covered the true ``a*b`` in 93.0%
    (+- 0.6%) of 2000 draws, 93.2% with 15 random pilots (BC and Sobel alike: 92-93%), so
    read it as a slightly liberal interval with 30 clusters. With several
    mediators and ``equations="separate"`` the headline sum adds effects estimated in
    different equations (and samples); ``"joint"`` gives ``c - c'``.

    Shares: ``share_total = a*b/(c'+a*b)`` and ``share_direct = a*b/c'`` (seed 002's
    "share", Tables 6-8), see :func:`mediation_shares`.
    """

    outcome: str
    mediators: Sequence[str] = ("lnes",)
    mediator_lags: Sequence[int] = (0,)
    controls: Sequence[str] = ()
    equations: str = "separate"
    n_boot: int = 999
    stratify: bool = False
    boot_ci: str = "percentile"
    headline: str = "indirect"
    fast: bool = True
    label: str = "mediation"

    # --- options ------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """The resampling scheme: ``"cluster"``, ``"stratified"`` or ``"none"`` (n_boot 0)."""
        return "none" if self.n_boot == 0 else "stratified" if self.stratify else "cluster"

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        self._spec()

    def _spec(self) -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...], tuple[str, ...]]:
        """Checked (mediators, lags, labels, controls)."""
        check_choice("equations", self.equations, EQUATIONS)
        check_choice("boot_ci", self.boot_ci, CIS)
        self.check_inference()
        mediators = (self.mediators,) if isinstance(self.mediators, str) else tuple(self.mediators)
        if not mediators:
            raise OptionError("mediators must name at least one column, e.g. mediators=('lnes',)")
        if isinstance(self.mediator_lags, (int, np.integer)):
            lags = (int(self.mediator_lags),) * len(mediators)
        else:
            lags = tuple(self.mediator_lags)
            if len(lags) == 1 and len(mediators) > 1:
                lags = lags * len(mediators)
            if len(lags) != len(mediators):
                raise OptionError(f"mediator_lags={list(lags)} must give one lag per mediator "
                                  f"{list(mediators)} (or one for all)")
        for k in lags:
            if not isinstance(k, (int, np.integer)) or k < 0:
                raise OptionError(f"mediator_lags={list(lags)}: each lag must be an integer >= 0")
        lags = tuple(int(k) for k in lags)
        labels = tuple(mediator_label(m, k) for m, k in zip(mediators, lags))
        if len(set(labels)) != len(labels):
            raise OptionError(f"mediators {list(labels)} list a (mediator, lag) twice")
        controls = tuple(self.controls)
        for m, k in zip(mediators, lags):
            if m in (self.outcome, D):
                raise OptionError(f"mediator {m!r} must differ from the outcome and {D!r}")
            if k == 0 and m in controls:
                raise OptionError(f"mediator {m!r} is also in controls {list(controls)}; "
                                  "list it once, as a mediator")
        if D in controls or self.outcome in controls:
            raise OptionError(f"controls {list(controls)} must not include {D!r} or the outcome")
        if self.headline != "indirect" and self.headline not in labels:
            shown = ", ".join(repr(x) for x in ("indirect", *labels))
            raise OptionError(f"headline={self.headline!r} is not accepted; use one of {shown}")
        if (not isinstance(self.n_boot, (int, np.integer)) or isinstance(self.n_boot, bool)
                or self.n_boot < 0 or self.n_boot == 1):
            raise OptionError(f"n_boot={self.n_boot!r} must be 0 (Sobel intervals) or an "
                              "integer >= 2")
        return mediators, lags, labels, controls

    # --- samples --------------------------------------------------------------------------

    def _blocks(self, panel: pd.DataFrame, mediators: tuple[str, ...], lags: tuple[int, ...],
                labels: tuple[str, ...], controls: tuple[str, ...]) -> tuple[list[_Block], np.ndarray]:
        """One estimation sample per distinct lag (``separate``) or one for all (``joint``)."""
        _, unit, tcode, arrays = check_panel(panel, outcomes=(self.outcome,),
                                             covariates=(*mediators, *controls))
        time = arrays[TIME].astype(np.int64)
        cluster = self.cluster_column
        if cluster is not None and cluster not in panel.columns:
            raise PanelError(f"cluster column {cluster!r} is not in the panel; "
                             f"columns: {list(panel.columns)[:20]}")
        if self.equations == "joint":
            groups = [tuple(range(len(mediators)))]
        else:
            by_lag: dict[int, list[int]] = {}
            for j, k in enumerate(lags):
                by_lag.setdefault(k, []).append(j)
            groups = [tuple(v) for v in by_lag.values()]
        back = {k: lag_within_unit(unit, time, k) for k in set(lags)}
        all_units = np.unique(panel[UNIT].to_numpy())
        blocks = []
        for group in groups:
            ok = np.ones(len(panel), dtype=bool)
            for j in group:
                ok &= back[lags[j]] >= 0
            rows = np.flatnonzero(ok)
            if rows.size == 0:
                raise PanelError(f"no row has every lagged mediator {[labels[j] for j in group]}")
            frame = {UNIT: panel[UNIT].to_numpy()[rows], TIME: time[rows],
                     COHORT: arrays[COHORT][rows], D: arrays[D][rows],
                     self.outcome: arrays[self.outcome][rows]}
            for j in group:
                frame[labels[j]] = arrays[mediators[j]][back[lags[j]][rows]]
            for c in controls:
                frame[c] = arrays[c][rows]
            if cluster is not None and cluster not in frame:
                frame[cluster] = panel[cluster].to_numpy()[rows]
            sample = pd.DataFrame(frame)
            regs = (D, *(labels[j] for j in group), *controls)
            arr = fe_arrays(sample, self.outcome, regs, cluster=cluster)
            block_units = np.unique(sample[UNIT].to_numpy())
            blocks.append(_Block(tuple(labels[j] for j in group), rows, len(panel) - rows.size,
                                 arr, np.searchsorted(all_units, block_units)))
        return blocks, unit

    def _point(self, panel: pd.DataFrame) -> tuple[_Paths, list[_Block], np.ndarray]:
        mediators, lags, labels, controls = self._spec()
        blocks, unit = self._blocks(panel, mediators, lags, labels, controls)
        values: dict[str, Any] = {}
        notes: list[str] = []
        ok = True
        for blk in blocks:
            p = _fit_block(blk.arrays, blk.labels, len(controls), self.equations, self.se,
                           self.ssc, self.dist)
            values.update(p.values)
            notes.extend(p.notes)
            ok &= p.all_identified
        return _Paths(values, tuple(dict.fromkeys(notes)), ok), blocks, unit

    # --- the public surface -----------------------------------------------------------------

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Estimate every path and the indirect effects (see the class docstring)."""
        return self.run(panel, rng).estimate

    @excluding_always_treated
    def run(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> MediationRun:
        """Fit, bootstrap, and keep the bootstrap draws beside the estimate."""
        mediators, lags, labels, controls = self._spec()
        if self.bootstrap != "none" and rng is None:
            raise OptionError(f"n_boot={self.n_boot} (the cluster bootstrap) needs a generator: "
                              "fit(panel, rng=numpy.random.default_rng(...)), or bootstrap='none'")
        paths, blocks, unit = self._point(panel)
        terms = self._term_names(labels, blocks)
        point = self._with_products(paths.values, labels)
        units = np.empty((0, 0), dtype=np.int64)
        boot: dict[str, np.ndarray] = {t: np.empty(0) for t in terms}
        notes = list(paths.notes)
        if self.bootstrap != "none":
            unit_cohort = np.zeros(int(unit.max()) + 1)
            unit_cohort[unit] = panel[COHORT].to_numpy(dtype=float)
            units = draw_units(unit_cohort, self.n_boot, rng, self.bootstrap == "stratified")
            fast = self.fast and paths.all_identified
            if self.fast and not fast:
                notes.append("bootstrap by refitting: the vectorised path needs every regressor "
                             "identified")
            raw = self.fast_draws(blocks, units) if fast else self.slow_draws(panel, units)
            products = self._with_products(raw, labels)
            boot = {t: products[t] for t in terms}
            if self.cluster not in (UNIT, None) and self.se == "cluster":
                notes.append(f"the bootstrap resamples units, not {self.cluster!r} clusters")
        for blk in blocks:
            if blk.n_dropped:
                notes.append(f"{', '.join(blk.labels)}: {blk.n_dropped} row(s) without the lagged "
                             f"value dropped ({len(panel)} -> {blk.rows.size})")
        est = self._estimate(point, paths.values, boot, terms, labels, blocks, panel, notes)
        return MediationRun(est, units, pd.DataFrame(boot, copy=False))

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True values of the terms on a simulated panel, from its truth columns.

        Over the treated cells (``d == 1``) of each term's sample: ``c`` is the mean of
        ``te_<outcome>``; ``a[m]`` the mean of ``te_<m>`` lagged as the mediator is;
        ``a*b[m]`` the mean of ``ie_<outcome>_<m>``; ``b[m] = (a*b)/a``; ``c'`` is ``c``
        minus the indirect effects of the equation's mediators; ``indirect`` the sum of the
        ``a*b``; ``direct`` the mean of ``de_<outcome>`` on the sample every mediator's lag
        allows. A mediator without ``te_<m>`` is one the simulator does not move: its paths
        ``a`` and ``a*b`` are zero (``b`` is then undefined, NaN).
        """
        mediators, lags, labels, controls = self._spec()
        te_col = f"te_{self.outcome}"
        if te_col not in panel.columns:
            raise PanelError(f"truth column {te_col!r} is missing: estimand() needs a simulated "
                             "panel (real data has no truth)")
        _, unit, _, arrays = check_panel(panel, (self.outcome,), (*mediators, *controls))
        time = arrays[TIME].astype(np.int64)
        d = arrays[D] == 1
        te = panel[te_col].to_numpy(dtype=float)
        med_of = dict(zip(labels, mediators))
        lag_of = dict(zip(labels, lags))
        truth: dict[str, float] = {}
        blocks, _ = self._blocks(panel, mediators, lags, labels, controls)

        def ie_of(m: str) -> np.ndarray:
            col = f"ie_{self.outcome}_{m}"
            if col in panel.columns:
                return panel[col].to_numpy(dtype=float)
            if f"te_{m}" in panel.columns:
                raise PanelError(f"truth column {col!r} is missing although {f'te_{m}'!r} is present")
            return np.zeros(len(panel))

        for blk in blocks:
            rows = blk.rows[d[blk.rows]]
            c = float(te[rows].mean()) if rows.size else float("nan")
            if self.equations == "joint":
                truth["c"] = c
            total_ab = 0.0
            for lab in blk.labels:
                m, k = med_of[lab], lag_of[lab]
                src = lag_within_unit(unit, time, k)[rows]
                te_m = panel[f"te_{m}"].to_numpy(dtype=float)[src] if f"te_{m}" in panel.columns \
                    else np.zeros(rows.size)
                a = float(te_m.mean()) if rows.size else float("nan")
                ab = float(ie_of(m)[rows].mean()) if rows.size else float("nan")
                truth[f"a[{lab}]"] = a
                truth[f"a*b[{lab}]"] = ab
                truth[f"b[{lab}]"] = ab / a if a != 0 else float("nan")
                total_ab += ab
                if self.equations == "separate":
                    truth[f"c[{lab}]"] = c
                    truth[f"c'[{lab}]"] = c - ab
            if self.equations == "joint":
                truth["c'"] = c - total_ab
        truth["indirect"] = float(sum(truth[f"a*b[{lab}]"] for lab in labels))
        common = np.ones(len(panel), dtype=bool)
        for k in set(lags):
            common &= lag_within_unit(unit, time, k) >= 0
        cells = common & d
        de_col = f"de_{self.outcome}"
        if de_col in panel.columns:
            truth["direct"] = float(panel[de_col].to_numpy(dtype=float)[cells].mean())
        else:
            truth["direct"] = float(te[cells].mean()
                                    - sum(ie_of(m)[cells].mean() for m in set(mediators)))
        return truth

    # --- bootstrap paths ------------------------------------------------------------------

    def fast_draws(self, blocks: list[_Block], units: np.ndarray) -> dict[str, np.ndarray]:
        """Every path coefficient on every resampled panel, from per-draw Gram matrices."""
        n_all = units.shape[1]
        counts = unit_counts(units, n_all)
        k_ctrl = len(tuple(self.controls))
        out: dict[str, np.ndarray] = {}
        for blk in blocks:
            arr = blk.arrays
            z = np.column_stack([arr.y, arr.x])
            w = counts[:, blk.unit_index]
            if arr.balanced:
                grams = bootstrap_grams(z, arr.n_units, arr.n_periods, w)
            else:
                local = np.full(n_all, -1)
                local[blk.unit_index] = np.arange(blk.unit_index.size)
                grams = bootstrap_grams_general(z, arr.unit, arr.time, arr.n_periods, local[units])
            treated_units = np.zeros(arr.n_units)
            treated_units[arr.unit[arr.x[:, 0] == 1]] = 1.0
            failed = (w @ treated_units) == 0
            grams[failed] = np.eye(z.shape[1])
            coefs = _coefficients_from_grams(grams, len(blk.labels), k_ctrl, self.equations,
                                             blk.labels)
            for t, v in coefs.items():
                v = v.copy()
                v[failed] = np.nan
                out[t] = v
        return out

    def slow_draws(self, panel: pd.DataFrame, units: np.ndarray) -> dict[str, np.ndarray]:
        """The reference path: rebuild each resampled panel (slot ``j`` = unit ``j``) and
        refit every equation with :func:`~estimators.regression.fit_fe`."""
        all_units = np.unique(panel[UNIT].to_numpy())
        ucode = np.searchsorted(all_units, panel[UNIT].to_numpy())
        order = np.argsort(ucode, kind="stable")
        starts = np.searchsorted(ucode[order], np.arange(all_units.size + 1))
        rows_of = [order[starts[i]:starts[i + 1]] for i in range(all_units.size)]
        sizes = np.diff(starts)
        base = panel.reset_index(drop=True)
        out: dict[str, list[float]] = {}
        names: list[str] | None = None
        for b, row in enumerate(units):
            rows = np.concatenate([rows_of[i] for i in row])
            sample = base.iloc[rows].copy()
            sample[UNIT] = np.repeat(np.arange(row.size), sizes[row])
            try:
                paths, _, _ = self._point(sample.reset_index(drop=True))
                vals = {t: v[0] for t, v in paths.values.items()}
            except (DidlabError, np.linalg.LinAlgError):
                vals = {}
            if names is None and vals:
                names = list(vals)
                for t in names:
                    out[t] = [np.nan] * b
            for t in (names or []):
                out[t].append(vals.get(t, np.nan))
        if names is None:
            raise EstimationError("no bootstrap draw could be fitted")
        return {t: np.asarray(v, dtype=float) for t, v in out.items()}

    # --- assembling the result -----------------------------------------------------------

    def _term_names(self, labels: tuple[str, ...], blocks: list[_Block]) -> list[str]:
        names: list[str] = []
        if self.equations == "joint":
            names.append("c")
        for lab in labels:
            if self.equations == "separate":
                names.append(f"c[{lab}]")
            names.extend([f"a[{lab}]", f"b[{lab}]"])
            if self.equations == "separate":
                names.append(f"c'[{lab}]")
            names.append(f"a*b[{lab}]")
        if self.equations == "joint":
            names.append("c'")
        if len(labels) > 1:
            names.append("indirect")
        return names

    @staticmethod
    def _with_products(values: dict[str, Any], labels: tuple[str, ...]) -> dict[str, Any]:
        """Add ``a*b[m]`` and ``indirect`` to coefficient values (scalars or arrays)."""
        coef = {t: (v[0] if isinstance(v, tuple) else v) for t, v in values.items()}
        out = dict(coef)
        total = 0.0
        for lab in labels:
            out[f"a*b[{lab}]"] = coef[f"a[{lab}]"] * coef[f"b[{lab}]"]
            total = total + out[f"a*b[{lab}]"]
        out["indirect"] = total
        return out

    def _estimate(self, point: dict[str, float], paths: dict[str, tuple], boot: dict[str, np.ndarray],
                  terms: list[str], labels: tuple[str, ...], blocks: list[_Block],
                  panel: pd.DataFrame, notes: list[str]) -> Estimate:
        alpha = self.alpha
        n_draws = len(next(iter(boot.values())))
        has_boot = n_draws > 0
        z = critical_value(alpha, None)
        rows: dict[str, list[Any]] = {c: [] for c in (
            "term", "estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high",
            "path", "mediator", "n_obs", "inference", "boot_se", "boot_low", "boot_high",
            "sobel_se", "aroian_se", "classification")}
        path_inf = self.describe_inference(next(iter(paths.values()))[2])
        boot_inf = self._boot_inference()
        n_failed = (int((~np.isfinite(np.column_stack(list(boot.values())))).any(axis=1).sum())
                    if has_boot else 0)
        block_of = {lab: blk for blk in blocks for lab in blk.labels}
        diag: dict[str, Any] = {}
        c_prime_of = {lab: (f"c'[{lab}]" if self.equations == "separate" else "c'") for lab in labels}
        sobel: dict[str, float] = {}
        for t in terms:
            est = float(point[t])
            bd = boot[t]
            bfin = bd[np.isfinite(bd)]
            bse = float(bfin.std(ddof=1)) if bfin.size > 1 else float("nan")
            blo, bhi = bootstrap_interval(bfin, est, alpha, self.boot_ci) if has_boot else (np.nan, np.nan)
            kind = t.split("[")[0]
            lab = t[t.index("[") + 1:-1] if "[" in t else ""
            n_obs = (block_of[lab].rows.size if lab in block_of
                     else (blocks[0].rows.size if len(blocks) == 1 else max(b.rows.size for b in blocks)))
            sob = aro = np.nan
            cls = ""
            if t in paths:
                _, se, df, n_obs, _ = paths[t]
                crit = critical_value(alpha, df)
                row = (est, se, est / se, float(p_value(est / se, df)), est - crit * se,
                       est + crit * se, path_inf)
            else:
                if kind == "a*b":
                    a, sa = paths[f"a[{lab}]"][:2]
                    b, sb = paths[f"b[{lab}]"][:2]
                    sob, aro = sobel_se(a, b, sa, sb), aroian_se(a, b, sa, sb)
                    sobel[lab] = sob
                else:  # the sum: Sobel variance of a sum ignores the cross terms
                    sob = float(np.sqrt(sum(v**2 for v in sobel.values())))
                if has_boot:
                    row = (est, bse, est / bse, bootstrap_p_value(bfin, est, self.boot_ci), blo, bhi, boot_inf)
                else:
                    row = (est, sob, est / sob, float(p_value(est / sob, None)), est - z * sob,
                           est + z * sob, "sobel, normal")
            for c, v in zip(("estimate", "std_error", "statistic", "p_value", "conf_low",
                             "conf_high", "inference"), row):
                rows[c].append(v)
            if kind == "a*b":
                cp = c_prime_of[lab]
                cp_est, cp_se, cp_df = paths[cp][:3]
                cls = classify(row[4], row[5], est, cp_est, float(p_value(cp_est / cp_se, cp_df)), alpha)
                shares = mediation_shares(point[f"a[{lab}]"], point[f"b[{lab}]"], cp_est)
                diag[f"share_total[{lab}]"] = shares["share_total"]
                diag[f"share_direct[{lab}]"] = shares["share_direct"]
                diag[f"sobel_se[{lab}]"] = sob
                diag[f"aroian_se[{lab}]"] = aro
                diag[f"sobel_p[{lab}]"] = float(p_value(est / sob, None)) if sob > 0 else float("nan")
                diag[f"classification[{lab}]"] = cls
            rows["term"].append(t)
            rows["path"].append(kind)
            rows["mediator"].append(lab)
            rows["n_obs"].append(int(n_obs))
            rows["boot_se"].append(bse)
            rows["boot_low"].append(blo)
            rows["boot_high"].append(bhi)
            rows["sobel_se"].append(sob)
            rows["aroian_se"].append(aro)
            rows["classification"].append(cls)
        cols: dict[str, np.ndarray] = {
            c: np.asarray(v, dtype=object if c in ("term", "path", "mediator", "inference",
                                                  "classification") else None)
            for c, v in rows.items()}
        frame = pd.DataFrame(cols, copy=False)
        if self.equations == "joint":
            ind = sum(point[f"a*b[{lab}]"] for lab in labels)
            shares = {"share_total": ind / point["c"] if point["c"] != 0 else float("nan"),
                      "share_direct": ind / point["c'"] if point["c'"] != 0 else float("nan")}
            diag.update(shares)
        if has_boot:
            diag["n_boot"] = float(n_draws)
            diag["n_boot_failed"] = float(n_failed)
            if n_failed:
                notes.append(f"{n_failed} of {n_draws} bootstrap draws could not be fitted "
                             "(no treated unit drawn) and were left out")
        head_t = "indirect" if self.headline == "indirect" else f"a*b[{self.headline}]"
        # one mediator: the headline "indirect" is its a*b
        j = terms.index(head_t if head_t in terms else f"a*b[{labels[0]}]")
        h = {c: rows[c][j] for c in ("estimate", "std_error", "p_value", "conf_low",
                                     "conf_high", "inference")}
        n_obs = int(np.unique(np.concatenate([b.rows for b in blocks])).size)
        dof_clusters = next(iter(paths.values()))[4]
        return Estimate(
            estimator=self.label,
            term=head_t,
            estimate=float(h["estimate"]),
            std_error=float(h["std_error"]),
            p_value=float(h["p_value"]),
            conf_low=float(h["conf_low"]),
            conf_high=float(h["conf_high"]),
            alpha=alpha,
            n_obs=n_obs,
            n_units=int(np.unique(np.concatenate([b.unit_index for b in blocks])).size),
            n_clusters=int(dof_clusters),
            inference=str(h["inference"]),
            terms=frame,
            diagnostics=diag,
            notes=tuple(dict.fromkeys(notes)),
        )

    def _boot_inference(self) -> str:
        what = "units within cohorts" if self.bootstrap == "stratified" else "units"
        return f"cluster bootstrap ({self.n_boot} draws resampling {what}, {self.boot_ci})"


# --- cross-section path --------------------------------------------------------------------------

def cross_section_arrays(data: pd.DataFrame, outcome: str, regressors: Sequence[str]) -> FEArrays:
    """Arrays of a plain OLS regression with an intercept (one unit, one period: the within
    transform is demeaning), for :func:`~estimators.regression.fit_fe`."""
    cols = [outcome, *regressors]
    missing = [c for c in cols if c not in data.columns]
    if missing:
        raise PanelError(f"column {missing[0]!r} is missing; columns present: {list(data.columns)[:20]}")
    values = {}
    for c in cols:
        v = pd.to_numeric(data[c], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(v).all():
            raise PanelError(f"column {c!r} must be numeric without missing values")
        values[c] = v
    n = len(data)
    zeros = np.zeros(n, dtype=np.intp)
    x = np.column_stack([values[c] for c in regressors])
    return FEArrays(y=values[outcome], x=x, names=tuple(regressors), unit=zeros, time=zeros,
                    n_units=1, n_periods=1, balanced=False, clusters=None, n_clusters=0,
                    weights=None)


def stepwise_ols(data: pd.DataFrame, outcome: str, treatment: str, mediators: Sequence[str],
                 controls: Sequence[str] = (), *, equations: str = "separate",
                 se: str = "conventional", alpha: float = 0.05) -> pd.DataFrame:
    """Baron-Kenny paths by plain OLS (intercept, no fixed effects) on any data frame.

    The same equations as :class:`Mediation` without unit and period effects, for
    cross-sections such as Hayes's (2013) examples. ``se`` is ``"conventional"`` (default,
    as Hayes's PROCESS and statsmodels' OLS) or ``"robust"`` (HC1). Returns tidy terms
    ``c, a[m], b[m], c'[m] (or c'), a*b[m]``; the ``a*b`` rows carry the Sobel SE (normal
    p-value and interval) and the ``aroian_se`` column.
    """
    check_choice("equations", equations, EQUATIONS)
    check_choice("se", se, ("conventional", "robust"))
    mediators = (mediators,) if isinstance(mediators, str) else tuple(mediators)
    if not mediators:
        raise OptionError("mediators must name at least one column")
    controls = tuple(controls)
    arr = cross_section_arrays(data, outcome, (treatment, *mediators, *controls))
    paths = _fit_block(arr, mediators, len(controls), equations, se, "stata", "t")
    z = critical_value(alpha, None)
    rows = []
    for t, (est, s, df, n, _) in paths.values.items():
        crit = critical_value(alpha, df)
        rows.append({"term": t, "estimate": est, "std_error": s, "statistic": est / s,
                     "p_value": float(p_value(est / s, df)), "conf_low": est - crit * s,
                     "conf_high": est + crit * s, "aroian_se": np.nan, "n_obs": n})
    for m in mediators:
        a, sa = paths.values[f"a[{m}]"][:2]
        b, sb = paths.values[f"b[{m}]"][:2]
        ab, s = a * b, sobel_se(a, b, sa, sb)
        rows.append({"term": f"a*b[{m}]", "estimate": ab, "std_error": s, "statistic": ab / s,
                     "p_value": float(p_value(ab / s, None)), "conf_low": ab - z * s,
                     "conf_high": ab + z * s, "aroian_se": aroian_se(a, b, sa, sb),
                     "n_obs": len(data)})
    return pd.DataFrame(rows)


__all__ = ["Mediation", "MediationRun", "stepwise_ols", "sobel_se", "aroian_se",
           "mediation_shares", "classify", "bootstrap_interval", "bootstrap_p_value",
           "draw_units", "unit_counts", "bootstrap_grams", "bootstrap_grams_general",
           "lag_within_unit", "mediator_label", "cross_section_arrays"]
