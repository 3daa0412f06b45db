"""Conditional and hybrid tests of linear moment inequalities with nuisance parameters
(Andrews, Roth and Pakes 2023, "Inference for linear conditional moment inequalities",
Review of Economic Studies), the engine under Rambachan and Roth's (2023) conditional and
conditional-least-favourable ("C-LF") honest confidence sets.

The problem, for one candidate value ``theta`` of the target:

    H0(theta): there is a nuisance vector tau with  E[y(theta)] - X tau <= 0,
    y(theta) = y0 - a * theta  ~  N(E[y], Sigma_y).

Statistic: ``eta = min_{eta, tau} eta  s.t.  y - X tau <= eta * sd`` (``sd`` the moments'
standard deviations), a linear program. Its dual is ``eta = max_{g in P} g'y`` over
``P = {g >= 0, sd'g = 1, X'g = 0}``; the optimal vertex ``g`` is the dual solution.

*Conditional test* (ARP section 5): given that vertex ``g`` is optimal, ``g'y`` is normal with
sd ``sigma_B = sqrt(g' Sigma_y g)`` truncated to ``[v_lo, v_up]``, the interval of values
``c`` for which ``g`` stays optimal when ``y`` moves along ``S + Sigma_y g c / sigma_B^2``
(``S`` is the part of ``y`` independent of ``g'y``). Reject when
``eta / sigma_B > max(0, q_{1-alpha})``, the quantile of that truncated normal. The
truncation points come from the binding set in closed form when the LP solution is
non-degenerate ("primal" route), and otherwise from the dual by the exact Newton iteration
on the convex piecewise-linear function ``f(c) = max_{g' in P} g'(S + b c)`` (ARP Appendix D,
Algorithm 1; bisection is the fallback).

*Least-favourable hybrid* (ARP section 6.2): first reject when ``eta`` exceeds the
``1 - kappa`` quantile of ``eta`` under the least favourable null (all moments zero),
computed by simulation; otherwise run the conditional test at size
``(alpha - kappa) / (1 - kappa)`` with ``v_up`` capped at that critical value.

Speed: the statistic for many ``y`` (a grid of ``theta``, or the least-favourable draws) is
one block-diagonal sparse LP solved by HiGHS, since the blocks are independent; this equals
the one-at-a-time LPs (pinned in tests).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy import optimize, special

from .panel import EstimationError

TOL_LAMBDA = 1e-6          # a dual weight above this marks a binding moment (as HonestDiD)
TOL_EQUALITY = 1e-6        # f(c) == c to this tolerance means the vertex is still optimal


def eta_batch(Y: np.ndarray, X: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The statistic and its optimal dual vertex for each row of ``Y`` (n x M).

    Returns ``eta`` (n,) and ``gamma`` (n, M) with ``gamma >= 0``, ``gamma @ sd == 1``,
    ``gamma @ X == 0`` and ``(gamma * Y).sum(1) == eta``.
    """
    Y = np.atleast_2d(np.asarray(Y, dtype=float))
    n, m = Y.shape
    k = X.shape[1]
    if k == 0:                                    # no nuisance: the largest studentized moment
        z = Y / sd
        j = np.argmax(z, axis=1)
        gamma = np.zeros((n, m))
        gamma[np.arange(n), j] = 1.0 / sd[j]
        return z[np.arange(n), j], gamma
    block = -np.hstack([sd[:, None], X])          # -(sd * eta + X tau) <= -y
    A = sp.kron(sp.eye(n, format="csr"), sp.csr_matrix(block), format="csr")
    c = np.tile(np.r_[1.0, np.zeros(k)], n)
    res = optimize.linprog(c, A_ub=A, b_ub=-Y.ravel(), bounds=(None, None), method="highs-ds")
    if res.status != 0:
        raise EstimationError(f"moment-inequality LP failed: {res.message}")
    eta = res.x.reshape(n, k + 1)[:, 0]
    gamma = np.clip(-res.ineqlin.marginals.reshape(n, m), 0.0, None)
    return eta, gamma


