"""Replicate-batched fits: many simulated panels of one design solved at once.

A Monte Carlo design draws panels that share their shape (the same units and periods,
unit-major, balanced): only the outcome, the covariates and, with random pilots, the
treatment change between replicates. On such a batch the two-way within transform is one
linear operator for all replicates (unit and period means of ``(B, units, periods)``
arrays), and the least-squares fits are ``B`` small systems solved together. This module
holds

* :class:`PanelBatch`, the batch a simulator's ``draw_*_batch`` returns (its
  :meth:`PanelBatch.frame` is replicate ``b``'s DataFrame, bit for bit the simulator's
  single draw);
* :func:`batch_fitter`: the batched counterpart of an estimator, or None. The registry
  :data:`BATCH_FITTERS` maps an estimator class to a function that says whether its options
  can be batched and returns the fitter; today :class:`~estimators.twfe.TWFE` (no
  weights, no ``time_by``, no paper terms; ``se`` cluster by unit / robust /
  conventional, any ``ssc``, ``dist`` t / normal) and
  :class:`~estimators.event_study.EventStudy` (the same inference options, a fixed window
  with binned endpoints, Wald or Sidak pre-test). Anything else (CR2, the wild bootstrap,
  the few-treated laws, weights...) has no batched fitter and keeps the per-replicate path.

Every number a batched fit reports equals the estimator's own ``fit`` and ``estimand`` on
that replicate's panel to rounding (``tests/test_batch.py`` pins them at 1e-10 on many
seeds). A replicate the batch cannot reproduce exactly -- a regressor absorbed or
collinear (the per-replicate fit drops it), an outcome the fixed effects explain, an
always-treated unit, a cohort off the period grid, non-finite data -- is marked not
handled, and the caller fits it with the estimator itself.

Two engines (:data:`BATCH_ENGINE`): ``"numba"``, the default, runs compiled loops over
replicates (:mod:`estimators.batch_kernels`): with regressors shared by every replicate (one
assignment and no controls, or a fixed design, ``data.redraw=outcome``) they are demeaned
once and each replicate costs two passes over its observations; with each replicate's own
regressors the kernel demeans them, forms the Gram matrix and makes the per-replicate
fit's absorbed / collinear tests itself. ``"numpy"`` is the reference: array operations
over the whole batch. They agree to rounding (1e-12).

Reproducibility: the batched numbers of a replicate do not depend on how many replicates
share its batch. The kernels visit one replicate's observations in a fixed order; on the
numpy path the arithmetic is element-wise, reductions run along one replicate's own axes,
the small products are ``einsum`` contractions (no BLAS call whose blocking could depend on
the batch) and the ``K x K`` inverses are LAPACK calls made matrix by matrix. Which path a
replicate takes (shared or own regressors) is decided by the design -- whether the
simulator stores the treatment and controls once -- never by the batch's contents.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import special

from .event_study import EventStudy
from .fe import ABSORB_TOL, COLLINEAR_TOL, Dof, reference_df, ssc_factor
from .panel import COHORT, D, TIME, UNIT, check_choice
from .result import critical_value, p_value
from .twfe import TWFE


@dataclass(frozen=True)
class PanelBatch:
    """Replicates of one simulated design, column by column.

    Attributes
    ----------
    columns
        Column name -> ``(B, n_obs)`` array (one row per replicate) or ``(n_obs,)`` array
        (the same in every replicate: ``unit``, ``time``, labels), in the panel's column
        order.
    n_units, n_periods
        The balanced grid: rows are unit-major, periods ascending within a unit.
    """

    columns: Mapping[str, np.ndarray]
    n_units: int
    n_periods: int

    @property
    def n_reps(self) -> int:
        """Number of replicates ``B``."""
        for v in self.columns.values():
            if v.ndim == 2:
                return int(v.shape[0])
        raise ValueError("a batch needs at least one column that varies over replicates")

    @property
    def n_obs(self) -> int:
        return self.n_units * self.n_periods

    def has(self, name: str) -> bool:
        return name in self.columns

    def column(self, name: str) -> np.ndarray:
        """``(B, n_obs)`` values of ``name`` (a shared column is broadcast, not copied)."""
        v = self.columns[name]
        return v if v.ndim == 2 else np.broadcast_to(v, (self.n_reps, v.shape[0]))

    def frame(self, b: int) -> pd.DataFrame:
        """Replicate ``b`` as the DataFrame the simulator's single draw returns."""
        return pd.DataFrame({n: (v if v.ndim == 1 else v[b]) for n, v in self.columns.items()})


