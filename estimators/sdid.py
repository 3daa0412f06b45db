"""Synthetic difference-in-differences (Arkhangelsky, Athey, Hirshberg, Imbens and Wager
2021, AER), a port of R ``synthdid`` 0.0.9 (Algorithm 1 and the variance Algorithms 2-4),
with staggered adoption handled cohort by cohort as Stata ``sdid`` does (Clarke, Pailanir,
Athey and Imbens 2023).

The weights are found by synthdid's Frank-Wolfe solver with exact line search
(``sc.weight.fw``): unit weights ``omega`` with an intercept and the ridge ``zeta_omega^2 =
((N_tr T_post)^(1/4) sigma)^2``, time weights ``lambda`` with an intercept and the tiny
ridge ``zeta_lambda = 1e-6 sigma``, ``sigma`` the standard deviation of the first
differences of the never-treated units' pre-period outcomes; 100 iterations, then the
sparsify step (weights below a quarter of the largest set to zero), then at most 10,000
iterations, stopping when an iteration lowers the objective by less than ``(1e-5
sigma)^2``. :func:`fw_batch` runs many such problems at once (placebo and bootstrap
replications, padded to a common shape for the bootstrap's draws of varying size) with
each problem's own stopping rule, so every replication is the solution synthdid would
compute for it. The iterations run compiled (numba; ``engine="numba"``, the default) or
vectorised in numpy (``engine="numpy"``, the reference the compiled loop is tested
against: same operations in the same order, same iterates and iteration counts).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .panel import (EstimationError, OptionError, check_alpha, check_choice, check_count,
                    excluding_always_treated)
from .result import Estimate, critical_value, p_value
from .synth import (Blocks, cohort_blocks, event_coefficients, event_positions,
                    treated_event_truth)

VARIANCES = ("placebo", "bootstrap", "jackknife")


# --- Frank-Wolfe, many problems at once ------------------------------------------------------
#
# Two engines run the same iterations: "numpy" (the reference: every problem of the batch
# advanced together by vectorised updates, converged problems dropped from the working set)
# and "numba" (the default: one compiled loop per problem). Both start from the same
# precomputed Gram quantities (_fw_prepare) and apply the same floating-point operations in
# the same order, so their iterates agree to rounding (in practice bit for bit) and they stop
# at the same iteration; tests/test_synth.py pins one to the other.

FW_ENGINES = ("numba", "numpy")
#: Engine used when ``engine=None``: "numba" when numba is installed (a runtime dependency),
#: else "numpy". numba is imported on the first compiled solve, not with didlab.
FW_ENGINE = "numba" if importlib.util.find_spec("numba") is not None else "numpy"


@dataclass(frozen=True)
class _FWStart:
    """Everything an iteration reads, for a batch of ``nb`` problems with ``t0`` columns:
    ``G = A'A`` (``gram``), ``h = A'b``, ``b'b``, the ridge ``eta = N zeta^2`` per problem,
    the valid row count ``N`` and column count, and the start ``x`` with ``G x``, ``x'x``,
    ``h'x``, ``x'G x``."""

    gram: np.ndarray
    h: np.ndarray
    bb: np.ndarray
    eta: np.ndarray
    n_rows: np.ndarray
    n_cols: np.ndarray
    x: np.ndarray
    gx: np.ndarray
    xx: np.ndarray
    hx: np.ndarray
    xgx: np.ndarray


def _fw_prepare(y: np.ndarray, zeta: float, init: np.ndarray, row_mask: np.ndarray | None,
                intercept: bool, n_cols: np.ndarray | None) -> _FWStart:
    y = np.array(y, dtype=float, copy=True)
    nb, n, tp1 = y.shape
    t0 = tp1 - 1
    if row_mask is None:
        row_mask = np.ones((nb, n), dtype=bool)
    m = row_mask[:, :, None].astype(float)
    n_rows = row_mask.sum(axis=1).astype(float)
    if intercept:
        y = y - (y * m).sum(axis=1, keepdims=True) / n_rows[:, None, None]
    y *= m
    a, b = y[:, :, :t0], y[:, :, t0]
    x = np.array(init, dtype=float, copy=True)
    if n_cols is None:
        n_cols = np.full(nb, t0, dtype=np.int64)
    else:
        # padded columns must be zero in A and in the start (they never enter the support)
        n_cols = np.asarray(n_cols, dtype=np.int64)
        pad = np.arange(t0)[None, :] >= n_cols[:, None]
        a = np.where(pad[:, None, :], 0.0, a)
        x = np.where(pad, 0.0, x)
    gram = np.einsum("bnt,bns->bts", a, a)
    h = np.einsum("bnt,bn->bt", a, b)
    gx = np.einsum("bts,bs->bt", gram, x)
    return _FWStart(gram=gram, h=h, bb=np.einsum("bn,bn->b", b, b), eta=n_rows * zeta ** 2,
                    n_rows=n_rows, n_cols=n_cols, x=x, gx=gx,
                    xx=np.einsum("bt,bt->b", x, x), hx=np.einsum("bt,bt->b", h, x),
                    xgx=np.einsum("bt,bt->b", x, gx))


def _fw_numpy(s: _FWStart, z2: float, min_decrease: float, max_iter: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """The reference engine: every problem still iterating advanced together."""
    nb, t0 = s.x.shape
    x_out = s.x.copy()
    iters = np.zeros(nb, dtype=np.int64)
    work = np.arange(nb)                 # problems still iterating
    x, gx, xx, hx, xgx = s.x.copy(), s.gx, s.xx, s.hx, s.xgx
    g_flat = s.gram.reshape(nb, -1)
    diag = np.einsum("btt->bt", s.gram)
    padded = s.n_cols < t0
    col_ok = np.arange(t0)[None, :] < s.n_cols[:, None]
    eta, nr, bbw, hw, dg, okw = s.eta, s.n_rows, s.bb, s.h, diag, col_ok
    cur = np.full(nb, np.nan)
    it = 0
    while it < max_iter and work.size:
        it += 1
        k = work.size
        r = np.arange(k)
        half_grad = gx - hw + eta[:, None] * x
        if padded.any():
            half_grad = np.where(okw, half_grad, np.inf)
        i = np.argmin(half_grad, axis=1)                      # first minimum, as which.min
        xi, gxi, hgi, hi = x[r, i], gx[r, i], half_grad[r, i], hw[r, i]
        num = -(hgi - (xgx - hx + eta * xx))                  # -half_grad . (e_i - x)
        dxdx = xx - 2 * xi + 1.0
        den = dg[r, i] - 2 * gxi + xgx + eta * dxdx           # |A(e_i - x)|^2 + eta |dx|^2
        step = np.where((dxdx > 0) & (den > 0),
                        np.clip(num / np.where(den > 0, den, 1.0), 0.0, 1.0), 0.0)
        q = 1.0 - step
        gii = dg[r, i]
        xx = q * q * xx + 2 * step * q * xi + step * step
        hx = q * hx + step * hi
        xgx = q * q * xgx + 2 * step * q * gxi + step * step * gii
        x *= q[:, None]
        x[r, i] += step
        row_i = g_flat[work[:, None], i[:, None] * t0 + np.arange(t0)]    # G[i, :]
        gx = q[:, None] * gx + step[:, None] * row_i
        val = z2 * xx + (xgx - 2 * hx + bbw) / nr
        if it >= 2:
            go = (cur - val) > min_decrease ** 2
        else:
            go = np.ones(k, dtype=bool)
        cur = val
        if not go.all():
            x_out[work[~go]] = x[~go]
            iters[work[~go]] = it
            work, x, gx, xx, hx, xgx, cur = (work[go], x[go], gx[go], xx[go], hx[go],
                                               xgx[go], cur[go])
            eta, nr, bbw, hw, dg, okw = (s.eta[work], s.n_rows[work], s.bb[work], s.h[work],
                                         diag[work], col_ok[work])
    x_out[work] = x
    iters[work] = it
    return x_out, iters


def _fw_loop(gram, h, bb, eta, n_rows, n_cols, x0, gx0, xx0, hx0, xgx0, z2, min_dec2,
             max_iter):  # pragma: no cover - compiled by numba (the body is run as Python
    #                      only when numba is missing, and then _fw_numpy is used instead)
    """The numba engine: each problem on its own, the operations of :func:`_fw_numpy` in
    the same order (no fastmath: no reassociation, no fused multiply-add)."""
    nb, t0 = x0.shape
    x_out = x0.copy()
    iters = np.zeros(nb, dtype=np.int64)
    gx = np.empty(t0)
    for b in range(nb):
        x = x_out[b]
        nc = n_cols[b]
        for j in range(nc):
            gx[j] = gx0[b, j]
        xx, hx, xgx = xx0[b], hx0[b], xgx0[b]
        e, nr, bbb = eta[b], n_rows[b], bb[b]
        g, hb = gram[b], h[b]
        cur = np.nan
        it = 0
        while it < max_iter:
            it += 1
            # argmin of the half gradient, first minimum (which.min)
            i = 0
            hgi = (gx[0] - hb[0]) + e * x[0]
            for j in range(1, nc):
                v = (gx[j] - hb[j]) + e * x[j]
                if v < hgi:
                    hgi = v
                    i = j
            xi, gxi, hi, gii = x[i], gx[i], hb[i], g[i, i]
            num = -(hgi - ((xgx - hx) + e * xx))
            dxdx = (xx - 2 * xi) + 1.0
            den = ((gii - 2 * gxi) + xgx) + e * dxdx
            step = 0.0
            if dxdx > 0 and den > 0:
                step = min(max(num / den, 0.0), 1.0)
            q = 1.0 - step
            xx = (q * q * xx + 2 * step * q * xi) + step * step
            hx = q * hx + step * hi
            xgx = (q * q * xgx + 2 * step * q * gxi) + step * step * gii
            for j in range(nc):
                x[j] *= q
            x[i] += step
            for j in range(nc):
                gx[j] = q * gx[j] + step * g[i, j]
            val = z2 * xx + ((xgx - 2 * hx) + bbb) / nr
            if it >= 2 and not (cur - val > min_dec2):
                break
            cur = val
        iters[b] = it
    return x_out, iters


@functools.cache
def _fw_compiled() -> Callable:
    """:func:`_fw_loop` compiled. ``cache=True`` keeps the machine code in ``__pycache__``:
    the first call ever compiles it (about 2 s), later processes load it (about 0.5 s)."""
    import numba
    return numba.njit(cache=True, nogil=True)(_fw_loop)


def fw_batch(y: np.ndarray, zeta: float, init: np.ndarray, min_decrease: float,
             max_iter: int, row_mask: np.ndarray | None = None,
             intercept: bool = True, n_cols: np.ndarray | None = None,
             engine: str | None = None, return_iters: bool = False
             ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """synthdid's ``sc.weight.fw`` on a batch of problems.

    Each problem ``b`` is ``min_x zeta^2 |x|^2 + |A x - b|^2 / N`` over the simplex, with
    ``[A, b] = y[b]`` (``N x (T + 1)``, columns centred when ``intercept``) and ``N`` its
    number of valid rows (``row_mask``; padded rows are ignored; ``n_cols[b]``: only the
    first ``n_cols[b]`` columns of ``A`` are candidates, the rest are padding and stay at
    zero). Frank-Wolfe with exact line search from ``init``; a problem stops after
    ``max_iter`` iterations or once an iteration (from the second on) lowers the objective
    by less than ``min_decrease^2``. Everything runs through the Gram matrix ``G = A'A``: a
    step moves ``x`` to ``(1 - s) x + s e_i``, so ``G x``, ``x'x``, ``h'x`` and ``x'G x`` are
    updated in ``O(T)`` and ``O(1)`` per iteration instead of recomputing ``A x``.

    ``engine``: ``"numba"`` (compiled, one problem at a time) or ``"numpy"`` (the
    reference, vectorised over the batch); ``None`` uses :data:`FW_ENGINE`. Both give the
    same iterates up to rounding and the same iteration counts. ``return_iters``: also
    return each problem's number of iterations.
    """
    engine = FW_ENGINE if engine is None else engine
    check_choice("engine", engine, FW_ENGINES)
    if engine == "numba" and importlib.util.find_spec("numba") is None:
        raise OptionError("engine='numba' needs numba (pip install numba); accepted "
                          "without it: 'numpy'")
    s = _fw_prepare(y, zeta, init, row_mask, intercept, n_cols)
    if engine == "numpy":
        x, iters = _fw_numpy(s, zeta ** 2, min_decrease, max_iter)
    else:
        # C-contiguous float64 / int64 arguments: one compiled signature, loaded from cache
        c = np.ascontiguousarray
        x, iters = _fw_compiled()(c(s.gram), c(s.h), c(s.bb), c(s.eta), c(s.n_rows),
                                  c(s.n_cols), c(s.x), c(s.gx), c(s.xx), c(s.hx), c(s.xgx),
                                  float(zeta ** 2), float(min_decrease ** 2), int(max_iter))
    return (x, iters) if return_iters else x


def sparsify(v: np.ndarray) -> np.ndarray:
    """synthdid's ``sparsify_function``, row by row: weights at most a quarter of the
    largest set to zero, the rest renormalised."""
    v = np.where(v <= v.max(axis=-1, keepdims=True) / 4, 0.0, v)
    return v / v.sum(axis=-1, keepdims=True)


def sum_normalize(v: np.ndarray) -> np.ndarray:
    """synthdid's ``sum_normalize`` row by row (zero rows become uniform)."""
    s = v.sum(axis=-1, keepdims=True)
    return np.where(s != 0, v / np.where(s != 0, s, 1.0), 1.0 / v.shape[-1])