def _dual_max_batch(S: np.ndarray, B: np.ndarray, W: np.ndarray, c: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``f_i(c_i) = max_{g >= 0, W'g = e1} g'(S_i + B_i c_i)`` for every row ``i`` (one block
    LP), with the maximisers. ``P`` is bounded because ``sd > 0``."""
    n, m = S.shape
    beq = np.zeros(W.shape[1])
    beq[0] = 1.0
    obj = S + B * c[:, None]
    A = sp.kron(sp.eye(n, format="csr"), sp.csr_matrix(W.T), format="csr")
    res = optimize.linprog(-obj.ravel(), A_eq=A, b_eq=np.tile(beq, n), bounds=(0, None),
                           method="highs-ds")
    if res.status != 0:
        raise EstimationError(f"moment-inequality dual LP failed: {res.message}")
    g = res.x.reshape(n, m)
    return (g * obj).sum(axis=1), g


def _dual_truncation(Y: np.ndarray, X: np.ndarray, sigma: np.ndarray, sd: np.ndarray,
                     eta: np.ndarray, gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[v_lo, v_up]`` from the dual for each row: the set of ``c`` with ``f(c) = c``
    (ARP Appendix D, Algorithm 1), all rows advanced together.

    ``f(c) - c`` is convex, piecewise linear and >= 0 with a zero at ``eta``; from a point
    outside the zero set, the line of the vertex optimal there crosses zero at or beyond the
    set's end, so iterating on it (Newton, HonestDiD's "shortcut") reaches the end exactly
    in finitely many steps; bisection finishes any row that has not converged.
    """
    n = Y.shape[0]
    W = np.hstack([sd[:, None], X])
    SG = gamma @ sigma                              # rows: Sigma g
    var_b = (SG * gamma).sum(axis=1)
    B = SG / var_b[:, None]
    S = Y - B * (gamma * Y).sum(axis=1)[:, None]
    sd_b = np.sqrt(var_b)

    def solves(idx: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        val, g = _dual_max_batch(S[idx], B[idx], W, c)
        return np.abs(val - c) <= TOL_EQUALITY * np.maximum(1.0, np.abs(c)), g

    ok_eta, _ = solves(np.arange(n), eta)
    vlo = np.full(n, -np.inf)
    vup = np.full(n, np.inf)
    vlo[~ok_eta] = eta[~ok_eta]                     # as HonestDiD: not a solution, do not reject
    for direction, out in ((+1, vup), (-1, vlo)):
        idx = np.flatnonzero(ok_eta)
        start = eta[idx] + direction * np.maximum(100.0, 20 * sd_b[idx] + np.abs(eta[idx]))
        ok, g = solves(idx, start)
        # rows still optimal far out: that end is infinite
        idx, outside, g = idx[~ok], start[~ok], g[~ok]
        inside = eta[idx].copy()
        done = np.zeros(idx.size, dtype=bool)
        for _ in range(20):                         # Newton on the active vertex's line
            act = np.flatnonzero(~done)
            if act.size == 0:
                break
            slope = 1.0 - (g[act] * B[idx[act]]).sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                cand = (g[act] * S[idx[act]]).sum(axis=1) / slope
            lo_b = np.minimum(inside[act], outside[act])
            hi_b = np.maximum(inside[act], outside[act])
            good = np.isfinite(cand) & (cand >= lo_b) & (cand <= hi_b)
            done[act[~good]] = True                 # leave these to bisection
            act, cand = act[good], cand[good]
            if act.size == 0:
                break
            ok, g_new = solves(idx[act], cand)
            inside[act[ok]] = cand[ok]              # exact end: nothing left to bisect
            outside[act[ok]] = cand[ok]
            done[act[ok]] = True
            outside[act[~ok]] = cand[~ok]
            g[act[~ok]] = g_new[~ok]
        # bisection for rows where Newton stalled (inside is a solution, outside is not)
        for _ in range(60):
            gap = np.abs(outside - inside)
            act = np.flatnonzero(gap > 1e-10 * np.maximum(1.0, np.abs(inside)))
            if act.size == 0:
                break
            mid = 0.5 * (inside[act] + outside[act])
            ok, _ = solves(idx[act], mid)
            inside[act[ok]] = mid[ok]
            outside[act[~ok]] = mid[~ok]
        out[idx] = inside
    return vlo, vup


def _primal_truncation(y: np.ndarray, X: np.ndarray, sigma: np.ndarray, sd: np.ndarray,
                       binding: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Closed-form truncation when the binding set ``B`` has ``k + 1`` rows of full rank
    (the polyhedral lemma conditioning on which moments bind)."""
    WB = np.hstack([sd[binding, None], X[binding]])
    WBc = np.hstack([sd[~binding, None], X[~binding]])
    inv = np.linalg.inv(WB)
    m = y.size
    SB = np.eye(m)[binding]
    SBc = np.eye(m)[~binding]
    Gam = WBc @ inv @ SB - SBc
    v = inv[0] @ SB                                # the dual vertex
    var_b = float(v @ sigma @ v)
    rho = Gam @ sigma @ v / var_b
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = (-Gam @ y) / rho + float(v @ y)
    vlo = float(bound[rho > 0].max()) if (rho > 0).any() else -np.inf
    vup = float(bound[rho < 0].min()) if (rho < 0).any() else np.inf
    return vlo, vup, v


def truncnorm_quantile(p: float | np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray
                       ) -> float | np.ndarray:
    """Quantile ``p`` of N(0, 1) truncated to ``[lo, hi]``, stable in either tail
    (computed from the upper tail when ``lo > 0``). Vectorised."""
    p, lo, hi = np.broadcast_arrays(np.asarray(p, float), np.asarray(lo, float), np.asarray(hi, float))
    with np.errstate(invalid="ignore"):
        sf_lo, sf_hi = special.ndtr(-lo), special.ndtr(-hi)
        upper = -special.ndtri(sf_lo - p * (sf_lo - sf_hi))
        cdf_lo, cdf_hi = special.ndtr(lo), special.ndtr(hi)
        lower = special.ndtri(cdf_lo + p * (cdf_hi - cdf_lo))
    out = np.where(lo > 0, upper, lower)
    return float(out) if out.ndim == 0 else out


_RAYS: dict[bytes, np.ndarray | None] = {}


def extreme_rays(X: np.ndarray, max_bases: int = 200_000) -> np.ndarray | None:
    """Extreme rays of the cone ``{g >= 0, X'g = 0}`` (rows, unit sum), or None when there
    are more than ``max_bases`` candidate supports. A ray's support is ``k + 1`` rows ``B``
    whose ``X_B`` has rank ``k``: the one-dimensional null space of ``X_B'``, kept when it
    has one sign. Cached by ``X``: in Rambachan-Roth's problems ``X`` is the same for every
    polyhedron of a restriction and every bound, only the moments' scales change."""
    key = X.shape[1].to_bytes(4, "little") + np.ascontiguousarray(X).tobytes()
    if key in _RAYS:
        return _RAYS[key]
    m, k = X.shape
    if math.comb(m, k + 1) > max_bases:
        _RAYS[key] = None
        return None
    if k == 0:
        rays = np.eye(m)
    else:
        combos = np.array(list(itertools.combinations(range(m), k + 1)), dtype=int)
        XBt = np.transpose(X[combos], (0, 2, 1))                  # (n, k, k + 1)
        _, sv, vh = np.linalg.svd(XBt, full_matrices=True)
        scale = np.maximum(sv[:, 0], 1e-300)
        full_rank = sv[:, -1] > 1e-10 * scale
        r = vh[full_rank, -1, :]                                  # null vectors
        combos = combos[full_rank]
        r = r * np.where(r.sum(axis=1) < 0, -1.0, 1.0)[:, None]
        one_sign = (r >= -1e-10 * np.abs(r).max(axis=1, keepdims=True)).all(axis=1)
        rays = np.zeros((int(one_sign.sum()), m))
        np.put_along_axis(rays, combos[one_sign], np.clip(r[one_sign], 0.0, None), axis=1)
        rays = rays / rays.sum(axis=1, keepdims=True)
        rays = np.unique(np.round(rays, 12), axis=0)
    if len(_RAYS) > 64:                                           # a small, bounded cache
        _RAYS.clear()
    _RAYS[key] = rays
    return rays


def enumerate_vertices(W: np.ndarray, max_bases: int = 200_000) -> np.ndarray | None:
    """Every vertex of ``P = {g >= 0, W'g = e1}`` with ``W = [sd, X]`` and ``sd > 0``
    (rows), or None when there are too many candidate bases: the extreme rays of
    ``{g >= 0, X'g = 0}`` scaled so that ``sd'g = 1``."""
    rays = extreme_rays(W[:, 1:], max_bases)
    if rays is None:
        return None
    return rays / (rays @ W[:, 0])[:, None]


@dataclass
class MomentProblem:
    """``y(theta) = y0 - a theta`` with covariance ``sigma``, nuisance loadings ``X``.

    When the dual polytope has few enough candidate bases (always for event studies of
    ordinary length) its vertices are enumerated once; then the statistic is
    ``max_v g_v'y`` and the truncation points are exact closed forms over the vertices
    (``f(c) = max_v g_v'(S + b c)`` is an explicit maximum of lines), with no LP at all.
    Otherwise every quantity comes from HiGHS LPs (``exact_vertices=False`` forces that
    path, the reference the tests pin the vertex path to).
    """

    y0: np.ndarray
    a: np.ndarray
    X: np.ndarray
    sigma: np.ndarray
    exact_vertices: bool = True
    sd: np.ndarray = field(init=False)
    vertices: np.ndarray | None = field(init=False)

    def __post_init__(self) -> None:
        self.sd = np.sqrt(np.clip(np.diag(self.sigma), 0.0, None))
        if np.any(self.sd <= 0):
            raise EstimationError("a moment has zero variance; drop it before the ARP test")
        self.vertices = (enumerate_vertices(np.hstack([self.sd[:, None], self.X]))
                         if self.exact_vertices else None)

    def with_y0(self, y0: np.ndarray) -> "MomentProblem":
        """The same problem for other estimates (same covariance): vertices are reused."""
        new = object.__new__(MomentProblem)
        new.__dict__.update(self.__dict__)
        new.y0 = np.asarray(y0, dtype=float)
        return new

    def y(self, theta: np.ndarray | float) -> np.ndarray:
        return self.y0[None, :] - np.atleast_1d(theta)[:, None] * self.a[None, :]

    def statistic(self, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``eta`` and the optimal dual vertex for each row of ``Y``."""
        if self.vertices is None:
            return eta_batch(Y, self.X, self.sd)
        vals = Y @ self.vertices.T
        j = np.argmax(vals, axis=1)
        return vals[np.arange(Y.shape[0]), j], self.vertices[j]

    def least_favorable_cv(self, kappa: float, draws: np.ndarray) -> float:
        """``1 - kappa`` quantile of ``eta`` when every moment is zero in expectation;
        ``draws`` are (sims x M) draws of the moments' noise."""
        eta, _ = self.statistic(draws)
        return float(np.quantile(eta, 1 - kappa))

    def _truncation(self, Y: np.ndarray, eta: np.ndarray, gamma: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``v_lo, v_up`` and the vertex used, for rows with eta > 0."""
        n = Y.shape[0]
        if self.vertices is not None:
            SG = gamma @ self.sigma
            var_b = (SG * gamma).sum(axis=1)
            B = SG / var_b[:, None]
            S = Y - B * eta[:, None]
            a_v = S @ self.vertices.T                 # lines a_v + b_v c, one per vertex
            b_v = B @ self.vertices.T
            with np.errstate(divide="ignore", invalid="ignore"):
                up = np.where(b_v > 1 + 1e-9, -a_v / (b_v - 1), np.inf)
                lo = np.where(b_v < 1 - 1e-9, a_v / (1 - b_v), -np.inf)
            return lo.max(axis=1), up.min(axis=1), gamma
        k = self.X.shape[1]
        vlo, vup, gvert = np.full(n, np.nan), np.full(n, np.nan), gamma.copy()
        dual = []
        for i in range(n):
            binding = gamma[i] > TOL_LAMBDA
            if binding.sum() == k + 1 and (
                    k == 0 or np.linalg.matrix_rank(self.X[binding]) == k):
                vlo[i], vup[i], gvert[i] = _primal_truncation(Y[i], self.X, self.sigma, self.sd, binding)
            else:
                dual.append(i)
        if dual:
            d = np.array(dual)
            vlo[d], vup[d] = _dual_truncation(Y[d], self.X, self.sigma, self.sd, eta[d], gamma[d])
        return vlo, vup, gvert

    def accept(self, thetas: np.ndarray, alpha: float, lf_cv: float | None = None,
               kappa: float = 0.0) -> np.ndarray:
        """Acceptance of H0(theta) for each theta: the conditional test (``lf_cv is None``)
        or the least-favourable hybrid. Points the hybrid's first stage rejects, or whose
        statistic is <= 0 (never rejected), need no truncation points."""
        thetas = np.atleast_1d(np.asarray(thetas, dtype=float))
        Y = self.y(thetas)
        eta, gamma = self.statistic(Y)
        size = alpha if lf_cv is None else (alpha - kappa) / (1 - kappa)
        accept = np.ones(thetas.size, dtype=bool)
        todo = eta > 0
        if lf_cv is not None:
            accept[eta > lf_cv] = False
            todo &= eta <= lf_cv
        idx = np.flatnonzero(todo)
        if idx.size == 0:
            return accept
        vlo, vup, g = self._truncation(Y[idx], eta[idx], gamma[idx])
        sd_b = np.sqrt(np.einsum("ij,jk,ik->i", g, self.sigma, g))
        tiny = sd_b < 1e-10
        sd_b = np.where(tiny, 1.0, sd_b)
        zlo = vlo / sd_b
        zup = (np.minimum(vup, lf_cv) if lf_cv is not None else vup) / sd_b
        stat = eta[idx] / sd_b
        inside = (zlo <= stat) & (stat <= zup)       # numerical edge otherwise: HonestDiD accepts
        cv = np.full(idx.size, np.inf)
        if inside.any():
            cv[inside] = np.maximum(0.0, truncnorm_quantile(1 - size, zlo[inside], zup[inside]))
        reject = np.where(tiny, eta[idx] > 0, inside & (stat > cv))
        accept[idx] = ~reject
        return accept


def gamma_basis(l: np.ndarray) -> np.ndarray:
    """An invertible matrix whose first row is ``l'`` (the other rows unit vectors); the
    test does not depend on which completion is used, only on the affine set l'tau = theta."""
    j0 = int(np.argmax(np.abs(l)))
    if l[j0] == 0:
        raise EstimationError("the target weights l are all zero")
    others = [np.eye(l.size)[j] for j in range(l.size) if j != j0]
    return np.vstack([l] + others)


def problem_from_constraints(A: np.ndarray, d: np.ndarray, beta: np.ndarray, sigma: np.ndarray,
                             n_pre: int, l: np.ndarray, rows: np.ndarray | None = None) -> MomentProblem:
    """Rambachan-Roth's reduction: ``delta = beta - (0, tau_post)`` must satisfy
    ``A delta <= d``; with ``Gamma tau_post = (theta, tau~)`` the moments are
    ``A beta - d - A_post Gamma^-1 e1 theta - A_post Gamma^-1[:, 1:] tau~ <= 0``."""
    inv = np.linalg.inv(gamma_basis(l))
    AG = A[:, n_pre:] @ inv
    y0 = A @ beta - d
    sig_y = A @ sigma @ A.T
    idx = np.arange(A.shape[0]) if rows is None else np.asarray(rows)
    return MomentProblem(y0[idx], AG[idx, 0], AG[np.ix_(idx, np.arange(1, AG.shape[1]))],
                         sig_y[np.ix_(idx, idx)])


def moment_draws(A: np.ndarray, sigma: np.ndarray, rows: np.ndarray | None, sims: int,
                 seed: int) -> np.ndarray:
    """Draws of the moments' noise ``A (beta_hat - beta)`` (drawn in beta space, where the
    covariance is positive definite; the moments' own covariance is often singular)."""
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal(np.zeros(sigma.shape[0]), sigma, size=sims, method="cholesky")
    out = z @ A.T
    return out if rows is None else out[:, rows]