@dataclass(frozen=True)
class BatchEstimates:
    """What a batched fit reports for the replicates it handled (``B`` rows each).

    Attributes
    ----------
    handled
        ``(B,)`` bool: replicates fitted here; the others must be fitted one by one.
    term
        Name of the headline (``ATT``, ``ATT_post``).
    headline
        ``estimate, std_error, statistic, p_value, conf_low, conf_high`` -> ``(B,)``
        (NaN where not handled).
    alpha, n_obs, n_clusters
        As :class:`~estimators.result.Estimate` (the same for every handled replicate).
    diagnostics
        ``(B,)`` arrays by name (``pretrend_p`` for the event study).
    term_names
        The terms of the fit's ``terms`` frame, in its order.
    terms
        The same six statistics -> ``(B, len(term_names))``.
    truth
        The estimand by term -> ``(B,)`` (empty when the batch carries no truth column).
    """

    handled: np.ndarray
    term: str
    headline: Mapping[str, np.ndarray]
    alpha: float
    n_obs: int
    n_clusters: int
    diagnostics: Mapping[str, np.ndarray]
    term_names: tuple[str, ...]
    terms: Mapping[str, np.ndarray]
    truth: Mapping[str, np.ndarray]


STATS = ("estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high")


@dataclass(frozen=True)
class _Grid:
    """The balanced grid a batch sits on, and the cohort of each replicate's units."""

    n_units: int
    n_periods: int
    times: np.ndarray          # (T,) the periods, ascending
    cohort: np.ndarray         # (B, N) first treated period, 0 = never; (1, N) when shared
    ok: np.ndarray             # (B,) replicates whose shape the batch reproduces


def _grid(batch: PanelBatch) -> _Grid | None:
    """Check the batch's shared index (balanced, unit-major, periods ascending and regular)
    and read each replicate's cohorts; None when the batch cannot be fitted as one."""
    cols = batch.columns
    if not all(c in cols for c in (UNIT, TIME, COHORT, D)):
        return None
    unit, time = cols[UNIT], cols[TIME]
    if unit.ndim != 1 or time.ndim != 1:
        return None
    n, t = batch.n_units, batch.n_periods
    times = time[:t].astype(float)
    steps = np.diff(times)
    if (unit.shape[0] != n * t or t < 2 or not np.all(steps > 0)
            or not np.all(steps == steps[0])
            or not np.array_equal(time, np.tile(time[:t], n))
            or not np.all(np.diff(unit.reshape(n, t)[:, 0]) > 0)
            or not np.all(unit.reshape(n, t) == unit.reshape(n, t)[:, :1])):
        return None
    # a design with one assignment stores cohort and d once: checked once, cohort (1, N)
    rows = 1 if _shared(batch, (COHORT, D)) else batch.n_reps
    cohort_rows = batch.column(COHORT)[:rows].reshape(rows, n, t)
    cohort = cohort_rows[:, :, 0]
    ok = np.all(cohort_rows == cohort[:, :, None], axis=(1, 2))
    c = cohort.astype(float)
    treated = c > 0
    # always-treated units (the estimators drop them), cohorts off the period grid (event
    # time undefined) and no treated unit at all take the per-replicate path
    pos = np.where(treated, (c - times[0]) / steps[0], 0.0)
    ok &= ~np.any(treated & (c <= times[0]), axis=1)
    ok &= np.all(pos == np.round(pos), axis=1)
    ok &= treated.any(axis=1)
    d = batch.column(D)[:rows].reshape(rows, n, t)
    expect = treated[:, :, None] & (time[None, :t] >= cohort[:, :, None])
    ok &= np.all((d == 1) == expect, axis=(1, 2)) & np.all((d == 0) | (d == 1), axis=(1, 2))
    return _Grid(n, t, time[:t], cohort, np.broadcast_to(ok, (batch.n_reps,)).copy())


