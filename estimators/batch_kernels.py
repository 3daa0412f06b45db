"""Compiled kernels of the replicate-batched two-way FE fits (:mod:`estimators.batch`).

Imported on the first batched fit that uses them (``estimators.batch.BATCH_ENGINE =
"numba"``), never with didlab: this module imports numba at its top so that the kernels can
call one another and be cached on disk (``cache=True``).

Every kernel loops over replicates and works on one replicate's arrays at a time, visiting
observations in the same order whatever the batch: a replicate's numbers do not depend on
which other replicates share its batch. The numpy path of :func:`estimators.batch._fe_ols`
is the reference; the two agree to rounding (``tests/test_batch.py``).
"""

from __future__ import annotations

import numba
import numpy as np

#: a kernel's covariance convention: 0 conventional (``bread * rss``), 1
#: heteroskedasticity-robust (one score per observation), 2 clustered by unit
MODES = {"conventional": 0, "robust": 1, "cluster": 2}


@numba.njit(cache=True, nogil=True)
def _scratch(n, t, k):
    """Work arrays of :func:`_fit_one` for ``N x T`` replicates with ``K`` regressors."""
    return (np.empty((n, t)), np.empty(n), np.empty(t), np.empty(k), np.empty(k),
            np.empty((k, k)), np.empty((k, k)))


@numba.njit(cache=True, nogil=True)
def _fit_one(y, xt, bread, mode, factor, coef, cov, scratch):
    """One replicate: two-way within transform of ``y`` ``(N, T)``, ``coef = bread @ xt'y``,
    residuals and ``cov = factor * bread meat bread`` (mode 0: ``bread * rss * factor``)
    for within-transformed regressors ``xt`` ``(N, T, K)``. Writes ``coef`` ``(K,)`` and
    ``cov`` ``(K, K)``; ``scratch`` is :func:`_scratch`'s. Returns whether the within
    outcome varies (beyond 1e-10 of ``max |y|``, :func:`estimators.regression.fit_fe`'s
    test). Two passes over the observations: the within outcome and ``xt'y``; residuals
    and scores."""
    r, um, tm, xty, s, meat, half = scratch
    n, t = y.shape
    k = xt.shape[2]
    scale = 0.0
    tm[:] = 0.0
    grand = 0.0
    for i in range(n):
        acc = 0.0
        for j in range(t):
            v = y[i, j]
            acc += v
            tm[j] += v
            if abs(v) > scale:
                scale = abs(v)
        um[i] = acc / t
        grand += um[i]
    grand /= n
    for j in range(t):
        tm[j] /= n
    tol = 1e-10 * max(scale, 1e-300)
    varies = False
    xty[:] = 0.0
    for i in range(n):
        for j in range(t):
            v = y[i, j] - um[i] - tm[j] + grand
            r[i, j] = v
            if abs(v) > tol:
                varies = True
            for q in range(k):
                xty[q] += xt[i, j, q] * v
    for q in range(k):
        acc = 0.0
        for m in range(k):
            acc += bread[q, m] * xty[m]
        coef[q] = acc
    meat[:, :] = 0.0
    rss = 0.0
    for i in range(n):
        s[:] = 0.0
        for j in range(t):
            e = r[i, j]
            for q in range(k):
                e -= xt[i, j, q] * coef[q]
            if mode == 0:
                rss += e * e
            elif mode == 1:     # one score per observation
                for q in range(k):
                    s[q] = xt[i, j, q] * e
                for q in range(k):
                    for m in range(k):
                        meat[q, m] += s[q] * s[m]
            else:               # one score per unit: its periods summed
                for q in range(k):
                    s[q] += xt[i, j, q] * e
        if mode == 2:
            for q in range(k):
                for m in range(k):
                    meat[q, m] += s[q] * s[m]
    if mode == 0:
        for q in range(k):
            for m in range(k):
                cov[q, m] = bread[q, m] * (rss * factor)
        return varies
    for q in range(k):
        for m in range(k):
            acc = 0.0
            for p in range(k):
                acc += bread[q, p] * meat[p, m]
            half[q, m] = acc
    for q in range(k):
        for m in range(k):
            acc = 0.0
            for p in range(k):
                acc += half[q, p] * bread[p, m]
            cov[q, m] = factor * acc
    return varies


