"""Bias-reduced cluster-robust variance (CR2, Bell and McCaffrey 2002) and its degrees of
freedom (Bell-McCaffrey / Satterthwaite, and Imbens and Kolesar 2016).

Everything is computed for the *dummy-variable* regression, the one R's
``lm(y ~ d + factor(unit) + factor(time))`` fits: the hat matrix ``H`` includes the fixed
effects. With the fixed effects partialled out (``X``: residualised regressors,
``Bread = (X'X)^-1``), Frisch-Waugh-Lovell gives ``I - H = M_FE - X Bread X'`` and the rows
of ``(Z'Z)^-1 Z'`` that belong to ``X`` equal ``Bread X'``, so

* ``V_CR2 = Bread [sum_g X_g' A_g e_g e_g' A_g X_g] Bread`` with
  ``A_g = ((I - H)_gg)^(-1/2)`` (symmetric square root, Moore-Penrose where singular:
  unit effects nested in a cluster make ``(I - H)_gg`` singular, and the residuals are
  orthogonal to its null space), no further small-sample factor -- R clubSandwich's
  ``vcovCR(type = "CR2")`` and dfadjust's ``LZ2``;
* for a contrast ``c``, with ``a_g = A_g X_g Bread c`` and ``G = [(I - H)_{., g} a_g]``
  (``N x G``), the Bell-McCaffrey degrees of freedom are ``tr(G'G)^2 / ||G'G||_F^2``
  (clubSandwich's ``coef_test(test = "Satterthwaite")`` with its default working model,
  dfadjust's ``IK = FALSE``); Imbens and Kolesar replace ``G'G`` by ``G' Omega G`` with
  Moulton's random-effects ``Omega = sig I + rho C C'`` (``C``: cluster indicators)
  estimated from the OLS residuals, as dfadjust does (``rho`` may be negative, dfadjust's
  ``rho0 = FALSE``).

The ``N x N`` residual maker is formed explicitly, so the size is capped (:data:`MAX_ROWS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .panel import EstimationError

#: largest number of rows for which the N x N residual maker is formed (about 1.3 GB)
MAX_ROWS = 12_000
#: relative eigenvalue under which (I - H)_gg counts as singular (dfadjust's tol = 1e-9)
EIG_TOL = 1e-9


@dataclass(frozen=True)
class CR2:
    """CR2 pieces of one fit; :meth:`vcov`, :meth:`df_bm` and :meth:`df_ik` use them."""

    xt: np.ndarray                 # (N, k) residualised regressors
    resid: np.ndarray              # (N,) residuals
    bread: np.ndarray              # (k, k)
    resid_maker: np.ndarray        # (N, N) I - H of the dummy-variable regression
    index: tuple[np.ndarray, ...]  # rows of each cluster
    adjust: tuple[np.ndarray, ...]  # A_g per cluster
    rho: float                     # Moulton's within-cluster covariance (dfadjust's rho)
    sig: float                     # and the idiosyncratic variance (dfadjust's sig)

    @property
    def n_clusters(self) -> int:
        return len(self.index)

    def vcov(self) -> np.ndarray:
        """``V_CR2`` of the identified coefficients."""
        k = self.xt.shape[1]
        meat = np.zeros((k, k))
        for rows, a in zip(self.index, self.adjust):
            s = self.xt[rows].T @ (a @ self.resid[rows])
            meat += np.outer(s, s)
        return self.bread @ meat @ self.bread

    def _g(self, c: np.ndarray) -> np.ndarray:
        """``(N, G)``: column g is ``(I - H)_{., g} A_g X_g Bread c``."""
        xc = self.xt @ (self.bread @ c)
        out = np.empty((self.xt.shape[0], self.n_clusters))
        for g, (rows, a) in enumerate(zip(self.index, self.adjust)):
            out[:, g] = self.resid_maker[:, rows] @ (a @ xc[rows])
        return out

    def df_bm(self, c: np.ndarray) -> float:
        """Bell-McCaffrey (Satterthwaite) degrees of freedom of ``c'beta``."""
        g = self._g(c)
        gg = g.T @ g
        return _df(gg)

    def df_ik(self, c: np.ndarray) -> float:
        """Imbens-Kolesar degrees of freedom of ``c'beta`` (Moulton working model)."""
        g = self._g(c)
        cg = np.stack([g[rows].sum(axis=0) for rows in self.index])  # (G, G): C'G
        gg = self.sig * (g.T @ g) + self.rho * (cg.T @ cg)
        return _df(gg)


def _df(gg: np.ndarray) -> float:
    den = float(np.sum(gg * gg))
    if not den > 0:
        raise EstimationError("the CR2 degrees of freedom are undefined (zero variance)")
    return float(np.trace(gg)) ** 2 / den


def _inv_sqrt(m: np.ndarray) -> np.ndarray:
    """Symmetric (Moore-Penrose) inverse square root of a PSD matrix."""
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    keep = vals >= EIG_TOL
    inv = np.zeros_like(vals)
    inv[keep] = 1.0 / np.sqrt(vals[keep])
    return (vecs * inv) @ vecs.T


def cr2(xt: np.ndarray, resid: np.ndarray, bread: np.ndarray, clusters: np.ndarray,
        n_clusters: int, within: Callable[[np.ndarray], np.ndarray]) -> CR2:
    """Build the CR2 pieces of an unweighted fixed-effects fit.

    Parameters
    ----------
    xt, resid, bread
        Residualised identified regressors, residuals and ``(X'X)^-1``.
    clusters, n_clusters
        Cluster codes per row.
    within
        The fixed-effects residual maker ``M_FE`` applied to an ``(N, m)`` matrix.
    """
    n = xt.shape[0]
    if n > MAX_ROWS:
        raise EstimationError(f"se='cr2' forms an N x N matrix and is limited to {MAX_ROWS} "
                              f"rows; this fit has {n}: use se='cluster'")
    resid_maker = within(np.eye(n)) - xt @ bread @ xt.T
    order = np.argsort(clusters, kind="stable")
    bounds = np.searchsorted(clusters[order], np.arange(n_clusters + 1))
    index = tuple(order[bounds[g]:bounds[g + 1]] for g in range(n_clusters))
    adjust = tuple(_inv_sqrt(resid_maker[np.ix_(rows, rows)]) for rows in index)
    # Moulton's model from the OLS residuals, exactly as dfadjust (rho0 = FALSE)
    ssr = float(resid @ resid)
    sizes = np.array([rows.size for rows in index], dtype=float)
    den = float(np.sum(sizes ** 2) - n)
    rho = 0.0
    if den > 0:
        sums = np.bincount(clusters, weights=resid, minlength=n_clusters)
        rho = (float(sums @ sums) - ssr) / den
    sig = max(ssr / n - rho, 0.0)
    return CR2(xt, resid, bread, resid_maker, index, adjust, rho, sig)


__all__ = ["CR2", "MAX_ROWS", "cr2"]
