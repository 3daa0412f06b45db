"""Wild cluster bootstrap of one linear combination of fixed-effects coefficients.

The algorithm is Roodman, MacKinnon, Nielsen and Webb (2019, "Fast and wild", Stata
Journal 19(1)), the one behind Stata's ``boottest`` and R's ``fwildclusterboot``: after the
fixed effects and controls are partialled out, the bootstrap numerator ``w'b* - a`` and the
cluster scores of the bootstrap variance are linear in the draw's weights ``v`` (one per
cluster), so all draws are two matrix products with a ``(G, G)`` matrix instead of B
regressions.

Notation (everything in the within-transformed space, ``N`` rows, ``k`` regressors, ``G``
clusters): ``X`` the residualised regressors, ``Bread = (X'X)^-1``, ``b = Bread w``,
``xb = X b``. The bootstrap sample is ``y* = X beta_0 + u . v[cluster]`` with
``u`` the restricted (WCR, null ``w'beta = a`` imposed) or unrestricted (WCU) residuals.
Re-fitting it with the fixed effects gives

* numerator ``w'beta* - a = sum_h v_h c_h`` with ``c_h = sum_{i in h} xb_i u_i``;
* residuals ``u* = (I - H)(u . v)`` where ``H`` is the hat matrix of the full
  dummy-variable regression (``I - H = M_FE - X Bread X'``), so the bootstrap score of
  cluster ``g`` projected on ``b`` is ``sum_h K_gh v_h`` with
  ``K_gh = sum_{i in g} xb_i [(I - H) u_(h)]_i`` (``u_(h)``: ``u`` on cluster ``h``, zero
  elsewhere).

The restricted residuals are affine in the null value ``a``: ``u(a) = u_hat + delta xb /
(w'b)`` with ``delta = w'beta_hat - a``; so ``c`` and ``K`` are affine in ``delta`` and the
p-value of any null costs ``O(B)`` once ``c'V`` and ``KV`` are formed. The confidence
interval inverts that p-value function by root finding, as ``boottest`` does.

The bootstrap t statistic uses the same cluster-robust variance (CRV1) as the original one;
the small-sample factor cancels from the p-value, so it is left out of both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import optimize

from .panel import EstimationError, OptionError

WILD_TYPES = ("wcr", "wcu")
WILD_WEIGHTS = ("rademacher", "webb", "mammen")

_SQ5 = np.sqrt(5.0)
#: Mammen's two-point law: mean 0, variance 1, third moment 1
MAMMEN_VALUES = np.array([-(_SQ5 - 1) / 2, (_SQ5 + 1) / 2])
MAMMEN_PROBS = np.array([(_SQ5 + 1) / (2 * _SQ5), (_SQ5 - 1) / (2 * _SQ5)])
#: Webb's six-point law: +-sqrt(3/2), +-1, +-sqrt(1/2), each with probability 1/6
WEBB_VALUES = np.array([-np.sqrt(1.5), -1.0, -np.sqrt(0.5), np.sqrt(0.5), 1.0, np.sqrt(1.5)])


def enumerates(weights: str, n_clusters: int, draws: int) -> bool:
    """Whether the bootstrap enumerates every Rademacher sign vector (``2^G <= draws``, as
    ``boottest``) instead of drawing: then it is exact and needs no generator."""
    return weights == "rademacher" and n_clusters < 63 and 2 ** n_clusters <= draws


def draw_weights(weights: str, n_clusters: int, draws: int,
                 rng: np.random.Generator | None) -> np.ndarray:
    """The ``(G, B)`` matrix of wild weights, one column per bootstrap sample.

    Rademacher weights with ``2^G <= draws`` are every sign vector (``B = 2^G``, no
    randomness); otherwise ``draws`` columns are drawn from ``rng``.
    """
    if enumerates(weights, n_clusters, draws):
        codes = np.arange(2 ** n_clusters, dtype=np.int64)
        bits = (codes[None, :] >> np.arange(n_clusters, dtype=np.int64)[:, None]) & 1
        return 1.0 - 2.0 * bits
    if rng is None:
        raise OptionError(f"dist='wild' with {weights} weights and {n_clusters} clusters draws "
                          "random weights: fit(panel, rng=numpy.random.default_rng(...))")
    size = (n_clusters, draws)
    if weights == "rademacher":
        return 2.0 * rng.integers(0, 2, size=size) - 1.0
    if weights == "webb":
        return WEBB_VALUES[rng.integers(0, 6, size=size)]
    if weights == "mammen":
        return MAMMEN_VALUES[(rng.random(size) >= MAMMEN_PROBS[0]).astype(np.intp)]
    raise OptionError(f"wild_weights={weights!r} is not one of {list(WILD_WEIGHTS)}")


def _cluster_sum(values: np.ndarray, clusters: np.ndarray, n_clusters: int) -> np.ndarray:
    """Sum rows of ``values`` ``(N,)`` or ``(N, m)`` within clusters."""
    if values.ndim == 1:
        return np.bincount(clusters, weights=values, minlength=n_clusters)
    onehot = np.zeros((values.shape[0], n_clusters))
    onehot[np.arange(values.shape[0]), clusters] = 1.0
    return onehot.T @ values


def _score_map(u: np.ndarray, xt: np.ndarray, bread: np.ndarray, xb: np.ndarray,
               clusters: np.ndarray, n_clusters: int,
               within: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``c`` ``(G,)`` and ``K`` ``(G, G)`` of the module docstring for residuals ``u``."""
    c = _cluster_sum(xb * u, clusters, n_clusters)
    blocks = np.zeros((u.shape[0], n_clusters))
    blocks[np.arange(u.shape[0]), clusters] = u            # u_(h), one column per cluster
    xu = _cluster_sum(xt * u[:, None], clusters, n_clusters)  # (G, k): X_h'u_h
    resid_blocks = within(blocks) - xt @ (bread @ xu.T)     # (I - H) u_(h)
    k = _cluster_sum(xb[:, None] * resid_blocks, clusters, n_clusters)
    return c, k