def _within(z: np.ndarray) -> np.ndarray:
    """Two-way within transform of ``(..., N, T)`` arrays (a replicate's, or a regressor's,
    unit-by-period table on the last two axes): ``z - unit mean - period mean + grand
    mean``, each table on its own."""
    unit_mean = z.mean(axis=-1, keepdims=True)
    time_mean = z.mean(axis=-2, keepdims=True)
    grand = unit_mean.mean(axis=-2, keepdims=True)
    return z - unit_mean - time_mean + grand


#: engines of the batched fits: "numba" (compiled loops over replicates,
#: :mod:`estimators.batch_kernels`; the fast path) and "numpy" (the reference, array
#: operations over the batch). They agree to rounding (1e-12, ``tests/test_batch.py``);
#: each replicate's numbers are its own in both, whatever the batch.
BATCH_ENGINES = ("numba", "numpy")
BATCH_ENGINE = "numba" if importlib.util.find_spec("numba") is not None else "numpy"


def _kernels() -> Any:
    """:mod:`estimators.batch_kernels` (numba's compiled kernels), imported on first use."""
    from . import batch_kernels

    return batch_kernels


def _fe_ols(y: np.ndarray, x: np.ndarray, ok: np.ndarray, opts: Any, shared: bool
            ) -> dict[str, Any]:
    """Batched two-way FE least squares of ``y (B, N, T)`` on ``x (B, K, N, T)``, or, with
    ``shared`` (every replicate has the same regressors, a property of the design), on
    ``x (1, K, N, T)``.

    Returns coefficients ``(B, K)``, covariance ``(B, K, K)`` (the options' convention),
    the reference law's degrees of freedom and the counts, and ``ok`` narrowed to the
    replicates whose fit the per-replicate path makes with every regressor kept (nothing
    absorbed or collinear: :func:`estimators.fe.ols_fe`'s tests) and an outcome with
    within variation left (:func:`estimators.regression.fit_fe`'s).
    """
    b_n, n, t = y.shape
    m, k = x.shape[0], x.shape[1]
    o = n * t
    if m != (1 if shared else b_n):
        raise ValueError(f"shared={shared} with regressors for {m} of {b_n} replicates")
    check_choice("BATCH_ENGINE", BATCH_ENGINE, BATCH_ENGINES)
    se, ssc, dist = opts.se, opts.ssc, opts.dist
    clustered = se == "cluster"
    dof = Dof(n_obs=o, k=k, n_units=n, n_periods=t, n_clusters=n if clustered else 0,
              unit_nested=clustered, time_nested=clustered and t == 1)
    factor = ssc_factor(se, ssc, dof)
    df = reference_df(se, dist, dof)
    if BATCH_ENGINE == "numba" and not shared:
        kern = _kernels()
        coef, cov, kept = kern.fe_ols_own(
            np.ascontiguousarray(y, dtype=np.float64), np.ascontiguousarray(x, dtype=np.float64),
            kern.MODES[se], float(factor), ABSORB_TOL, COLLINEAR_TOL)
        return {"coef": coef, "cov": cov, "df": df, "ok": ok & kept, "dof": dof}
    xt = _within(x).reshape(m, k, o)
    # contractions over observations run along the contiguous last axis, one replicate's
    # sums each
    gram = np.einsum("bko,blo->bkl", xt, xt, optimize=False)            # (m, K, K)
    diag = np.einsum("bkk->bk", gram)
    raw = x.reshape(m, k, o)
    raw_c = raw - raw.mean(axis=2, keepdims=True)
    raw_norm = np.einsum("bko,bko->bk", raw_c, raw_c, optimize=False)
    good = ~((raw_norm == 0)
             | (diag <= ABSORB_TOL * np.where(raw_norm > 0, raw_norm, 1.0))).any(axis=1)
    safe = np.where(good[:, None, None], gram, np.eye(k))
    try:
        chol = np.linalg.cholesky(safe)
        piv = np.einsum("bkk->bk", chol) ** 2
    except np.linalg.LinAlgError:  # some replicate's Gram matrix is singular: one by one
        piv = np.zeros_like(diag)
        for i in np.flatnonzero(good):
            try:
                piv[i] = np.diag(np.linalg.cholesky(gram[i])) ** 2
            except np.linalg.LinAlgError:
                good[i] = False
    good &= np.all(piv > COLLINEAR_TOL * diag, axis=1)
    ok = ok & good                                                      # (B,) with m = 1 too
    safe = np.where(good[:, None, None], gram, np.eye(k))
    bread = np.linalg.inv(safe)                                         # (m, K, K)
    if shared and BATCH_ENGINE == "numba":
        kern = _kernels()
        coef, cov, varies = kern.fe_ols_shared(
            np.ascontiguousarray(y, dtype=np.float64),
            np.ascontiguousarray(np.moveaxis(xt[0].reshape(k, n, t), 0, -1)),
            np.ascontiguousarray(bread[0]), kern.MODES[se], float(factor))
        return {"coef": coef, "cov": cov, "df": df, "ok": ok & varies, "dof": dof}
    yt = _within(y).reshape(b_n, o)
    scale = np.max(np.abs(y.reshape(b_n, o)), axis=1)
    ok = ok & np.any(np.abs(yt) > 1e-10 * np.maximum(scale, 1e-300)[:, None], axis=1)
    if shared:
        xty = np.einsum("ko,bo->bk", xt[0], yt, optimize=False)
        coef = np.einsum("kl,bl->bk", bread[0], xty, optimize=False)
    else:
        xty = np.einsum("bko,bo->bk", xt, yt, optimize=False)
        coef = np.einsum("bkl,bl->bk", bread, xty, optimize=False)
    resid = yt.copy()
    for j in range(k):  # y - X b, one regressor at a time (element-wise)
        resid -= coef[:, j:j + 1] * xt[:, j]
    bread_b = np.broadcast_to(bread, (b_n, k, k))
    if se == "conventional":
        rss = np.einsum("bo,bo->b", resid, resid, optimize=False)
        cov = bread_b * (rss * factor)[:, None, None]
    else:
        scores = xt * resid[:, None, :]                                 # (B, K, O)
        if clustered:  # clusters are the units: sum each unit's periods
            scores = scores.reshape(b_n, k, n, t).sum(axis=3)
        meat = np.einsum("bkg,blg->bkl", scores, scores, optimize=False)
        half = np.einsum("bkl,blm->bkm", bread_b, meat, optimize=False)
        cov = factor * np.einsum("bkm,bmn->bkn", half, bread_b, optimize=False)
    # C order whatever path made them: einsum kernels (and so roundings) follow the layout
    return {"coef": np.ascontiguousarray(coef), "cov": np.ascontiguousarray(cov), "df": df,
            "ok": ok, "dof": dof}