@numba.njit(cache=True, nogil=True)
def fe_ols_shared(y, xt, bread, mode, factor):
    """:func:`_fit_one` on every replicate ``y[b]`` ``(B, N, T)`` with the regressors ``xt``
    ``(N, T, K)`` (within-transformed) and ``bread`` shared by all. Returns ``coef (B, K)``,
    ``cov (B, K, K)`` and ``varies (B,)``."""
    b_n, n, t = y.shape
    k = xt.shape[2]
    coef = np.zeros((b_n, k))
    cov = np.zeros((b_n, k, k))
    varies = np.zeros(b_n, dtype=np.bool_)
    scratch = _scratch(n, t, k)
    for b in range(b_n):
        varies[b] = _fit_one(y[b], xt, bread, mode, factor, coef[b], cov[b], scratch)
    return coef, cov, varies


@numba.njit(cache=True, nogil=True)
def fe_ols_own(y, x, mode, factor, absorb_tol, collinear_tol):
    """Every replicate with its own regressors: ``x`` ``(B, K, N, T)`` raw, ``y``
    ``(B, N, T)``. Per replicate: the two-way within transform of each regressor, its Gram
    matrix, :func:`estimators.fe.ols_fe`'s tests (a regressor absorbed by the fixed effects:
    within norm at most ``absorb_tol`` times its centred norm; collinear: a Cholesky pivot
    at most ``collinear_tol`` times its diagonal), the inverse Gram matrix from the Cholesky
    factor, then :func:`_fit_one`. Returns ``coef (B, K)``, ``cov (B, K, K)`` and ``ok
    (B,)``: every regressor kept and the outcome varying (the others are left at zero)."""
    b_n, k, n, t = x.shape
    o = n * t
    coef = np.zeros((b_n, k))
    cov = np.zeros((b_n, k, k))
    ok = np.zeros(b_n, dtype=np.bool_)
    xt = np.empty((n, t, k))
    gram = np.empty((k, k))
    chol = np.empty((k, k))
    inv_l = np.empty((k, k))
    bread = np.empty((k, k))
    scratch = _scratch(n, t, k)
    tm = scratch[2]
    um = scratch[1]
    for b in range(b_n):
        good = True
        for q in range(k):
            tm[:] = 0.0
            grand = 0.0
            total = 0.0
            for i in range(n):
                acc = 0.0
                for j in range(t):
                    v = x[b, q, i, j]
                    acc += v
                    tm[j] += v
                um[i] = acc / t
                grand += um[i]
                total += acc
            grand /= n
            mu = total / o
            raw_norm = 0.0
            for i in range(n):
                for j in range(t):
                    v = x[b, q, i, j]
                    c = v - mu
                    raw_norm += c * c
                    xt[i, j, q] = v - um[i] - tm[j] / n + grand
            norm = 0.0
            for i in range(n):
                for j in range(t):
                    norm += xt[i, j, q] * xt[i, j, q]
            if raw_norm == 0.0 or norm <= absorb_tol * raw_norm:
                good = False
        if not good:
            continue
        for q in range(k):
            for m in range(q + 1):
                acc = 0.0
                for i in range(n):
                    for j in range(t):
                        acc += xt[i, j, q] * xt[i, j, m]
                gram[q, m] = acc
                gram[m, q] = acc
        # Cholesky gram = L L'; a pivot L[q, q]^2 at most collinear_tol * gram[q, q] means
        # regressor q is (nearly) a combination of the earlier ones
        for q in range(k):
            for m in range(q + 1):
                acc = gram[q, m]
                for p in range(m):
                    acc -= chol[q, p] * chol[m, p]
                if q == m:
                    if acc <= collinear_tol * gram[q, q]:
                        good = False
                        break
                    chol[q, q] = np.sqrt(acc)
                else:
                    chol[q, m] = acc / chol[m, m]
            if not good:
                break
        if not good:
            continue
        # bread = inv(gram) = L^-T L^-1
        for q in range(k):
            for m in range(k):
                inv_l[q, m] = 0.0
        for m in range(k):
            inv_l[m, m] = 1.0 / chol[m, m]
            for q in range(m + 1, k):
                acc = 0.0
                for p in range(m, q):
                    acc -= chol[q, p] * inv_l[p, m]
                inv_l[q, m] = acc / chol[q, q]
        for q in range(k):
            for m in range(k):
                acc = 0.0
                for p in range(max(q, m), k):
                    acc += inv_l[p, q] * inv_l[p, m]
                bread[q, m] = acc
        ok[b] = _fit_one(y[b], xt, bread, mode, factor, coef[b], cov[b], scratch)
    return coef, cov, ok