@dataclass(frozen=True)
class WildBootstrap:
    """The bootstrap distribution of the t statistic of ``w'beta = a`` for every ``a``.

    Built by :func:`wild_bootstrap`; :meth:`p_value` and :meth:`conf_int` evaluate it.
    """

    estimate: float        # w'beta_hat
    se_raw: float          # sqrt(sum_g (b'X_g'u_g)^2): CRV1 without its small-sample factor
    n0: np.ndarray         # (B,) numerator at delta = 0
    n1: np.ndarray         # (B,) its slope in delta
    a00: np.ndarray        # (B,) squared bootstrap SE: a00 + 2 delta a01 + delta^2 a11
    a01: np.ndarray
    a11: np.ndarray
    draws: int             # B actually used
    enumerated: bool

    def p_value(self, null: float = 0.0) -> float:
        """Symmetric p-value of ``w'beta = null``: the share of draws with
        ``|t*| > |t|`` (``boottest``'s and ``wildboottest``'s definition)."""
        delta = self.estimate - null
        t = delta / self.se_raw
        var = self.a00 + 2 * delta * self.a01 + delta * delta * self.a11
        with np.errstate(divide="ignore", invalid="ignore"):
            tb = (self.n0 + delta * self.n1) / np.sqrt(np.maximum(var, 0.0))
        tb = np.where(np.isfinite(tb), tb, 0.0)  # a degenerate draw (zero variance) never rejects
        return float(np.mean(np.abs(tb) > abs(t)))

    def conf_int(self, alpha: float) -> tuple[float, float]:
        """Interval of the nulls not rejected at ``alpha``, by inverting :meth:`p_value`
        (root finding on each side of the estimate, as ``boottest``)."""
        if self.p_value(self.estimate) <= alpha:
            raise EstimationError(f"the wild bootstrap rejects even the estimate itself at "
                                  f"alpha={alpha}: too few draws ({self.draws}) for this level")
        lo = self._bound(alpha, -1.0)
        hi = self._bound(alpha, 1.0)
        return lo, hi

    def _bound(self, alpha: float, side: float) -> float:
        f = lambda a: self.p_value(a) - alpha  # noqa: E731  (> 0 inside the interval)
        step = max(self.se_raw, 1e-12 * max(abs(self.estimate), 1.0))
        inner, outer = self.estimate, self.estimate + side * step
        for _ in range(200):
            if f(outer) <= 0:
                break
            inner, outer = outer, self.estimate + 2 * (outer - self.estimate)
        else:  # pragma: no cover - p-value never falls below alpha (unbounded interval)
            return side * np.inf
        tol = 1e-8 * step  # the interval to 1e-8 of a standard error
        root = optimize.brentq(f, min(inner, outer), max(inner, outer), xtol=tol)
        return float(root)


def wild_bootstrap(xt: np.ndarray, resid: np.ndarray, bread: np.ndarray, coef: np.ndarray,
                   w: np.ndarray, clusters: np.ndarray, n_clusters: int,
                   within: Callable[[np.ndarray], np.ndarray], v: np.ndarray,
                   impose_null: bool = True) -> WildBootstrap:
    """Set up the wild cluster bootstrap of ``w'beta`` for weights ``v`` ``(G, B)``.

    Parameters
    ----------
    xt, resid, bread, coef
        Residualised identified regressors ``(N, k)``, residuals of the fixed-effects fit,
        ``(X'X)^-1`` and the coefficients (unweighted least squares).
    w
        ``(k,)`` the linear combination tested.
    clusters, n_clusters
        Cluster codes ``0..G-1`` per row.
    within
        The fixed-effects residual maker ``M_FE`` applied to an ``(N, m)`` matrix.
    v
        Wild weights from :func:`draw_weights`.
    impose_null
        WCR (True, ``boottest``'s default) or WCU.
    """
    b = bread @ w
    wb = float(w @ b)
    xb = xt @ b
    c0, k0 = _score_map(resid, xt, bread, xb, clusters, n_clusters, within)
    se_raw = float(np.sqrt(c0 @ c0))  # CRV1 of w'beta_hat without its small-sample factor
    if not se_raw > 0:
        raise EstimationError("the cluster-robust variance of the tested coefficient is zero: "
                              "no wild bootstrap t statistic")
    n0 = c0 @ v
    kv0 = k0 @ v
    a00 = np.einsum("gb,gb->b", kv0, kv0)
    draws = v.shape[1]
    if impose_null:
        c1, k1 = _score_map(xb / wb, xt, bread, xb, clusters, n_clusters, within)
        n1 = c1 @ v
        kv1 = k1 @ v
        a01 = np.einsum("gb,gb->b", kv0, kv1)
        a11 = np.einsum("gb,gb->b", kv1, kv1)
    else:
        n1 = a01 = a11 = np.zeros(draws)
    enumerated = bool(np.all(np.abs(v) == 1.0)) and draws == 2 ** n_clusters
    return WildBootstrap(float(w @ coef), se_raw, n0, n1, a00, a01, a11, draws, enumerated)


__all__ = ["MAMMEN_PROBS", "MAMMEN_VALUES", "WEBB_VALUES", "WILD_TYPES", "WILD_WEIGHTS",
           "WildBootstrap", "draw_weights", "enumerates", "wild_bootstrap"]