def _stats(est: np.ndarray, se: np.ndarray, alpha: float, df: float | None
           ) -> dict[str, np.ndarray]:
    """The six statistics of ``terms_frame`` (and of a headline with ``se > 0``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.where(se > 0, est / se, np.nan)
    crit = critical_value(alpha, df)
    return {"estimate": est, "std_error": se, "statistic": stat,
            "p_value": np.asarray(p_value(stat, df), dtype=float),
            "conf_low": est - crit * se, "conf_high": est + crit * se}


def _controls(batch: PanelBatch, names: Sequence[str], shape: tuple[int, int, int],
              shared: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    """Control columns as ``(B, N, T)`` arrays (``(1, N, T)`` with ``shared``: every
    replicate's are the same) and the replicates where all are finite."""
    rows = 1 if shared else shape[0]
    out = [(batch.columns[c] if shared else batch.column(c)).astype(float, copy=False)
           .reshape((rows, *shape[1:])) for c in names]
    ok = np.ones(shape[0], dtype=bool)
    for c in out:
        ok &= np.isfinite(c).all(axis=(1, 2))
    return out, ok


def _shared(batch: PanelBatch, names: Sequence[str]) -> bool:
    """Whether the columns ``names`` are stored once for every replicate: a property of the
    design (a fixed assignment, ``data.redraw=outcome``), never of the batch's contents, so
    that which path a replicate takes does not depend on its batch."""
    return all(batch.columns[c].ndim == 1 for c in names)


def _mask_stats(values: Mapping[str, np.ndarray], ok: np.ndarray) -> dict[str, np.ndarray]:
    shape = (-1,) + (1,) * (next(iter(values.values())).ndim - 1)
    return {c: np.where(ok.reshape(shape), v, np.nan) for c, v in values.items()}


def _inference_supported(est: Any) -> bool:
    """Options with an analytic law: se cluster (by unit) / robust / conventional and dist
    t / normal, no weights."""
    return (est.se in ("cluster", "robust", "conventional") and est.dist in ("t", "normal")
            and (est.se != "cluster" or est.cluster == UNIT)
            and getattr(est, "weights", None) is None)


def fit_twfe_batch(est: TWFE, batch: PanelBatch) -> BatchEstimates | None:
    """:meth:`TWFE.fit <estimators.twfe.TWFE.fit>` and ``estimand`` on every replicate of
    ``batch`` (None: the batch's index is not a balanced grid)."""
    grid = _grid(batch)
    if grid is None or not batch.has(est.outcome):
        return None
    b_n, n, t = batch.n_reps, grid.n_units, grid.n_periods
    shape = (b_n, n, t)
    y = batch.column(est.outcome).astype(float, copy=False).reshape(shape)
    ok = grid.ok & np.isfinite(y).all(axis=(1, 2))
    # a design with one assignment (and fixed controls) stores them once: the regressors
    # are then shared by every replicate, demeaned once
    shared = _shared(batch, (D, *est.controls))
    controls, finite = _controls(batch, tuple(est.controls), shape, shared)
    ok &= finite
    d_all = batch.column(D)
    rows = 1 if shared else b_n
    x = np.stack([d_all[:rows].astype(float).reshape(rows, n, t), *controls], axis=1)
    fit = _fe_ols(y, x, ok, est, shared)
    ok = fit["ok"]
    var = np.einsum("bkk->bk", fit["cov"])
    se = np.sqrt(np.maximum(var, 0.0))
    terms = _mask_stats(_stats(fit["coef"], se, est.alpha, fit["df"]), ok)
    head = {c: v[:, 0] for c, v in terms.items()}
    truth: dict[str, np.ndarray] = {}
    te_col = f"te_{est.outcome}"
    if batch.has(te_col):
        te = batch.column(te_col)
        treated = batch.column(D) == 1
        with np.errstate(invalid="ignore", divide="ignore"):
            truth["ATT"] = np.where(treated, te, 0.0).sum(axis=1) / treated.sum(axis=1)
    return BatchEstimates(ok, "ATT", head, est.alpha, n * t, fit["dof"].n_clusters, {},
                          (D, *est.controls), terms, truth)


def fit_event_study_batch(est: EventStudy, batch: PanelBatch) -> BatchEstimates | None:
    """:meth:`EventStudy.fit <estimators.event_study.EventStudy.fit>` and ``estimand`` on
    every replicate of ``batch`` (None: not a balanced grid)."""
    grid = _grid(batch)
    if grid is None or not batch.has(est.outcome):
        return None
    b_n, n, t = batch.n_reps, grid.n_units, grid.n_periods
    shape = (b_n, n, t)
    leads, lags, ref = int(est.leads), int(est.lags), est.ref
    if not -leads <= ref <= lags:
        return None
    y = batch.column(est.outcome).astype(float, copy=False).reshape(shape)
    ok = grid.ok & np.isfinite(y).all(axis=(1, 2))
    same = _shared(batch, (COHORT, *est.controls))
    controls, finite = _controls(batch, tuple(est.controls), shape, same)
    ok &= finite
    times_f = grid.times.astype(float)
    step = times_f[1] - times_f[0]
    treated = grid.cohort > 0
    pos_c = np.where(treated, (grid.cohort - times_f[0]) / step, 0.0)
    rel = np.arange(t)[None, None, :] - pos_c[:, :, None]             # (B, N, T)
    k = np.clip(rel, -leads, lags)                                    # binned endpoints
    event_times = [e for e in range(-leads, lags + 1) if e != ref]
    names = [f"ev{e:+d}" for e in event_times]
    src = slice(0, 1) if same else slice(None)   # one assignment: event dummies shared
    rows = 1 if same else b_n
    dummies = [np.broadcast_to((treated[src, :, None] & (k[src] == e)).astype(float),
                               (rows, n, t)) for e in event_times]
    x = np.stack([*dummies, *controls], axis=1)
    fit = _fe_ols(y, x, ok, est, same)
    ok = fit["ok"]
    coef, cov, df = fit["coef"], fit["cov"], fit["df"]
    se_terms = np.sqrt(np.maximum(np.einsum("bkk->bk", cov), 0.0))
    terms = _stats(coef, se_terms, est.alpha, df)
    n_ev = len(event_times)
    post = [j for j, e in enumerate(event_times) if e >= 0]
    pre = [j for j, e in enumerate(event_times) if e < 0]
    w = np.zeros(coef.shape[1])
    w[post] = 1.0 / len(post)
    h_est = np.einsum("bk,k->b", coef, w, optimize=False)
    h_se = np.sqrt(np.maximum(np.einsum("k,bkl,l->b", w, cov, w, optimize=False), 0.0))
    head = _stats(h_est, h_se, est.alpha, df)
    head["p_value"] = np.where(h_se > 0, head["p_value"], np.nan)
    diagnostics: dict[str, np.ndarray] = {}
    if pre:
        bp = np.ascontiguousarray(coef[:, pre])
        vp = np.ascontiguousarray(cov[:, pre][:, :, pre])
        safe = np.where(ok[:, None, None], vp, np.eye(len(pre)))
        q = len(pre)
        sol = np.ascontiguousarray(np.linalg.solve(safe, bp[..., None])[..., 0])
        wald = np.einsum("bk,bk->b", bp, sol, optimize=False) / q
        p = special.chdtrc(q, wald * q) if df is None else special.fdtrc(q, df, wald)
        p_min = np.min(terms["p_value"][:, pre], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            sidak = np.where(p_min < 1, -np.expm1(q * np.log1p(-p_min)), 1.0)
        diagnostics["pretrend_p"] = np.where(ok, p if est.pretest == "wald" else sidak, np.nan)
    truth: dict[str, np.ndarray] = {}
    te_col = f"te_{est.outcome}"
    if batch.has(te_col):
        te = batch.column(te_col).reshape(shape)

        if _shared(batch, (COHORT, D)):  # one assignment: each event time's cells, once
            masks = np.stack([(treated[0, :, None] & (k[0] == e)).ravel()
                              for e in (ref, *event_times)]).astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                means = (np.einsum("bo,eo->be", te.reshape(b_n, n * t), masks, optimize=False)
                         / masks.sum(axis=1))
            for j, name in enumerate(names, start=1):
                truth[name] = means[:, j] - means[:, 0]
        else:
            def mean_at(e: int) -> np.ndarray:
                m = treated[:, :, None] & (k == e)
                with np.errstate(invalid="ignore", divide="ignore"):
                    return np.where(m, te, 0.0).sum(axis=(1, 2)) / m.sum(axis=(1, 2))

            base = mean_at(ref)
            for e, name in zip(event_times, names):
                truth[name] = mean_at(e) - base
        with np.errstate(invalid="ignore"), __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore", RuntimeWarning)
            truth["ATT_post"] = np.nanmean(np.stack([truth[names[j]] for j in post]), axis=0)
    term_names = (*names, *est.controls)
    assert len(term_names) == n_ev + len(controls)
    return BatchEstimates(ok, "ATT_post", _mask_stats(head, ok), est.alpha, n * t,
                          fit["dof"].n_clusters, diagnostics, term_names,
                          _mask_stats(terms, ok), truth)


def _twfe_batchable(est: TWFE) -> bool:
    return (_inference_supported(est) and not est.paper_terms and est.time_by is None)


def _event_study_batchable(est: EventStudy) -> bool:
    return (_inference_supported(est) and est.leads is not None and est.lags is not None
            and est.bin_endpoints and est.ref < 0)


#: estimator class -> (whether an instance's options can be batched, the batched fit). An
#: exact class match: a subclass may change ``fit``.
BATCH_FITTERS: dict[type, tuple[Callable[[Any], bool],
                                Callable[[Any, PanelBatch], BatchEstimates | None]]] = {
    TWFE: (_twfe_batchable, fit_twfe_batch),
    EventStudy: (_event_study_batchable, fit_event_study_batch),
}


def batch_fitter(estimator: Any) -> Callable[[PanelBatch], BatchEstimates | None] | None:
    """The batched fit of ``estimator`` (``batch -> BatchEstimates``, or None when a batch
    is not a balanced grid), or None when its class or options have none: it is then fitted
    replicate by replicate. An estimator that draws random numbers never has one."""
    entry = BATCH_FITTERS.get(type(estimator))
    if entry is None:
        return None
    can, fit = entry
    try:
        estimator.check()
    except Exception:  # an invalid estimator fails in its own fit, with its own message
        return None
    if getattr(estimator, "uses_rng", lambda: False)() or not can(estimator):
        return None
    return lambda batch: fit(estimator, batch)