@dataclass(frozen=True)
class Regularisation:
    """The tuning of one cohort's problem, fixed from the original fit (as synthdid's
    ``opts`` are in its variance replications)."""

    zeta_omega: float
    zeta_lambda: float
    min_decrease: float
    max_iter: int = 10_000
    max_iter_pre_sparsify: int = 100


def regularisation(y0_pre: np.ndarray, n_treated: int, n_post: int) -> Regularisation:
    """synthdid's defaults from the never-treated units' pre-period outcomes."""
    if y0_pre.shape[1] < 2:
        raise EstimationError("synthetic DID needs at least two pre-treatment periods per "
                              "cohort (sigma is the sd of pre-period first differences)")
    sigma = float(np.std(np.diff(y0_pre, axis=1), ddof=1))
    return Regularisation(zeta_omega=(n_treated * n_post) ** 0.25 * sigma,
                          zeta_lambda=1e-6 * sigma, min_decrease=1e-5 * sigma)


def sdid_batch(y: np.ndarray, n0: np.ndarray | None, n1: int, t0: int, reg: Regularisation,
               omega0: np.ndarray, lambda0: np.ndarray, row_mask: np.ndarray | None = None,
               treated_mask: np.ndarray | None = None, engine: str | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """synthdid_estimate on a batch of ``(N0max + n1) x T`` problems.

    ``y[b]`` holds the controls in its first ``N0max`` rows and the treated units in its
    last ``n1`` rows (``n0``: each problem's number of controls, checked; ``None`` to skip
    the check). Problems of different sizes share a batch through padding:
    ``row_mask[b]`` (``B x N0max``) marks the valid controls, which must come first (the
    omega problem sees only the first ``n0[b] = row_mask[b].sum()`` of them); padded
    controls get zero weight. ``treated_mask`` (``B x n1``) likewise marks the treated rows
    that enter the treated mean. ``omega0`` (``B x N0max``, zero on padding) and ``lambda0``
    are the Frank-Wolfe starting points; ``engine`` as in :func:`fw_batch`. Returns
    ``(omega, lambda, curve)``: weights and ``tau_sc - tau_sc[:T0] lambda`` over every
    period (the effect curve after ``T0``; synthdid's ``synthdid_effect_curve``).
    """
    nb, n, t = y.shape
    nc = n - n1
    yc, yt = y[:, :nc], y[:, nc:]
    if row_mask is None:
        n0f = None
    else:
        row_mask = np.asarray(row_mask, dtype=bool)
        n0f = row_mask.sum(axis=1)
        if (row_mask != (np.arange(nc)[None, :] < n0f[:, None])).any():
            raise EstimationError("internal: sdid_batch needs the valid controls first")
        yc = np.where(row_mask[:, :, None], yc, 0.0)
    if n0 is not None and (np.asarray(n0) != (nc if n0f is None else n0f)).any():
        raise EstimationError("internal: sdid_batch's n0 disagrees with its control rows")
    if treated_mask is None:
        yt_mean = yt.mean(axis=1)
    else:
        tm = np.asarray(treated_mask, dtype=float)[:, :, None]
        yt_mean = (yt * tm).sum(axis=1) / tm.sum(axis=1)
    # collapsed form: controls x (pre, post mean), treated mean row
    post_mean = yc[:, :, t0:].mean(axis=2)
    tr_pre = yt_mean[:, :t0]
    # lambda: rows are controls, columns pre periods + the post mean
    ylam = np.concatenate([yc[:, :, :t0], post_mean[:, :, None]], axis=2)
    lam = fw_batch(ylam, reg.zeta_lambda, lambda0, reg.min_decrease,
                   reg.max_iter_pre_sparsify, row_mask, engine=engine)
    lam = fw_batch(ylam, reg.zeta_lambda, sparsify(lam), reg.min_decrease, reg.max_iter,
                   row_mask, engine=engine)
    # omega: rows are pre periods, columns controls + the treated pre mean; padded controls
    # are zero columns outside each problem's candidate set (n_cols)
    yom = np.concatenate([yc[:, :, :t0], tr_pre[:, None, :]], axis=1).transpose(0, 2, 1)
    om = fw_batch(yom, reg.zeta_omega, omega0, reg.min_decrease, reg.max_iter_pre_sparsify,
                  n_cols=n0f, engine=engine)
    om = fw_batch(yom, reg.zeta_omega, sparsify(om), reg.min_decrease, reg.max_iter,
                  n_cols=n0f, engine=engine)
    tau_sc = yt_mean - np.einsum("bj,bjt->bt", om, yc)
    curve = tau_sc - np.einsum("bt,bt->b", tau_sc[:, :t0], lam)[:, None]
    return om, lam, curve


# --- the estimator ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _CohortFit:
    reg: Regularisation
    omega: np.ndarray
    lam: np.ndarray
    curve: np.ndarray      # (T,)
    pos: int

    @property
    def tau(self) -> float:
        return float(self.curve[self.pos:].mean())


@dataclass(frozen=True)
class SyntheticDID:
    """Synthetic difference-in-differences (Arkhangelsky et al. 2021; R ``synthdid``).

    Unit weights ``omega`` (with an intercept and the paper's ridge) and time weights
    ``lambda`` make the never-treated units' weighted trend match the treated units' before
    adoption; the estimate is the weighted double difference. With staggered adoption each
    cohort gets its own weights against the never-treated units on its own pre-period, and
    the cohort estimates are averaged with weights ``N_tr,g * T_post,g`` (treated
    unit-post-period cells: the ATT over treated cells), as Stata ``sdid`` does (Clarke et
    al. 2023). Event-time terms are the effect curves (``synthdid_effect_curve``; before
    adoption, the gap relative to the lambda-weighted baseline, as ``sdid_event``) averaged
    over the treated units observed there; no ``event_cov`` (pre-period terms satisfy
    ``sum lambda_t gap_t = 0`` by construction, so they are not pre-trend tests).

    Parameters
    ----------
    outcome
        Outcome column.
    variance
        ``"placebo"`` (default; Algorithm 4, the only one valid with one treated unit:
        the treated units' adoption dates are given to randomly drawn never-treated units
        and the estimator is recomputed on the never-treated units, ``n_boot`` times),
        ``"bootstrap"`` (Algorithm 2: units resampled, draws without a treated or without
        a control unit redrawn) or ``"jackknife"`` (Algorithm 3: leave one unit out with
        the weights fixed, renormalised; deterministic; needs two treated units per
        cohort). Replications start Frank-Wolfe from the fitted weights and keep the
        fitted regularisation, as synthdid does. SE ``sqrt((B-1)/B) sd`` of the draws;
        normal interval.
    n_boot
        Placebo or bootstrap replications (synthdid's ``replications``, default 200).
    alpha
        Level of the interval.
    """

    outcome: str
    variance: str = "placebo"
    n_boot: int = 200
    alpha: float = 0.05
    label: str = "sdid"

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        check_choice("variance", self.variance, VARIANCES)
        check_count("n_boot", self.n_boot, minimum=2)
        check_alpha(self.alpha)

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True ATT over treated cells and by event time (``e >= 0``) on a simulated panel."""
        return treated_event_truth(panel, self.outcome)

    # -- one cohort --

    @staticmethod
    def _cohort(y: np.ndarray, n0: int, t0: int, reg: Regularisation | None = None,
                omega0: np.ndarray | None = None, lambda0: np.ndarray | None = None,
                engine: str | None = None) -> _CohortFit:
        n1 = y.shape[0] - n0
        t = y.shape[1]
        if reg is None:
            reg = regularisation(y[:n0, :t0], n1, t - t0)
        om0 = np.full((1, n0), 1.0 / n0) if omega0 is None else omega0[None, :]
        la0 = np.full((1, t0), 1.0 / t0) if lambda0 is None else lambda0[None, :]
        om, lam, curve = sdid_batch(y[None], np.array([n0]), n1, t0, reg, om0, la0,
                                    engine=engine)
        return _CohortFit(reg, om[0], lam[0], curve[0], t0)

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Estimate the ATT (see the class docstring); ``rng`` draws the placebo or
        bootstrap replications."""
        self.check()
        blocks = cohort_blocks(panel, self.outcome, who="synthetic DID", min_donors=2)
        if self.variance != "jackknife" and rng is None:
            raise OptionError(f"variance={self.variance!r} draws replications: "
                              "fit(panel, rng=...)")
        y = blocks.wide.y
        donors = blocks.donors
        fits = [self._cohort(y[np.r_[donors, c.treated]], donors.size, c.pos)
                for c in blocks.cohorts]
        events = event_positions(blocks)
        coef_ev = event_coefficients(blocks, events)
        cells = blocks.cells()
        w = cells / cells.sum()
        est = np.r_[w @ [f.tau for f in fits], self._events(blocks, fits, events, coef_ev)]
        if self.variance == "jackknife":
            reps, n_reps, notes = self._jackknife(blocks, fits, events, coef_ev), None, ()
            dev = reps - reps.mean(axis=0)
            n = reps.shape[0]
            cov = (n - 1) / n * dev.T @ dev
        else:
            draw = self._placebo if self.variance == "placebo" else self._bootstrap
            reps = draw(blocks, fits, events, rng)
            n_reps = reps.shape[0]
            ok = np.isfinite(reps)
            dev = np.where(ok, reps - np.nanmean(np.where(ok, reps, np.nan), axis=0), 0.0)
            nn = ok.sum(axis=0).astype(float)
            var = (dev ** 2).sum(axis=0) / np.maximum(nn, 1)   # sqrt((B-1)/B) sd, squared
            cov = np.diag(var)
            notes = ()
        se = np.sqrt(np.clip(np.diag(cov), 0, None))
        return self._estimate(blocks, fits, est, se, events, n_reps, notes)

    @staticmethod
    def _events(blocks: Blocks, fits: list[_CohortFit], events: np.ndarray,
                coef_ev: np.ndarray) -> np.ndarray:
        out = np.zeros(events.size)
        t = blocks.n_periods
        for g, (c, f) in enumerate(zip(blocks.cohorts, fits)):
            idx = np.arange(t) - c.pos - events[0]
            out[idx] += c.n * coef_ev[g, idx] * f.curve
        return out

    # -- variance --

    def _replicate(self, blocks: Blocks, fits: list[_CohortFit], events: np.ndarray,
                   ys: list[np.ndarray], n1: np.ndarray, masks: list[np.ndarray | None],
                   tmasks: list[np.ndarray | None], om0: list[np.ndarray]) -> np.ndarray:
        """Statistic vectors (ATT, event terms) of a batch of replications: ``ys[g]`` the
        cohort's ``(B, N0max + n1max, T)`` matrices (controls first; ``masks[g]`` and
        ``tmasks[g]`` mark the valid control and treated rows, as in :func:`sdid_batch`),
        ``n1[b, g]`` its treated count in draw ``b`` (0: cohort absent, its weight 0)."""
        nb = ys[0].shape[0] if ys else 0
        t = blocks.n_periods
        taus = np.zeros((nb, len(fits)))
        curves = []
        for g, (c, f) in enumerate(zip(blocks.cohorts, fits)):
            lam0 = np.tile(f.lam, (nb, 1))
            n1_rows = ys[g].shape[1] - om0[g].shape[1]
            _, _, curve = sdid_batch(ys[g], None, n1_rows, c.pos, f.reg, om0[g], lam0,
                                     masks[g], tmasks[g])
            curves.append(curve)
            taus[:, g] = curve[:, c.pos:].mean(axis=1)
        cells = n1 * np.array([t - c.pos for c in blocks.cohorts], dtype=float)[None, :]
        wgt = cells / cells.sum(axis=1, keepdims=True)
        out = np.empty((nb, 1 + events.size))
        out[:, 0] = (wgt * taus).sum(axis=1)
        ev = np.zeros((nb, events.size))
        cnt = np.zeros((nb, events.size))
        for g, c in enumerate(blocks.cohorts):
            idx = np.arange(t) - c.pos - events[0]
            ev[:, idx] += n1[:, g:g + 1] * curves[g]
            cnt[:, idx] += n1[:, g:g + 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, 1:] = np.where(cnt > 0, ev / np.where(cnt > 0, cnt, 1), np.nan)
        return out

    def _placebo(self, blocks: Blocks, fits: list[_CohortFit], events: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
        """Algorithm 4: the treated units' cohorts go to randomly drawn never-treated
        units; the rest of the never-treated units are the controls."""
        donors = blocks.donors
        j, n1 = donors.size, blocks.n_treated
        if j <= n1:
            raise EstimationError(f"the placebo variance needs more never-treated units ({j}) "
                                  f"than treated units ({n1})")
        y = blocks.wide.y
        b = self.n_boot
        # synthdid: ind = sample(1:N0); the last N1 become treated (here: cohort by cohort)
        perm = np.argsort(rng.random((b, j)), axis=1)
        n0 = j - n1
        ctrl = perm[:, :n0]
        ys, om0, masks = [], [], []
        start = n0
        for g, (c, f) in enumerate(zip(blocks.cohorts, fits)):
            fake = perm[:, start:start + c.n]
            start += c.n
            ys.append(np.concatenate([y[donors[ctrl]], y[donors[fake]]], axis=1))
            om0.append(sum_normalize(f.omega[ctrl]))
            masks.append(None)
        n1_draw = np.tile([c.n for c in blocks.cohorts], (b, 1)).astype(float)
        return self._replicate(blocks, fits, events, ys, n1_draw, masks, [None] * len(ys),
                               om0)

    def _bootstrap(self, blocks: Blocks, fits: list[_CohortFit], events: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
        """Algorithm 2: units drawn with replacement; a draw without a control or without
        a treated unit is redrawn. The draws differ in their numbers of controls and
        treated units; they are solved in one padded batch per cohort."""
        if blocks.n_treated < 2:
            raise EstimationError("variance='bootstrap' needs at least two treated units "
                                  "(Arkhangelsky et al. 2021); use variance='placebo'")
        y = blocks.wide.y
        donors = blocks.donors
        ng = len(blocks.cohorts)
        units = np.r_[donors, np.concatenate([c.treated for c in blocks.cohorts])]
        # non-decreasing along units: -1 for the donors, then the cohorts in order, so a
        # sorted draw lists its controls first and then its treated units cohort by cohort
        cohort_of = np.r_[np.full(donors.size, -1),
                          np.repeat(np.arange(ng), [c.n for c in blocks.cohorts])]
        kept = []
        while len(kept) < self.n_boot:        # synthdid's rejection loop, same rng stream
            draw = np.sort(rng.integers(0, units.size, units.size))
            co = cohort_of[draw]
            n_ctrl = int(np.sum(co < 0))
            if n_ctrl == 0 or n_ctrl == draw.size:
                continue
            kept.append(draw)
        draws = np.array(kept)                                       # (B, U), positions
        co = cohort_of[draws]
        b, u = draws.shape
        col = np.arange(u)[None, :]
        n0 = (co < 0).sum(axis=1)
        n1 = np.stack([(co == g).sum(axis=1) for g in range(ng)], axis=1).astype(float)
        n0max = int(n0.max())
        mask = col[:, :n0max] < n0[:, None]
        ctrl = np.where(mask, draws[:, :n0max], 0)
        yc = np.where(mask[:, :, None], y[units[ctrl]], 0.0)
        # the fitted omega of the drawn controls, renormalised (synthdid sum_normalize;
        # uniform over the drawn controls when they all had zero weight)
        ys, om0, masks, tmasks = [], [], [], []
        for g, (c, f) in enumerate(zip(blocks.cohorts, fits)):
            w = np.where(mask, f.omega[np.where(mask, ctrl, 0)], 0.0)
            s = w.sum(axis=1, keepdims=True)
            om0.append(np.where(s != 0, w / np.where(s != 0, s, 1.0),
                                mask / n0[:, None]))
            # this cohort's treated units of each draw; a draw without one keeps its first
            # treated unit as a placeholder (the cohort's weight in that draw is 0)
            first = np.argmax(co == g, axis=1)
            k = n1[:, g].astype(int)
            absent = k == 0
            first = np.where(absent, n0, first)
            k = np.where(absent, 1, k)
            width = int(k.max())
            tmask = np.arange(width)[None, :] < k[:, None]
            tr = draws[np.arange(b)[:, None], np.minimum(first[:, None] + np.arange(width),
                                                         u - 1)]
            ys.append(np.concatenate([yc, y[units[tr]]], axis=1))
            masks.append(mask)
            tmasks.append(tmask)
        return self._replicate(blocks, fits, events, ys, n1, masks, tmasks, om0)

    def _jackknife(self, blocks: Blocks, fits: list[_CohortFit], events: np.ndarray,
                   coef_ev: np.ndarray) -> np.ndarray:
        """Algorithm 3 (fixed weights), every unit left out in turn, in closed form."""
        if any(c.n < 2 for c in blocks.cohorts):
            raise EstimationError("variance='jackknife' needs at least two treated units in "
                                  "every cohort (Arkhangelsky et al. 2021; Stata sdid); use "
                                  "variance='placebo'")
        y = blocks.wide.y
        donors = blocks.donors
        t = blocks.n_periods
        j = donors.size
        ng = len(blocks.cohorts)
        n_units = j + blocks.n_treated
        # per cohort, per left-out unit: the effect curve (T,)
        curves = np.zeros((ng, n_units, t))
        n1 = np.tile([c.n for c in blocks.cohorts], (n_units, 1)).astype(float)
        start = j
        for g, (c, f) in enumerate(zip(blocks.cohorts, fits)):
            if np.count_nonzero(f.omega) == 1:
                raise EstimationError("variance='jackknife' is undefined when one control "
                                      "carries all the unit weight (synthdid returns NA)")
            yc, yt = y[donors], y[c.treated]
            base_c = f.omega @ yc                     # (T,)
            # leave out control i: omega without i, renormalised (synthdid sum_normalize)
            om = np.tile(f.omega, (j, 1))
            om[np.arange(j), np.arange(j)] = 0.0
            om = sum_normalize(om)
            sc_c = om @ yc                            # (j, T)
            tr_mean = yt.mean(axis=0)
            tau_sc = np.vstack([tr_mean - sc_c,
                                np.tile(tr_mean - base_c, (blocks.n_treated, 1))])
            # leave out a treated unit of this cohort
            loo = (yt.sum(axis=0)[None, :] - yt) / (c.n - 1)
            tau_sc[start:start + c.n] = loo - base_c
            n1[start:start + c.n, g] -= 1
            start += c.n
            curves[g] = tau_sc - (tau_sc[:, :c.pos] @ f.lam)[:, None]
        cells = n1 * np.array([t - c.pos for c in blocks.cohorts], dtype=float)[None, :]
        taus = np.stack([curves[g][:, c.pos:].mean(axis=1)
                         for g, c in enumerate(blocks.cohorts)], axis=1)
        out = np.empty((n_units, 1 + events.size))
        out[:, 0] = (cells * taus).sum(axis=1) / cells.sum(axis=1)
        ev = np.zeros((n_units, events.size))
        cnt = np.zeros((n_units, events.size))
        for g, c in enumerate(blocks.cohorts):
            idx = np.arange(t) - c.pos - events[0]
            ev[:, idx] += n1[:, g:g + 1] * curves[g]
            cnt[:, idx] += n1[:, g:g + 1]
        out[:, 1:] = ev / np.where(cnt > 0, cnt, 1)
        return out

    def _estimate(self, blocks: Blocks, fits: list[_CohortFit], est: np.ndarray,
                  se: np.ndarray, events: np.ndarray, n_reps: int | None,
                  notes: Sequence[str]) -> Estimate:
        crit = critical_value(self.alpha, None)
        with np.errstate(divide="ignore", invalid="ignore"):
            stat = np.where(se > 0, est / se, np.nan)
        names = ["ATT", *[f"ev{int(e):+d}" for e in events]]
        terms = pd.DataFrame({
            "term": names, "estimate": est, "std_error": se, "statistic": stat,
            "p_value": p_value(stat, None), "conf_low": est - crit * se,
            "conf_high": est + crit * se, "event_time": np.r_[np.nan, events.astype(float)],
        })
        cohort_terms = pd.DataFrame({
            "term": [f"cohort {c.period}" for c in blocks.cohorts],
            "estimate": [f.tau for f in fits],
            "event_time": np.nan,
        })
        terms = pd.concat([terms, cohort_terms], ignore_index=True)
        what = {"placebo": "placebo variance (Arkhangelsky et al. 2021 Alg. 4)",
                "bootstrap": "unit bootstrap (Alg. 2)",
                "jackknife": "fixed-weight jackknife (Alg. 3)"}[self.variance]
        reps = f", {n_reps} replications" if n_reps else ""
        diag: dict[str, float] = {"n_donors": float(blocks.donors.size),
                                  "n_treated": float(blocks.n_treated)}
        for c, f in zip(blocks.cohorts, fits):
            diag[f"zeta_omega[{c.period}]"] = f.reg.zeta_omega
            diag[f"omega_nonzero[{c.period}]"] = float(np.count_nonzero(f.omega))
        return Estimate(
            estimator=self.label, term="ATT", estimate=float(est[0]), std_error=float(se[0]),
            p_value=float(terms["p_value"].iloc[0]), conf_low=float(terms["conf_low"].iloc[0]),
            conf_high=float(terms["conf_high"].iloc[0]), alpha=self.alpha,
            n_obs=int(blocks.wide.y.size), n_units=int(blocks.wide.n), n_clusters=0,
            inference=f"{what}{reps}, normal interval", terms=terms, diagnostics=diag,
            notes=tuple(notes),
        )


__all__ = ["FW_ENGINE", "FW_ENGINES", "SyntheticDID", "fw_batch", "regularisation",
           "sdid_batch", "sparsify", "sum_normalize"]
