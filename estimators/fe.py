"""Numerical kernels for linear models with unit and period fixed effects.

These are plain functions on numpy arrays; estimators orchestrate them. Two within
transforms give identical residualised regressors:

* :func:`within_balanced` — closed form ``z_it - z_i. - z_.t + z_..`` for a balanced panel
  stored unit-major (the Monte Carlo fast path);
* :func:`within_general` — exact Frisch-Waugh-Lovell residualisation for any panel,
  balanced or not, weighted or not: demean within unit, then project out the (unit-demeaned)
  period dummies. No iteration, so no convergence tolerance.

Two engines compute them (:data:`FE_ENGINE`, the module-level switch): ``"numpy"`` is the
reference (the algorithms as first written: dense period dummies and ``lstsq`` in
:func:`within_general`, observation-by-regressor score matrices), and ``"numba"`` is the
fast path used on panels of at least :data:`FAST_MIN_ROWS` rows: compiled one-pass kernels
(``cache=True``) for the balanced transform, the group sums, the centred column norms and
the cluster scores, and a closed form of :func:`within_general` that never builds the
period dummies (their unit-demeaned Gram matrix is ``diag(W_t) - A' diag(1/W_i) A`` with
``A`` the unit-by-period weight table, a sparse matrix with one entry per row). Memory is
linear in the rows: no observation-by-unit or observation-by-period matrix. Both engines
give the same numbers to rounding; ``tests/test_scale_fast.py`` pins them together (1e-10).
Small panels always take the reference path, so their numbers are bit for bit those
published before the fast path existed.

:func:`ols_fe` fits the regression on the residualised data and returns the pieces every
covariance convention needs; :func:`vcov` applies one convention.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .panel import EstimationError, check_choice

SE_TYPES = ("cluster", "robust", "conventional")
SSC_TYPES = ("stata", "linearmodels", "full", "none")
DIST_TYPES = ("t", "normal")

#: relative squared norm under which a residualised regressor counts as absorbed
ABSORB_TOL = 1e-10
#: relative residual variance under which a regressor counts as collinear with earlier ones
COLLINEAR_TOL = 1e-10

#: engines of the fixed-effects kernels: "numba" (compiled, closed forms; the fast path) and
#: "numpy" (the reference)
FE_ENGINES = ("numba", "numpy")
#: engine used on panels of at least FAST_MIN_ROWS rows ("numpy" where numba is missing);
#: tests set it to compare the two
FE_ENGINE = "numba" if importlib.util.find_spec("numba") is not None else "numpy"
#: rows from which the fast engine is used. Below it every fit takes the reference path,
#: so small panels (the province and city panels of the tests and Monte Carlo designs) keep
#: their numbers bit for bit and never import numba; tests set it to 0.
FAST_MIN_ROWS = 20_000


def use_fast(n_rows: int) -> bool:
    """Whether a problem of ``n_rows`` rows takes the fast engine (:data:`FE_ENGINE` is
    ``"numba"`` and ``n_rows >= FAST_MIN_ROWS``)."""
    check_choice("FE_ENGINE", FE_ENGINE, FE_ENGINES)
    return FE_ENGINE == "numba" and n_rows >= FAST_MIN_ROWS


# --- compiled kernels (numba, cache=True), built on first use --------------------------------
#
# Each is written as plain Python over arrays so that it reads as the specification; numba
# compiles it on the first fast fit (numba is imported then, not with didlab). Loops visit
# rows in order and accumulate in float64; the only difference from the reference is the
# order of additions (numpy sums pairwise), so results agree to rounding.

def _k_within_balanced(z, n_units, n_periods):  # pragma: no cover - compiled
    n, m = z.shape
    um = np.zeros((n_units, m))
    tm = np.zeros((n_periods, m))
    for i in range(n_units):
        for t in range(n_periods):
            r = i * n_periods + t
            for j in range(m):
                v = z[r, j]
                um[i, j] += v
                tm[t, j] += v
    for i in range(n_units):
        for j in range(m):
            um[i, j] /= n_periods
    grand = np.zeros(m)
    for i in range(n_units):
        for j in range(m):
            grand[j] += um[i, j]
    for j in range(m):
        grand[j] /= n_units
    for t in range(n_periods):
        for j in range(m):
            tm[t, j] = tm[t, j] / n_units - grand[j]
    out = np.empty((n, m))
    for i in range(n_units):
        for t in range(n_periods):
            r = i * n_periods + t
            for j in range(m):
                out[r, j] = z[r, j] - um[i, j] - tm[t, j]
    return out


def _k_group_sums(z, codes, n_groups, w, weighted):  # pragma: no cover - compiled
    n, m = z.shape
    out = np.zeros((n_groups, m))
    for r in range(n):
        g = codes[r]
        if weighted:
            wr = w[r]
            for j in range(m):
                out[g, j] += z[r, j] * wr
        else:
            for j in range(m):
                out[g, j] += z[r, j]
    return out


def _k_sub_gathers(z, a, ia, b, ib):  # pragma: no cover - compiled
    n, m = z.shape
    out = np.empty((n, m))
    for r in range(n):
        p = ia[r]
        q = ib[r]
        for j in range(m):
            out[r, j] = z[r, j] - a[p, j] - b[q, j]
    return out


def _k_centred_sq_norms(x):  # pragma: no cover - compiled
    # row by row (the array is row-major): column sums and constancy, then squares
    n, m = x.shape
    out = np.zeros(m)
    if n == 0:
        return out
    sums = np.zeros(m)
    const = np.ones(m, dtype=np.bool_)
    for r in range(n):
        for j in range(m):
            v = x[r, j]
            sums[j] += v
            if v != x[0, j]:
                const[j] = False
    for j in range(m):
        sums[j] /= n
    for r in range(n):
        for j in range(m):
            d = x[r, j] - sums[j]
            out[j] += d * d
    for j in range(m):
        if const[j]:
            out[j] = 0.0  # exactly zero, as the reference gives for a constant column
    return out


def _k_cluster_scores(xw, e, clusters, n_clusters):  # pragma: no cover - compiled
    n, k = xw.shape
    out = np.zeros((n_clusters, k))
    for r in range(n):
        g = clusters[r]
        er = e[r]
        for j in range(k):
            out[g, j] += xw[r, j] * er
    return out


_KERNELS: dict[str, Callable[..., Any]] = {}


def _kernel(name: str) -> Callable[..., Any]:
    """The compiled kernel ``_k_<name>`` (compiled, or loaded from numba's cache, once)."""
    fn = _KERNELS.get(name)
    if fn is None:
        import numba

        fn = numba.njit(cache=True, nogil=True)(globals()[f"_k_{name}"])
        _KERNELS[name] = fn
    return fn


def _f64(z: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(z, dtype=np.float64)


def group_sums(z: np.ndarray, codes: np.ndarray, n_groups: int,
               weights: np.ndarray | None = None) -> np.ndarray:
    """``(n_groups, m)`` sums of the rows of ``z`` ``(N, m)`` (times ``weights``) by code,
    in one pass (compiled)."""
    w = np.empty(0) if weights is None else _f64(weights)
    return _kernel("group_sums")(_f64(z), np.asarray(codes, dtype=np.intp), int(n_groups), w,
                                 weights is not None)


def centred_sq_norms(x: np.ndarray) -> np.ndarray:
    """``sum_i (x_ij - mean_j)^2`` per column, exactly 0 for a constant column (compiled, no
    copy of ``x``)."""
    return _kernel("centred_sq_norms")(_f64(x))


def cluster_scores_of(xw: np.ndarray, e: np.ndarray, clusters: np.ndarray,
                      n_clusters: int) -> np.ndarray:
    """``(G, k)`` cluster sums of ``xw * e[:, None]`` without forming the ``(N, k)`` product:
    the compiled path of :func:`cluster_scores`, the numpy reference below it."""
    if not use_fast(xw.shape[0]):
        return cluster_scores(xw * e[:, None], clusters, n_clusters)
    return _kernel("cluster_scores")(_f64(xw), _f64(e), np.asarray(clusters, dtype=np.intp),
                                     int(n_clusters))


def within_balanced(z: np.ndarray, n_units: int, n_periods: int) -> np.ndarray:
    """Two-way within transform of a balanced, unit-major panel.

    Parameters
    ----------
    z
        Array of shape ``(n_units * n_periods, m)`` ordered unit by unit, periods ascending.

    Returns
    -------
    numpy.ndarray
        ``z_it - mean_i(z) - mean_t(z) + mean(z)`` with the input's shape.
    """
    if use_fast(z.shape[0]):
        return _kernel("within_balanced")(_f64(z), int(n_units), int(n_periods))
    m = z.shape[1]
    c = z.reshape(n_units, n_periods, m)
    unit_mean = c.mean(axis=1, keepdims=True)
    time_mean = c.mean(axis=0, keepdims=True)
    grand = unit_mean.mean(axis=0, keepdims=True)
    return (c - unit_mean - time_mean + grand).reshape(-1, m)


def _group_mean(z: np.ndarray, codes: np.ndarray, n_groups: int, w: np.ndarray | None) -> np.ndarray:
    if w is None:
        counts = np.bincount(codes, minlength=n_groups).astype(float)
        sums = np.zeros((n_groups, z.shape[1]))
        _bincount_cols(sums, codes, z, None)
        return sums / counts[:, None]
    wsum = np.bincount(codes, weights=w, minlength=n_groups)
    sums = np.zeros((n_groups, z.shape[1]))
    _bincount_cols(sums, codes, z, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = sums / wsum[:, None]
    return np.nan_to_num(out)


def _bincount_cols(out: np.ndarray, codes: np.ndarray, z: np.ndarray, w: np.ndarray | None) -> None:
    n = out.shape[0]
    for j in range(z.shape[1]):
        out[:, j] = np.bincount(codes, weights=z[:, j] if w is None else z[:, j] * w, minlength=n)


def within_general(
    z: np.ndarray,
    unit: np.ndarray,
    time: np.ndarray,
    n_units: int,
    n_periods: int,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Residualise ``z`` on unit and period dummies (exact, any panel, optional weights).

    Frisch-Waugh-Lovell: demean within unit (weighted means), then remove the weighted
    least-squares projection on the unit-demeaned period dummies (the first period is the
    base). The result equals the residual of a dummy-variable regression of ``z`` on both
    sets of dummies.

    On panels of :data:`FAST_MIN_ROWS` rows or more (engine ``"numba"``) the same residual is
    computed in closed form without the dummies (:func:`_within_general_fast`).
    """
    if use_fast(z.shape[0]):
        return _within_general_fast(z, unit, time, n_units, n_periods, weights)
    zt = z - _group_mean(z, unit, n_units, weights)[unit]
    if n_periods <= 1:
        return zt
    dummies = np.zeros((z.shape[0], n_periods - 1))
    rows = np.nonzero(time > 0)[0]
    dummies[rows, time[rows] - 1] = 1.0
    dt = dummies - _group_mean(dummies, unit, n_units, weights)[unit]
    if weights is None:
        coef, *_ = np.linalg.lstsq(dt, zt, rcond=None)
    else:
        sw = np.sqrt(weights)[:, None]
        coef, *_ = np.linalg.lstsq(dt * sw, zt * sw, rcond=None)
    return zt - dt @ coef


#: eigenvalues of the demeaned period-dummy Gram matrix below this share of the largest count
#: as zero (a period the unit effects span, e.g. a group's first period with time_by)
_PERIOD_RANK_TOL = 1e-10


def _within_general_fast(z: np.ndarray, unit: np.ndarray, time: np.ndarray, n_units: int,
                         n_periods: int, weights: np.ndarray | None) -> np.ndarray:
    """:func:`within_general` in closed form, with memory linear in the rows.

    With ``W`` the observation weights, ``P_u`` the weighted unit-mean projection and ``D``
    the period dummies (first dropped), FWL gives ``z~ = (I - P_u) z`` and the residual
    ``z~ - D~ c`` with ``D~ = (I - P_u) D`` and ``(D~'W D~) c = D~'W z~``. Here

    * ``D~'W D~ = diag(W_t) - A' diag(1/W_i) A`` with ``A`` the unit-by-period table of
      weights (sparse: one entry per row),
    * ``D~'W z~ = D'W z~`` (``P_u`` is ``W``-self-adjoint and ``P_u z~ = 0``): period sums,
    * ``D~ c = c[t] - (A c / W_i)[i]``,

    so the residual is ``z - (mean_i(z) - (A c)_i / W_i)[i] - c[t]`` in one fused pass
    (``z~`` itself is never formed: its period sums are those of ``z`` minus ``A'`` times
    the unit means). The
    small system is solved by an eigendecomposition that treats directions spanned by the
    unit effects (a rank-deficient ``D~``) as zero, as ``lstsq`` does in the reference.
    """
    import scipy.sparse as sp

    z = _f64(z)
    unit = np.asarray(unit, dtype=np.intp)
    time = np.asarray(time, dtype=np.intp)
    w = None if weights is None else _f64(weights)
    unit_w = (np.bincount(unit, minlength=n_units).astype(float) if w is None
              else np.bincount(unit, weights=w, minlength=n_units))
    inv_w = np.where(unit_w > 0, 1.0 / np.where(unit_w > 0, unit_w, 1.0), 0.0)
    gm = group_sums(z, unit, n_units, w) * inv_w[:, None]            # weighted unit means
    if n_periods <= 1:
        return _kernel("sub_gathers")(z, gm, unit, np.zeros((1, z.shape[1])),
                                      np.zeros(unit.size, dtype=np.intp))
    vals = np.ones(unit.size) if w is None else w
    a = sp.csr_matrix((vals, (unit, time)), shape=(n_units, n_periods))   # sums duplicates
    period_w = np.asarray(a.sum(axis=0)).ravel()
    gram = np.diag(period_w) - (a.T @ sp.diags(inv_w) @ a).toarray()
    # D'W z~ = period sums of z minus those of the unit means (z~ is never formed)
    rhs = group_sums(z, time, n_periods, w) - a.T @ gm
    g, h = gram[1:, 1:], rhs[1:]
    vals_g, vecs = np.linalg.eigh(g)
    scale = float(period_w.max()) if period_w.size else 1.0
    ok = vals_g > _PERIOD_RANK_TOL * scale
    coef = vecs[:, ok] @ ((vecs[:, ok].T @ h) / vals_g[ok][:, None])
    c_full = np.vstack([np.zeros((1, z.shape[1])), coef])             # (n_periods, m)
    pu = (a @ c_full) * inv_w[:, None]                                # (A c)_i / W_i
    return _kernel("sub_gathers")(z, gm - pu, unit, c_full, time)


@dataclass(frozen=True)
class OLSFit:
    """Pieces of a fixed-effects least-squares fit needed by every covariance convention."""

    coef: np.ndarray          # (k,) identified coefficients
    keep: np.ndarray          # (k_all,) bool, which requested regressors are identified
    reasons: tuple[str, ...]  # per requested regressor: "" or why it is not identified
    bread: np.ndarray         # (k, k) inverse of X'WX
    xw: np.ndarray            # (N, k) residualised regressors times weights
    resid: np.ndarray         # (N,) residuals of the full fixed-effects regression
    x: np.ndarray             # (N, k) residualised identified regressors


def _identified(x: np.ndarray, raw: np.ndarray, w: np.ndarray | None,
                gram: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Which residualised columns carry variation, in the order given (earlier ones win).

    A column is *absorbed* when the within transform leaves (numerically) nothing of it, and
    *collinear* when its residual on the earlier kept columns is (numerically) nothing. The
    squared Cholesky pivots of the Gram matrix are exactly those residual variances, so the
    common full-rank case costs one Cholesky; a greedy pass runs only when it fails.
    """
    k = x.shape[1]
    if gram is None:
        wx = x if w is None else x * w[:, None]
        gram = x.T @ wx
    diag = np.diag(gram).copy()
    if use_fast(raw.shape[0]):
        raw_norm = centred_sq_norms(raw)
    else:
        raw_c = raw - raw.mean(axis=0)
        raw_norm = np.einsum("ij,ij->j", raw_c, raw_c)
    wscale = 1.0 if w is None else float(w.mean())
    absorbed = (raw_norm == 0) | (diag <= ABSORB_TOL * np.where(raw_norm > 0, raw_norm, 1.0) * wscale)
    if not absorbed.any():
        try:
            chol = np.linalg.cholesky(gram)
            if np.all(np.diag(chol) ** 2 > COLLINEAR_TOL * diag):
                return np.ones(k, dtype=bool), [""] * k
        except np.linalg.LinAlgError:
            pass
    keep = np.zeros(k, dtype=bool)
    reasons = [""] * k
    for j in range(k):
        if absorbed[j]:
            reasons[j] = "absorbed by the fixed effects"
            continue
        idx = np.nonzero(keep)[0]
        if idx.size:
            g_kk = gram[np.ix_(idx, idx)]
            g_kj = gram[idx, j]
            resid_var = diag[j] - g_kj @ np.linalg.solve(g_kk, g_kj)
            if resid_var <= COLLINEAR_TOL * diag[j]:
                reasons[j] = "collinear with the other regressors"
                continue
        keep[j] = True
    return keep, reasons


def ols_fe(
    y: np.ndarray,
    x: np.ndarray,
    raw_x: np.ndarray,
    weights: np.ndarray | None = None,
    names: tuple[str, ...] | None = None,
) -> OLSFit:
    """Least squares on residualised data, dropping (and reporting) unidentified columns.

    Parameters
    ----------
    y, x
        Residualised outcome ``(N,)`` and regressors ``(N, k)``.
    raw_x
        The regressors before the within transform, used only to tell a column absorbed by
        the fixed effects (its residual is numerically zero) from a genuine one.
    weights
        Optional observation weights (weighted least squares).
    """
    fast = use_fast(x.shape[0])
    gram_all = None
    if fast:  # one Gram matrix for the identification check and the fit
        xw_all = x if weights is None else x * weights[:, None]
        gram_all = x.T @ xw_all
    keep, reasons = _identified(x, raw_x, weights, gram_all)
    if not keep.any():
        shown = list(names) if names else f"all {x.shape[1]}"
        raise EstimationError(
            f"no regressor is identified: {shown} are absorbed by the fixed effects"
        )
    xk = x[:, keep] if not keep.all() else x
    if fast and keep.all():
        xw, gram = xw_all, gram_all
    else:
        xw = xk if weights is None else xk * weights[:, None]
        gram = xk.T @ xw
    try:
        bread = np.linalg.inv(gram)
    except np.linalg.LinAlgError as exc:  # pragma: no cover - guarded by _identified
        raise EstimationError(f"singular design after the within transform: {exc}") from exc
    coef = bread @ (xw.T @ y)
    resid = y - xk @ coef
    return OLSFit(coef, keep, tuple(reasons), bread, xw, resid, xk)


@dataclass(frozen=True)
class Dof:
    """Counts that small-sample conventions use."""

    n_obs: int
    k: int              # identified regressors of interest
    n_units: int
    n_periods: int
    n_clusters: int     # 0 when not clustering
    unit_nested: bool   # unit effects nested in the clusters
    time_nested: bool   # period effects nested in the clusters
    n_time_groups: int = 1  # >1 with group-by-period effects (units nested in the groups)

    @property
    def k_fe(self) -> int:
        """Rank of the two sets of dummies together: units + period cells - groups (one
        period dummy per group is spanned by the unit dummies)."""
        return self.n_units + self.n_periods - self.n_time_groups

    @property
    def k_full(self) -> int:
        """All parameters of the dummy-variable regression (areg / statsmodels)."""
        return self.k + self.k_fe

    @property
    def k_stata(self) -> int:
        """Parameters counted by Stata's xtreg fe / reghdfe: regressors, constant, and the
        fixed effects that are not nested in the clusters."""
        k = self.k + 1
        if not self.unit_nested:
            k += self.n_units - 1
        if not self.time_nested:
            k += self.n_periods - self.n_time_groups
        return k

    def df_resid(self) -> int:
        return self.n_obs - self.k_full


def vcov(fit: OLSFit, se: str, ssc: str, dof: Dof, clusters: np.ndarray | None,
         weights: np.ndarray | None = None) -> np.ndarray:
    """Covariance of the identified coefficients under one SE type and small-sample rule.

    Small-sample factors (``ssc``), with N observations, k regressors, G clusters:

    ============== ================================= ====================== =====================
    ssc            cluster                           robust                 conventional
    ============== ================================= ====================== =====================
    ``stata``      G/(G-1)·(N-1)/(N-K_stata)         N/(N-K_full)  (HC1)    RSS/(N-K_full)
    ``full``       G/(G-1)·(N-1)/(N-K_full)          N/(N-K_full)  (HC1)    RSS/(N-K_full)
    ``linearmodels`` N/(N-K_full)                    N/(N-K_full)           RSS/(N-K_full)
    ``none``       1                                 1 (HC0)                RSS/N
    ============== ================================= ====================== =====================

    ``K_stata`` counts the regressors, the constant and the fixed effects not nested in the
    clusters (``xtreg, fe vce(cluster)``, ``reghdfe``); ``K_full`` counts every dummy
    (``areg``, statsmodels OLS with dummies).
    """
    factor = ssc_factor(se, ssc, dof)
    e = fit.resid
    if se == "conventional":
        rss = float(e @ (e if weights is None else e * weights))
        return fit.bread * (rss * factor)
    if se == "robust":
        scores = fit.xw * e[:, None]
        return factor * (fit.bread @ (scores.T @ scores) @ fit.bread)
    assert clusters is not None
    scores = cluster_scores_of(fit.xw, e, clusters, dof.n_clusters)
    return factor * (fit.bread @ (scores.T @ scores) @ fit.bread)


def ssc_factor(se: str, ssc: str, dof: Dof) -> float:
    """The small-sample factor of :func:`vcov`'s table (for ``conventional``: 1/denominator
    of the residual variance). Shared by the fast permutation path."""
    check_choice("se", se, SE_TYPES)
    check_choice("ssc", ssc, SSC_TYPES)
    n = dof.n_obs
    if se == "conventional":
        denom = n if ssc == "none" else n - dof.k_full
        if denom <= 0:
            raise EstimationError("no residual degrees of freedom for conventional SEs")
        return 1.0 / denom
    if se == "robust":
        return 1.0 if ssc == "none" else n / (n - dof.k_full)
    g = dof.n_clusters
    if g < 2:
        raise EstimationError("cluster-robust SEs need at least 2 clusters")
    if ssc == "stata":
        return g / (g - 1) * (n - 1) / (n - dof.k_stata)
    if ssc == "full":
        return g / (g - 1) * (n - 1) / (n - dof.k_full)
    if ssc == "linearmodels":
        # PanelOLS(cov_type="clustered") with its defaults (auto_df, count_effects): the
        # effects are counted, no G/(G-1); its group_debias=True equals ssc="full".
        return n / (n - dof.k_full)
    return 1.0


def cluster_scores(scores: np.ndarray, clusters: np.ndarray, n_clusters: int) -> np.ndarray:
    """Sum observation scores ``(N, k)`` within clusters -> ``(G, k)``."""
    out = np.empty((n_clusters, scores.shape[1]))
    for j in range(scores.shape[1]):
        out[:, j] = np.bincount(clusters, weights=scores[:, j], minlength=n_clusters)
    return out


def reference_df(se: str, dist: str, dof: Dof) -> float | None:
    """Degrees of freedom of the reference t law (None = normal).

    ``dist="t"`` follows Stata: t(G-1) with clustered SEs, t(N-K_full) otherwise.
    """
    check_choice("dist", dist, DIST_TYPES)
    if dist == "normal":
        return None
    if se == "cluster":
        return float(dof.n_clusters - 1)
    return float(dof.df_resid())
