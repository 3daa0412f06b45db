"""Quantile difference-in-differences (seed 000: the policy works more where fewer firms
already produce cleanly).

Two estimators answer two different questions:

* :class:`QuantileDID` -- the studies' approach: a *conditional* quantile regression of the
  outcome on the treatment indicator with unit and year dummies (and controls). Its
  coefficient at quantile q shifts the q-th quantile of the outcome *given* the unit and
  year, i.e. of the idiosyncratic error -- not the q-th quantile of the treated units'
  outcome distribution.
* :class:`ChangesInChanges` -- Athey and Imbens (2006): the quantile treatment effects on the
  treated, ``F11^{-1}(q) - F_{N,11}^{-1}(q)`` with the counterfactual distribution
  ``F01^{-1}(F00(Y10))``; identified when the untreated outcome is monotone in a
  group-specific unobservable whose distribution does not change over time.

Quantile regressions are solved exactly as linear programs (HiGHS), so they equal the
textbook estimates (e.g. R quantreg) rather than an iterative approximation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import linprog

from .design import codes_of
from .panel import (excluding_always_treated, COHORT, D, TIME, UNIT, EstimationError, OptionError, check_alpha,
                    check_choice, check_count, check_panel)
from .resample import draw_units
from .result import Estimate, critical_value, terms_frame

DEFAULT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def quantile_regression(y: np.ndarray, x: np.ndarray, q: float) -> np.ndarray:
    """Exact quantile-regression coefficients: ``min sum rho_q(y - x b)`` as an LP."""
    if not 0 < q < 1:
        raise OptionError(f"quantile {q} must lie strictly between 0 and 1")
    n, k = x.shape
    c = np.r_[np.zeros(k), np.full(n, q), np.full(n, 1 - q)]
    a = sparse.hstack([sparse.csr_matrix(x), sparse.eye(n), -sparse.eye(n)]).tocsr()
    bounds = [(None, None)] * k + [(0, None)] * (2 * n)
    res = linprog(c, A_eq=a, b_eq=y, bounds=bounds, method="highs")
    if res.status != 0:
        raise EstimationError(f"quantile regression at q={q} failed: {res.message}")
    return res.x[:k]


# --- Frisch-Newton interior point, many problems at once ------------------------------------
#
# Two engines give the same estimates. "highs" solves each quantile regression as an LP with
# HiGHS (quantile_regression: the reference). "ipm" (the default) ports quantreg's rq.fit.fnb
# (Portnoy and Koenker 1997; Fortran lpfnb: Mehrotra predictor-corrector on the dual LP
# ``max y'a s.t. X'a = (1-q) X'1, 0 <= a <= 1``) to numpy and advances every problem of a
# batch (quantiles x bootstrap draws) together. The normal matrix X'diag(w)X is never formed
# densely: X = [dense columns | dummies of one factor | dummies of another], so it is an arrow
# matrix whose larger dummy block is diagonal; the Newton systems are solved through the
# Schur complement on the other columns (size: dense columns + levels of the smaller factor).
#
# An interior point stops near, not at, a vertex. The batch then crosses over to the exact
# vertex: the observations whose residual vanishes at the interior optimum (basis Z) give
# ``X_Z b = y_Z``, solved exactly, and a dual certificate ``X_Z'a_Z = (1-q)X'1 - X_N'a_N``
# (a_N = 1 where the residual is positive, 0 where negative) with every a_Z strictly inside
# (0, 1) proves b optimal *and unique* (complementary slackness forces r_Z = 0 at every
# optimum, and X_Z has rank p). So wherever the LP solution is unique -- generically, with a
# continuous outcome -- the two engines return the same vertex up to rounding. A problem
# whose certificate fails (a non-unique solution: a dual on its bound, a rank-deficient
# basis; or an interior point that did not converge) is re-solved by HiGHS, so it gets the
# reference's answer too; ``QRBatch.fallback`` counts them.

QR_ENGINES = ("ipm", "highs")
#: Engine QuantileDID uses when ``engine=None`` (see :func:`quantile_regression_batch`).
QR_ENGINE = "ipm"

_BETA = 0.99995      # rq.fit.fnb's step-length damping
_EPS0 = 1e-6         # rq.fit.fnb's nudge of zero dual slacks at the start
_GAP_REL = 1e-11     # duality gap / (n * mean |y - median|) at which a problem stops
_MAXIT = 100         # rq.fit.fnb allows 500; ours converge in 15-30
_INTERIOR = 1e-9     # a_Z must lie in (_INTERIOR, 1 - _INTERIOR) for the certificate
_ROWS_PER_CHUNK = 1 << 19   # problems x observations advanced together (memory bound)


@dataclass
class _Structured:
    """A batch of designs ``X_b = [F_b | dummies(g_b) | dummies(h_b)]`` (level 0 of each
    factor has no column). Internal coefficient order: ``[g dummies | F | h dummies]``, so the
    diagonal block (``g``, the factor with more levels) leads the arrow matrix."""

    f: np.ndarray      # (B, n, kd) dense columns
    g: np.ndarray      # (B, n) codes 0..ng-1
    ng: int
    h: np.ndarray      # (B, n) codes 0..nh-1
    nh: int

    def __post_init__(self) -> None:
        nb, n = self.g.shape
        base = np.arange(nb)[:, None]
        self.ig = (base * self.ng + self.g).ravel()
        self.ih = (base * self.nh + self.h).ravel()
        self.igh = ((base * self.ng + self.g) * self.nh + self.h).ravel()
        self.kd = self.f.shape[2]
        self.fk = [np.ascontiguousarray(self.f[:, :, k]) for k in range(self.kd)]  # (B, n) each
        self.p = self.ng - 1 + self.kd + self.nh - 1

    def subset(self, keep: np.ndarray) -> "_Structured":
        return _Structured(self.f[keep], self.g[keep], self.ng, self.h[keep], self.nh)

    def _sum_by(self, idx: np.ndarray, levels: int, w: np.ndarray) -> np.ndarray:
        nb = w.shape[0]
        return np.bincount(idx, w.ravel(), minlength=nb * levels).reshape(nb, levels)

    def xv(self, v: np.ndarray) -> np.ndarray:
        """``X_b v_b`` for every problem: (B, p) -> (B, n)."""
        ng1, kd = self.ng - 1, self.kd
        out = self.fk[0] * v[:, ng1, None]
        for k in range(1, kd):
            out += self.fk[k] * v[:, ng1 + k, None]
        if ng1:
            vg = np.concatenate([np.zeros((v.shape[0], 1)), v[:, :ng1]], axis=1)
            out += np.take_along_axis(vg, self.g, axis=1)
        if self.nh > 1:
            vh = np.concatenate([np.zeros((v.shape[0], 1)), v[:, ng1 + kd:]], axis=1)
            out += np.take_along_axis(vh, self.h, axis=1)
        return out

    def xtv(self, r: np.ndarray) -> np.ndarray:
        """``X_b' r_b`` for every problem: (B, n) -> (B, p)."""
        parts = []
        if self.ng > 1:
            parts.append(self._sum_by(self.ig, self.ng, r)[:, 1:])
        parts.append(np.stack([(fk * r).sum(axis=1) for fk in self.fk], axis=1))
        if self.nh > 1:
            parts.append(self._sum_by(self.ih, self.nh, r)[:, 1:])
        return np.concatenate(parts, axis=1)

    def normal(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``X'diag(w)X`` as its arrow blocks: the diagonal ``D`` of the g dummies, the
        coupling ``E`` (g dummies x the rest) and the Schur complement ``S = C - E'D^{-1}E``."""
        nb, kd, ng1, nh1 = w.shape[0], self.kd, self.ng - 1, self.nh - 1
        m = kd + nh1
        fw = [fk * w for fk in self.fk]
        c = np.zeros((nb, m, m))
        for k in range(kd):
            for j in range(k + 1):
                c[:, k, j] = c[:, j, k] = (fw[k] * self.fk[j]).sum(axis=1)
        if nh1:
            fh = np.stack([self._sum_by(self.ih, self.nh, fw[k])[:, 1:] for k in range(kd)], axis=1)
            c[:, :kd, kd:] = fh
            c[:, kd:, :kd] = fh.transpose(0, 2, 1)
            hh = self._sum_by(self.ih, self.nh, w)[:, 1:]
            c[:, kd + np.arange(nh1), kd + np.arange(nh1)] = hh
        if not ng1:
            return np.ones((nb, 0)), np.zeros((nb, 0, m)), c
        dg = self._sum_by(self.ig, self.ng, w)[:, 1:]
        e = np.empty((nb, ng1, m))
        for k in range(kd):
            e[:, :, k] = self._sum_by(self.ig, self.ng, fw[k])[:, 1:]
        if nh1:
            e[:, :, kd:] = self._sum_by(self.igh, self.ng * self.nh, w).reshape(nb, self.ng, self.nh)[:, 1:, 1:]
        s = c - np.einsum("bjk,bjl->bkl", e / dg[:, :, None], e)
        return dg, e, s

    @staticmethod
    def solve(fac: tuple[np.ndarray, np.ndarray, np.ndarray], rhs: np.ndarray) -> np.ndarray:
        """Solve ``X'diag(w)X v = rhs`` from :meth:`normal`'s blocks."""
        dg, e, s = fac
        ng1 = dg.shape[1]
        r1, r2 = rhs[:, :ng1], rhs[:, ng1:]
        t = (r2 - np.einsum("bjk,bj->bk", e, r1 / dg))[:, :, None]
        try:
            v2 = np.linalg.solve(s, t)[:, :, 0]
        except np.linalg.LinAlgError:       # one singular problem must not stop the batch
            v2 = np.full(t.shape[:2], np.nan)
            for i in range(s.shape[0]):
                try:
                    v2[i] = np.linalg.solve(s[i], t[i])[:, 0]
                except np.linalg.LinAlgError:
                    pass                    # NaN: the problem stops and HiGHS solves it

        v1 = (r1 - np.einsum("bjk,bk->bj", e, v2)) / dg
        return np.concatenate([v1, v2], axis=1)

    def dense_rows(self, b: int, rows: np.ndarray) -> np.ndarray:
        """Rows of problem ``b``'s design as a dense matrix (internal column order)."""
        out = np.zeros((rows.size, self.p))
        ng1 = self.ng - 1
        g, h = self.g[b, rows], self.h[b, rows]
        k = np.flatnonzero(g > 0)
        out[k, g[k] - 1] = 1.0
        out[:, ng1:ng1 + self.kd] = self.f[b, rows]
        k = np.flatnonzero(h > 0)
        out[k, ng1 + self.kd + h[k] - 1] = 1.0
        return out


def _step(v: np.ndarray, dv: np.ndarray) -> np.ndarray:
    """Largest step ``t`` keeping ``v + t dv >= 0``, per problem (inf when dv >= 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(dv < 0, -v / dv, np.inf)
    return t.min(axis=1)


def _fnb(design: _Structured, yobs: np.ndarray, tau: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """rq.fit.fnb's iterations on a batch: returns coefficients (internal order), the dual
    ``a`` (B, n), the final duality gaps, iteration counts and whether each problem reached
    the gap tolerance."""
    nb, n = yobs.shape
    c = -yobs
    ones = np.ones((nb, n))
    x = np.repeat((1 - tau)[:, None], n, axis=1)          # dual a: feasible start
    b = design.xtv(x)                                     # rhs (1 - q) X'1
    y = design.solve(design.normal(ones), design.xtv(c))  # minus the OLS coefficients
    s = c - design.xv(y)
    nudge = np.abs(s) < _EPS0
    z = np.maximum(s, 0) + _EPS0 * nudge
    w = np.maximum(-s, 0) + _EPS0 * nudge
    s = 1 - x
    scale = np.abs(yobs - np.median(yobs, axis=1, keepdims=True)).sum(axis=1) + 1e-300
    tol = _GAP_REL * scale
    out_y, out_x, out_gap = np.empty((nb, design.p)), np.empty((nb, n)), np.empty(nb)
    iters, ok = np.zeros(nb, dtype=int), np.zeros(nb, dtype=bool)
    act = np.arange(nb)
    gap = (z * x + w * s).sum(axis=1)
    it = 0
    while True:
        done = (gap <= tol[act]) | (it >= _MAXIT) | ~np.isfinite(gap)
        if done.any():
            fin = act[done]
            out_y[fin], out_x[fin], out_gap[fin], iters[fin] = y[done], x[done], gap[done], it
            ok[fin] = gap[done] <= tol[fin]
            keep = ~done
            act = act[keep]
            if not act.size:
                break
            design = design.subset(keep)
            x, s, z, w, y, b, c = (a[keep] for a in (x, s, z, w, y, b, c))
        it += 1
        d = 1 / (z / x + w / s)
        zw = z - w
        rhs = b + design.xtv(d * zw - x)
        fac = design.normal(d)
        dy = design.solve(fac, rhs)
        dx = d * (design.xv(dy) - zw)
        ds = -dx
        dz = -z * (dx / x + 1)
        dw = -w * (ds / s + 1)
        dp = np.minimum(_BETA * np.minimum(_step(x, dx), _step(s, ds)), 1)
        dd = np.minimum(_BETA * np.minimum(_step(z, dz), _step(w, dw)), 1)
        corr = np.minimum(dp, dd) < 1
        if corr.any():                      # Mehrotra's corrector, same factorisation
            dpc, ddc = dp[:, None], dd[:, None]
            mu = (x * z + s * w).sum(axis=1)
            g = (x * z + dpc * dx * z + ddc * dz * x + dpc * ddc * dz * dx
                 + s * w + dpc * ds * w + ddc * dw * s + dpc * ddc * ds * dw).sum(axis=1)
            mu = (mu * (g / mu) ** 3 / (2 * n))[:, None]
            dr = d * (mu * (1 / s - 1 / x) + dx * dz / x - ds * dw / s)
            dy2 = design.solve(fac, rhs + design.xtv(dr))
            dx2 = d * (design.xv(dy2) - z + w) - dr
            ds2 = -dx2
            dz2 = -z + (mu - z * dx2 - dx * dz) / x
            dw2 = -w + (mu - w * ds2 - ds * dw) / s
            cc = corr[:, None]
            dx, ds, dz, dw = (np.where(cc, new, old) for new, old in
                              ((dx2, dx), (ds2, ds), (dz2, dz), (dw2, dw)))
            dy = np.where(cc, dy2, dy)
            dp = np.where(corr, np.minimum(_BETA * np.minimum(_step(x, dx), _step(s, ds)), 1), dp)
            dd = np.where(corr, np.minimum(_BETA * np.minimum(_step(z, dz), _step(w, dw)), 1), dd)
        dpc, ddc = dp[:, None], dd[:, None]
        x = x + dpc * dx
        s = s + dpc * ds
        y = y + ddc * dy
        z = z + ddc * dz
        w = w + ddc * dw
        gap = (z * x + w * s).sum(axis=1)
    return -out_y, out_x, out_gap, iters, ok


def _purify(x: np.ndarray, y: np.ndarray, b: np.ndarray, basic: np.ndarray) -> np.ndarray | None:
    """One problem's walk from an interior optimum to a vertex of the optimal face.

    ``basic`` marks the residuals that vanish at the interior point. When they do not pin b
    down (the LP has a face of solutions -- e.g. a year of 30 units at q = 0.5), b moves
    inside the face along the null space of ``X_Z``: the loss is constant there (the dual
    certificate makes its slope zero) until another residual reaches zero, which joins Z.
    At most p such steps reach a vertex. Returns the vertex's zero set Z (its exact solve
    and dual check are :func:`_vertices`'), or None if the walk fails.
    """
    inz = basic.copy()
    xz = x[inz]
    if xz.shape[0]:
        _, sv, vt = np.linalg.svd(xz)
        null = vt[int((sv > sv[0] * 1e-10).sum()):].T
    else:
        null = np.eye(x.shape[1])
    while null.shape[1]:
        delta = null[:, 0]
        v = x @ delta
        r = y - x @ b
        live = ~inz & (np.abs(v) > 1e-12 * np.abs(v).max())
        t = np.where(live, r / np.where(live, v, 1.0), np.inf)
        t = np.where(t > 0, t, np.inf)
        i = int(np.argmin(t))
        if not np.isfinite(t[i]):
            return None
        b = b + t[i] * delta
        r = y - x @ b
        # every residual that reached zero joins Z (a unit drawn twice has twin rows)
        hits = np.flatnonzero(~inz & (np.abs(r) <= 1e-10 * np.abs(r).mean()))
        inz[hits] = True
        for i in np.r_[i, hits[hits != i]]:
            if not null.shape[1]:
                break
            u = x[i] @ null                    # keep the directions that leave r_i at zero
            j = int(np.argmax(np.abs(u)))
            if abs(u[j]) > 1e-9 * np.abs(x[i]).max():
                null = np.delete(null - np.outer(null[:, j], u / u[j]), j, axis=1)
    return inz


def _vertices(design: _Structured, yobs: np.ndarray, tau: np.ndarray, a: np.ndarray,
              zero: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact vertices from their zero sets ``zero`` (B, n) and their dual certificates.

    Square bases (|Z| = p, the usual case) are solved together; larger ones (a degenerate
    vertex: ties in the residuals) one by one, by least squares, with the dual nearest the
    interior point's. Returns coefficients (internal order) and a status per problem: 2 =
    every dual of Z strictly inside (0, 1), so r_Z = 0 at every optimum and the vertex is the
    unique solution; 1 = duals in [0, 1] with some on a bound: optimal, one vertex of a face
    of solutions; 0 = no certificate."""
    nb, n = yobs.shape
    p = design.p
    out = np.full((nb, p), np.nan)
    status = np.zeros(nb, dtype=np.int8)
    k = zero.sum(axis=1)
    sq = np.flatnonzero(k == p)
    one_minus = np.repeat((1 - tau)[:, None], n, axis=1)

    def judge(az: np.ndarray) -> np.ndarray:
        inside = ((az > _INTERIOR) & (az < 1 - _INTERIOR)).all(axis=1)
        closed = ((az > -_INTERIOR) & (az < 1 + _INTERIOR)).all(axis=1)
        return np.where(inside, 2, np.where(closed, 1, 0)).astype(np.int8)

    def basis(sel: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dense rows of each selected problem's Z, padded with zero rows to ``width``."""
        rows = np.sort(np.argsort(~zero[sel], axis=1, kind="stable")[:, :width], axis=1)
        valid = np.take_along_axis(zero[sel], rows, axis=1)
        bb = np.repeat(np.arange(sel.size), width)
        jj = np.tile(np.arange(width), sel.size)
        rr, vv = rows.ravel(), valid.ravel()
        xz = np.zeros((sel.size, width, p))
        ng1, kd = design.ng - 1, design.kd
        g, h = design.g[sel[bb], rr], design.h[sel[bb], rr]
        m = (g > 0) & vv
        xz[bb[m], jj[m], g[m] - 1] = 1.0
        xz[bb, jj, ng1:ng1 + kd] = design.f[sel[bb], rr] * vv[:, None]
        m = (h > 0) & vv
        xz[bb[m], jj[m], ng1 + kd + h[m] - 1] = 1.0
        return rows, valid, xz

    if sq.size:
        rows, _, xz = basis(sq, p)
        sub = design.subset(sq)
        ok = np.abs(np.linalg.det(xz)) > 0
        xz[~ok] = np.eye(p)        # a singular basis gets identity rows (status 0) so the batch solves
        bv = np.linalg.solve(xz, np.take_along_axis(yobs[sq], rows, axis=1)[:, :, None])[:, :, 0]
        resid = yobs[sq] - sub.xv(bv)
        zm = zero[sq]
        a_n = np.where(zm, 0.0, (resid > 0).astype(float))
        az = np.linalg.solve(xz.transpose(0, 2, 1), sub.xtv(one_minus[sq] - a_n)[:, :, None])[:, :, 0]
        sigma = np.abs(resid).mean(axis=1) + 1e-300
        clear = np.where(zm, np.inf, np.abs(resid)).min(axis=1) > 1e-10 * sigma
        out[sq] = bv
        status[sq] = np.where(ok & clear & np.isfinite(bv).all(axis=1), judge(az), 0)
    ns = np.flatnonzero(k > p)     # degenerate vertices (ties, e.g. a unit drawn twice)
    if ns.size:
        rows, valid, xz = basis(ns, int(k[ns].max()))
        sub = design.subset(ns)
        yz = np.take_along_axis(yobs[ns], rows, axis=1) * valid
        gram = xz.transpose(0, 2, 1) @ xz
        ev = np.linalg.eigvalsh(gram)
        ok = ev[:, 0] > 1e-12 * ev[:, -1]           # Z has rank p
        gram[~ok] = np.eye(p)

        def ls(v: np.ndarray) -> np.ndarray:        # (X_Z'X_Z)^{-1} v, batched
            return np.linalg.solve(gram, v[:, :, None])[:, :, 0]

        xt = lambda v: np.einsum("bkp,bk->bp", xz, v)  # noqa: E731
        bv = ls(xt(yz))
        bv = bv + ls(xt(yz - np.einsum("bkp,bp->bk", xz, bv)))   # one refinement step
        resid = yobs[ns] - sub.xv(bv)
        zm = zero[ns]
        sigma = np.abs(resid).mean(axis=1) + 1e-300
        consistent = np.where(zm, np.abs(resid), 0).max(axis=1) <= 1e-9 * sigma
        clear = np.where(zm, np.inf, np.abs(resid)).min(axis=1) > 1e-10 * sigma
        rhs = sub.xtv(one_minus[ns] - np.where(zm, 0.0, (resid > 0).astype(float)))
        a0 = np.take_along_axis(a[ns], rows, axis=1) * valid
        az = a0 + np.einsum("bkp,bp->bk", xz, ls(rhs - xt(a0)))  # the dual nearest the IPM's
        dual_ok = np.abs(xt(az) - rhs).max(axis=1) <= 1e-9 * np.maximum(1.0, np.abs(rhs).max(axis=1))
        out[ns] = bv
        status[ns] = np.where(ok & consistent & clear & dual_ok & np.isfinite(bv).all(axis=1),
                              judge(np.where(valid, az, 0.5)), 0)
    return out, status


def _crossover(design: _Structured, yobs: np.ndarray, tau: np.ndarray, coef: np.ndarray,
               a: np.ndarray, gap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact vertices from interior optima (see the section comment): coefficients
    (internal order) and a status per problem (:func:`_vertices`; 0 = HiGHS re-solves)."""
    nb, n = yobs.shape
    p = design.p
    r = yobs - design.xv(coef)
    sigma = np.abs(r).mean(axis=1, keepdims=True) + 1e-300
    mu_rel = np.maximum(gap[:, None] / (2 * n), 1e-300) / sigma
    with np.errstate(divide="ignore"):
        ratio = (np.abs(r) / sigma) / np.minimum(a, 1 - a).clip(0, None)
    # at the interior optimum a basic residual is ~ mu / a, a nonbasic dual ~ mu / |r|, so
    # the ratio is ~ mu on Z and ~ r^2 / mu off it: the geometric mean separates them
    zero = ratio < np.sqrt(mu_rel)
    out, status = _vertices(design, yobs, tau, a, zero)
    # the rest sit on a face of solutions (or Z missed a row): walk to a vertex, then retry
    walk = np.flatnonzero((status == 0) & np.isfinite(coef).all(axis=1))
    walked = []
    for i in walk:
        z = _purify(design.dense_rows(i, np.arange(n)), yobs[i], coef[i], zero[i])
        if z is not None:
            zero[i] = z
            walked.append(i)
    if walked:
        sel = np.asarray(walked)
        out[sel], status[sel] = _vertices(design.subset(sel), yobs[sel], tau[sel], a[sel], zero[sel])
    return np.where(np.isfinite(out), out, coef), status


@dataclass(frozen=True)
class QRBatch:
    """Solutions of a batch of quantile regressions (:func:`quantile_regression_batch`).

    ``coef`` (B, p) in the caller's column order. ``status`` per problem: 2 = the interior
    point was crossed over to a vertex proved optimal and the *unique* optimum (HiGHS returns
    the same vertex); 1 = a vertex proved optimal on a face of optima (the LP has several
    solutions, all with the same loss; HiGHS may return another vertex of the face); 0 =
    solved by HiGHS (every problem with ``engine="highs"``, which says nothing about
    uniqueness). ``fallback`` counts the zeros; ``iterations`` are interior-point
    iterations (0 with HiGHS)."""

    coef: np.ndarray
    status: np.ndarray
    fallback: int
    iterations: np.ndarray


def _dense_design(dense: np.ndarray, factors: Sequence[tuple[np.ndarray, int]]) -> np.ndarray:
    """One problem's full design ``[dense | dummies of each factor, level 0 dropped]``."""
    n = dense.shape[0]
    cols = [dense]
    for codes, levels in factors:
        dm = np.zeros((n, levels - 1))
        m = codes > 0
        dm[np.flatnonzero(m), codes[m] - 1] = 1.0
        cols.append(dm)
    return np.concatenate(cols, axis=1)


def quantile_regression_batch(y: np.ndarray, dense: np.ndarray, taus: np.ndarray,
                              factors: Sequence[tuple[np.ndarray, int]] = (),
                              engine: str | None = None,
                              reference: np.ndarray | None = None) -> QRBatch:
    """Exact quantile regressions of ``B`` problems of ``n`` observations at once.

    Parameters
    ----------
    y : (B, n) outcomes.
    dense : (B, n, kd) dense regressors (include the constant).
    taus : (B,) quantile of each problem, strictly between 0 and 1.
    factors : up to two ``(codes, levels)``: codes (B, n) in ``0..levels-1`` whose dummies
        (level 0 dropped, so the constant in ``dense`` is their base) complete the design --
        unit and year fixed effects -- without materialising them.
    engine : ``"ipm"`` (batched Frisch-Newton with an exact crossover, HiGHS where the
        solution cannot be certified unique) or ``"highs"`` (one LP per problem, the
        reference); ``None`` uses :data:`QR_ENGINE`.
    reference : (B,) bool, optional. Problems that must return exactly the reference's
        vertex even where the LP has several solutions (status 1 is re-solved by HiGHS for
        them): QuantileDID's point estimates, so that they do not depend on the engine.

    Returns
    -------
    QRBatch
        Coefficients (B, kd + sum(levels - 1)) ordered ``[dense | factor 0 | factor 1]``.
    """
    engine = QR_ENGINE if engine is None else engine
    check_choice("engine", engine, QR_ENGINES)
    y = np.asarray(y, float)
    dense = np.asarray(dense, float)
    taus = np.asarray(taus, float)
    nb, n = y.shape
    if len(factors) > 2:
        raise EstimationError(f"at most two dummy factors are supported; got {len(factors)}")
    if np.any((taus <= 0) | (taus >= 1)):
        raise OptionError(f"quantiles {sorted(set(taus.tolist()))} must lie strictly between 0 and 1")
    factors = [(np.asarray(c, dtype=np.int64), int(lv)) for c, lv in factors]
    kd = dense.shape[2]
    p = kd + sum(lv - 1 for _, lv in factors)
    if nb == 0:
        return QRBatch(np.empty((0, p)), np.zeros(0, dtype=np.int8), 0, np.zeros(0, dtype=int))

    def by_highs(i: int) -> np.ndarray:
        return quantile_regression(y[i], _dense_design(dense[i], [(c[i], lv) for c, lv in factors]),
                                   taus[i])

    if engine == "highs":
        return QRBatch(np.array([by_highs(i) for i in range(nb)]), np.zeros(nb, dtype=np.int8), nb,
                       np.zeros(nb, dtype=int))
    # internal order [g | dense | h] with g the factor with more levels (the diagonal block)
    zero = (np.zeros((nb, n), dtype=np.int64), 1)
    fs = list(factors) + [zero] * (2 - len(factors))
    gi = 0 if fs[0][1] >= fs[1][1] else 1
    (g, ng), (h, nh) = fs[gi], fs[1 - gi]
    ng1, nh1 = ng - 1, nh - 1
    internal = np.r_[ng1 + np.arange(kd), ng1 + kd + np.arange(nh1), np.arange(ng1)] if gi == 1 \
        else np.r_[ng1 + np.arange(kd), np.arange(ng1), ng1 + kd + np.arange(nh1)]
    coef = np.empty((nb, p))
    status = np.zeros(nb, dtype=np.int8)
    iters = np.zeros(nb, dtype=int)
    step = max(1, _ROWS_PER_CHUNK // max(n, 1))
    for lo in range(0, nb, step):
        sl = slice(lo, min(nb, lo + step))
        design = _Structured(dense[sl], g[sl], ng, h[sl], nh)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            b, a, gap, it, ok = _fnb(design, y[sl], taus[sl])
            b, good = _crossover(design, y[sl], taus[sl], b, a, gap)
        coef[sl] = b[:, internal]
        status[sl] = good
        iters[sl] = it
    if reference is not None:
        status[np.asarray(reference, dtype=bool) & (status == 1)] = 0
    redo = np.flatnonzero(status == 0)
    for i in redo:
        coef[i] = by_highs(i)
    return QRBatch(coef, status, int(redo.size), iters)


def _check_quantiles(quantiles: Sequence[float]) -> tuple[float, ...]:
    qs = tuple(float(q) for q in quantiles)
    if not qs or any(not 0 < q < 1 for q in qs):
        raise OptionError(f"quantiles={list(quantiles)} must be numbers strictly between 0 and 1")
    return qs


def _check_common(est: Any) -> None:
    """The options both quantile estimators share: quantiles, bootstrap draws, alpha."""
    _check_quantiles(est.quantiles)
    check_count("n_boot", est.n_boot, 0)
    check_alpha(est.alpha)


def _estimate(est: str, label: str, qs: tuple[float, ...], values: np.ndarray, boot: np.ndarray | None,
              alpha: float, n_obs: int, n_units: int, headline: float, head_boot: np.ndarray | None,
              inference: str, notes: tuple[str, ...]) -> Estimate:
    se = boot.std(axis=0, ddof=1) if boot is not None else np.full(values.size, np.nan)
    head_se = float(head_boot.std(ddof=1)) if head_boot is not None else float("nan")
    names = [f"q{q:g}" for q in qs]
    terms = terms_frame(names, values, se, alpha, None, quantile=np.asarray(qs))
    crit = critical_value(alpha, None)
    from .result import p_value

    return Estimate(
        estimator=label, term=est, estimate=headline, std_error=head_se,
        p_value=float(p_value(headline / head_se, None)) if head_se > 0 else float("nan"),
        conf_low=headline - crit * head_se, conf_high=headline + crit * head_se, alpha=alpha,
        n_obs=n_obs, n_units=n_units, n_clusters=n_units, inference=inference, terms=terms,
        notes=notes,
    )


@dataclass(frozen=True)
class QuantileDID:
    """Conditional quantile DID: ``Q_q(y_it | i, t, x) = a_i(q) + l_t(q) + tau(q) d_it +
    x_it'b(q)`` at each quantile, with unit-cluster bootstrap SEs (``n_boot`` draws,
    ``rng`` needed; 0 for none). Headline: ``tau`` at the median."""

    outcome: str
    quantiles: Sequence[float] = DEFAULT_QUANTILES
    controls: Sequence[str] = ()
    n_boot: int = 99
    alpha: float = 0.05
    label: str = "quantile_did"

    def _design(self, panel: pd.DataFrame, rows: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        unit, n_units = codes_of(panel[UNIT].to_numpy() if rows is None else rows)
        time, n_periods = codes_of(panel[TIME].to_numpy())
        n = len(panel)
        x = np.zeros((n, 2 + len(self.controls) + (n_units - 1) + (n_periods - 1)))
        x[:, 0] = 1.0
        x[:, 1] = panel[D].to_numpy(float)
        for j, c in enumerate(self.controls):
            x[:, 2 + j] = panel[c].to_numpy(float)
        off = 2 + len(self.controls)
        m = unit > 0
        x[np.flatnonzero(m), off + unit[m] - 1] = 1.0
        off += n_units - 1
        m = time > 0
        x[np.flatnonzero(m), off + time[m] - 1] = 1.0
        return panel[self.outcome].to_numpy(float), x

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """The quantity the studies read ``tau(q)`` as: the treated cells' quantile
        treatment effects, ``Q_q(y | d=1) - Q_q(y0 | d=1)`` (``y0_<outcome>``), the same
        truth as :meth:`ChangesInChanges.estimand`. The coefficient targets a conditional
        quantile of the error instead, so its "bias" against this truth measures that
        misreading (seed 000's question), not a coding error."""
        qs = _check_quantiles(self.quantiles)
        treated = panel[D].to_numpy() == 1
        y1 = panel[self.outcome].to_numpy(float)[treated]
        y0 = panel[f"y0_{self.outcome}"].to_numpy(float)[treated]
        qtt = (np.quantile(y1, qs, method="inverted_cdf")
               - np.quantile(y0, qs, method="inverted_cdf"))
        out = {f"q{q:g}": float(v) for q, v in zip(qs, qtt)}
        med = int(np.argmin(np.abs(np.asarray(qs) - 0.5)))
        out[f"tau_q{qs[med]:g}"] = float(qtt[med])
        return out

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        _check_common(self)
        if self.outcome in tuple(self.controls):
            raise OptionError(f"controls {list(self.controls)} must not include the outcome")

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        self.check()
        qs = _check_quantiles(self.quantiles)
        check_panel(panel, (self.outcome,), tuple(self.controls))
        # every regression of the fit -- the panel's and each bootstrap draw's, at every
        # quantile -- goes to one batched solver (grouped by shape), not a loop of LPs
        yall = panel[self.outcome].to_numpy(float)
        dense = np.column_stack([np.ones(len(panel)), panel[D].to_numpy(float)]
                                + [panel[c].to_numpy(float) for c in self.controls])
        unit, n_units = codes_of(panel[UNIT].to_numpy())
        time_all = panel[TIME].to_numpy()
        samples: list[np.ndarray] = [np.arange(len(panel))]   # row indices of each sample
        slots: list[np.ndarray] = [unit]                        # their unit codes
        if self.n_boot > 0:
            if rng is None:
                raise OptionError("the bootstrap needs a generator: fit(panel, rng=...)")
            treated_u = np.zeros(n_units, dtype=int)
            treated_u[unit] = (panel[COHORT].to_numpy() > 0).astype(int)
            order = np.argsort(unit, kind="stable")
            starts = np.r_[0, np.cumsum(np.bincount(unit, minlength=n_units))]
            for pick in draw_units(treated_u, self.n_boot, rng, stratified=True):
                sizes = starts[pick + 1] - starts[pick]
                within = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
                samples.append(order[np.repeat(starts[pick], sizes) + within])
                slots.append(np.repeat(np.arange(pick.size), sizes))
        taus = np.empty((len(samples), len(qs)))
        groups: dict[tuple[int, int], list[int]] = {}
        tcodes = []
        for s, rows in enumerate(samples):
            tc, n_periods = codes_of(time_all[rows])
            tcodes.append(tc)
            groups.setdefault((rows.size, n_periods), []).append(s)
        nq = len(qs)
        for (_, n_periods), members in groups.items():
            rows = np.stack([samples[s] for s in members])
            fit_ = quantile_regression_batch(
                np.repeat(yall[rows], nq, axis=0), np.repeat(dense[rows], nq, axis=0),
                np.tile(np.asarray(qs), len(members)),
                [(np.repeat(np.stack([slots[s] for s in members]), nq, axis=0), n_units),
                 (np.repeat(np.stack([tcodes[s] for s in members]), nq, axis=0), n_periods)],
                # the panel's own estimates equal the reference LP's whatever the engine:
                # where the LP has a face of solutions, HiGHS's vertex (5 LPs); a draw
                # keeps the interior point's optimal vertex
                reference=np.repeat(np.asarray(members) == 0, nq))
            taus[members] = fit_.coef[:, 1].reshape(len(members), nq)
        tau = taus[0]
        boot = taus[1:] if self.n_boot > 0 else None
        med = int(np.argmin(np.abs(np.asarray(qs) - 0.5)))
        return _estimate(
            f"tau_q{qs[med]:g}", self.label, qs, tau, boot, self.alpha, len(panel),
            panel[UNIT].nunique(), float(tau[med]), None if boot is None else boot[:, med],
            f"unit-cluster bootstrap ({self.n_boot} draws), normal" if boot is not None else "no SEs",
            ("conditional quantile effects: quantiles of y given unit and year, not the "
             "treated units' outcome distribution (see ChangesInChanges)",))


@dataclass(frozen=True)
class ChangesInChanges:
    """Athey-Imbens changes-in-changes: quantile treatment effects on the treated.

    With a common treatment date: group 1 = treated units, 0 = never treated; period 0 =
    years before the date, 1 = from the date on (pooled). ``QTT(q) = F11^{-1}(q) -
    Q_q(F01^{-1}(F00(Y10)))`` and the headline ``ATT = mean(Y11) - mean(F01^{-1}(F00(Y10)))``.
    Unit-cluster bootstrap SEs within groups.
    """

    outcome: str
    quantiles: Sequence[float] = DEFAULT_QUANTILES
    n_boot: int = 199
    alpha: float = 0.05
    label: str = "changes_in_changes"

    @staticmethod
    def _qtt(y00: np.ndarray, y01: np.ndarray, y10: np.ndarray, y11: np.ndarray,
             qs: Sequence[float]) -> tuple[np.ndarray, float]:
        y00s = np.sort(y00)
        f00 = np.searchsorted(y00s, y10, side="right") / y00s.size     # F00(Y10)
        cf = np.quantile(y01, np.clip(f00, 0.0, 1.0), method="inverted_cdf")  # F01^{-1}
        qtt = (np.quantile(y11, qs, method="inverted_cdf")
               - np.quantile(cf, qs, method="inverted_cdf"))
        return qtt, float(y11.mean() - cf.mean())

    def _cells(self, panel: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cohorts = np.unique(panel.loc[panel[COHORT] > 0, COHORT])
        if cohorts.size != 1:
            raise EstimationError(f"changes-in-changes needs one treatment date; found {[int(c) for c in cohorts]}")
        treated = panel[COHORT].to_numpy() > 0
        post = panel[TIME].to_numpy() >= cohorts[0]
        return treated, post, panel[self.outcome].to_numpy(float)

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        _check_common(self)

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        self.check()
        qs = _check_quantiles(self.quantiles)
        check_panel(panel, (self.outcome,), ())
        g, t, y = self._cells(panel)

        def stat(mask: np.ndarray | None = None, weights_idx: np.ndarray | None = None):
            gi, ti, yi = (g, t, y) if weights_idx is None else (g[weights_idx], t[weights_idx], y[weights_idx])
            return self._qtt(yi[~gi & ~ti], yi[~gi & ti], yi[gi & ~ti], yi[gi & ti], qs)

        qtt, att = stat()
        boot = head = None
        if self.n_boot > 0:
            if rng is None:
                raise OptionError("the bootstrap needs a generator: fit(panel, rng=...)")
            units = panel[UNIT].to_numpy()
            uniq, inv = np.unique(units, return_inverse=True)
            gu = np.zeros(uniq.size, dtype=int)
            gu[inv] = g.astype(int)
            rows_of = [np.flatnonzero(inv == k) for k in range(uniq.size)]
            boot = np.empty((self.n_boot, len(qs)))
            head = np.empty(self.n_boot)
            for b, pick in enumerate(draw_units(gu, self.n_boot, rng, stratified=True)):
                idx = np.concatenate([rows_of[k] for k in pick])
                boot[b], head[b] = stat(weights_idx=idx)
        return _estimate("ATT", self.label, qs, qtt, boot, self.alpha, len(panel),
                         panel[UNIT].nunique(), att, head,
                         f"unit-cluster bootstrap ({self.n_boot} draws), normal" if boot is not None
                         else "no SEs",
                         ("quantile treatment effects on the treated (Athey-Imbens)",))

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True QTTs and ATT of the draw: quantiles of the treated post-period outcome with
        and without the effect (``y0_<outcome>``)."""
        qs = _check_quantiles(self.quantiles)
        g, t, y = self._cells(panel)
        m = g & t
        y0 = panel[f"y0_{self.outcome}"].to_numpy(float)[m]
        y1 = y[m]
        out = {f"q{q:g}": float(v) for q, v in zip(qs, np.quantile(y1, qs, method="inverted_cdf")
                                                   - np.quantile(y0, qs, method="inverted_cdf"))}
        out["ATT"] = float(y1.mean() - y0.mean())
        return out
