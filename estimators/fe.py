"""Numerical kernels for linear models with unit and period fixed effects.

These are plain functions on numpy arrays; estimators orchestrate them. Two within
transforms give identical residualised regressors:

* :func:`within_balanced` — closed form ``z_it - z_i. - z_.t + z_..`` for a balanced panel
  stored unit-major (the Monte Carlo fast path);
* :func:`within_general` — exact Frisch-Waugh-Lovell residualisation for any panel,
  balanced or not, weighted or not: demean within unit, then project out the (unit-demeaned)
  period dummies. No iteration, so no convergence tolerance.

:func:`ols_fe` fits the regression on the residualised data and returns the pieces every
covariance convention needs; :func:`vcov` applies one convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .panel import EstimationError, check_choice

SE_TYPES = ("cluster", "robust", "conventional")
SSC_TYPES = ("stata", "linearmodels", "full", "none")
DIST_TYPES = ("t", "normal")

#: relative squared norm under which a residualised regressor counts as absorbed
ABSORB_TOL = 1e-10
#: relative residual variance under which a regressor counts as collinear with earlier ones
COLLINEAR_TOL = 1e-10


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
    """
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


def _identified(x: np.ndarray, raw: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """Which residualised columns carry variation, in the order given (earlier ones win).

    A column is *absorbed* when the within transform leaves (numerically) nothing of it, and
    *collinear* when its residual on the earlier kept columns is (numerically) nothing. The
    squared Cholesky pivots of the Gram matrix are exactly those residual variances, so the
    common full-rank case costs one Cholesky; a greedy pass runs only when it fails.
    """
    k = x.shape[1]
    wx = x if w is None else x * w[:, None]
    gram = x.T @ wx
    diag = np.diag(gram).copy()
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
    keep, reasons = _identified(x, raw_x, weights)
    if not keep.any():
        shown = list(names) if names else f"all {x.shape[1]}"
        raise EstimationError(
            f"no regressor is identified: {shown} are absorbed by the fixed effects"
        )
    xk = x[:, keep] if not keep.all() else x
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
    scores = cluster_scores(fit.xw * e[:, None], clusters, dof.n_clusters)
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
