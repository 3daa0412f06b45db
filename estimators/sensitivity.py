"""Sensitivity to parallel-trend violations (Rambachan and Roth 2023; Roth 2022).

Works on any result with event-time terms and their covariance (``Estimate.event_cov``):
the TWFE event study, Sun-Abraham, Callaway-Sant'Anna (dynamic) and imputation.

Implemented procedures (stated, since Rambachan and Roth offer several):

* **Smoothness, Delta^SD(M)**: second differences of the trend violation bounded by M, with
  the violation normalised to zero at the reference period. The *fixed-length confidence
  interval* (FLCI; Armstrong and Kolesar's optimal affine interval, the procedure Rambachan
  and Roth recommend for Delta^SD): an affine estimator ``l'b_post + v'b_pre`` whose
  worst-case bias over Delta^SD(M) has the closed form ``M ||G'w||_1`` (``G`` maps second
  differences to the violation path), with half-length ``cv_alpha(bias/sd) * sd``
  minimised over ``v``.
* **Relative magnitudes, Delta^RM(Mbar)**: every post-period first difference of the
  violation at most Mbar times the largest pre-period first difference. Default: Rambachan
  and Roth's **conditional-least-favourable hybrid ("C-LF")**, their recommendation and
  HonestDiD's default: Delta^RM is the union over which pre-period difference is the
  largest (and its sign) of polyhedra ``A delta <= 0``; each is tested by the Andrews-Roth-
  Pakes conditional test with nuisance parameters (:mod:`estimators.arp`) with the
  least-favourable first stage at ``kappa = alpha / 10`` (1,000 seeded draws), on a grid of
  1,000 values of the target spanning the identified set +- 20 standard errors, whose end
  points are then refined on nested sub-grids; the set reported is the union's hull. Only the moments that involve post periods enter when there are
  several post periods (HonestDiD's ``postPeriodMomentsOnly``). ``method="conditional"``
  drops the hybrid; ``method="bonferroni"`` keeps a fast, conservative interval (an upper
  bound on the largest pre-period difference plus a widened post-period interval).
* **Smoothness, conditional**: ``method="c-lf"`` or ``"conditional"`` runs the same ARP
  machinery on Delta^SD(M) (HonestDiD's ``computeConditionalCS_DeltaSD``).
* **Pre-trend power** (Roth 2022): power of the joint pre-test against a linear violation
  of a given slope, the slopes detected with 50% / 80% power, and the bias of the
  post-period estimate conditional on passing the pre-test, by simulation from the
  estimated covariance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from .arp import MomentProblem, moment_draws, problem_from_constraints
from .panel import EstimationError, OptionError, check_choice
from .result import Estimate

RESTRICTIONS = ("smoothness", "relative_magnitudes")


@dataclass(frozen=True)
class EventInputs:
    """Event-time coefficients of a result: pre (< 0, without the reference) then post."""

    beta: np.ndarray
    sigma: np.ndarray
    times: np.ndarray
    n_pre: int
    n_post: int
    ref: int = -1


def event_inputs(est: Estimate, ref: int = -1) -> EventInputs:
    """Pull the event-time estimates and covariance out of an :class:`Estimate`."""
    if est.event_cov is None or "event_time" not in est.terms:
        raise EstimationError(f"{est.estimator} has no event-time terms with a covariance; "
                              "use an event study, Sun-Abraham, Callaway-Sant'Anna or imputation")
    t = est.terms.dropna(subset=["event_time"])
    by_time = {int(e): float(b) for e, b in zip(t["event_time"], t["estimate"])}
    names = list(est.event_cov.index)
    times = np.array([int(n[2:]) for n in names])
    keep = times != ref
    times = times[keep]
    order = np.argsort(times)
    times = times[order]
    idx = np.flatnonzero(keep)[order]
    beta = np.array([by_time[int(e)] for e in times])
    sigma = est.event_cov.to_numpy()[np.ix_(idx, idx)]
    n_pre = int((times < 0).sum())
    n_post = int((times >= 0).sum())
    if n_post == 0:
        raise EstimationError("no post-treatment event time")
    expected = list(range(times.min(), ref)) + list(range(0, times.max() + 1))
    if list(times) != expected:
        raise EstimationError(f"event times {list(times)} must be consecutive around ref={ref}")
    return EventInputs(beta, sigma, times, n_pre, n_post, ref)


def target_weights(inputs: EventInputs, target: str | int = "average") -> np.ndarray:
    """``l`` over the post periods: the average (default) or one event time."""
    if target == "average":
        return np.full(inputs.n_post, 1.0 / inputs.n_post)
    e = int(target)
    if not 0 <= e < inputs.n_post:
        raise OptionError(f"target={target!r} must be 'average' or a post event time 0..{inputs.n_post - 1}")
    l = np.zeros(inputs.n_post)
    l[e] = 1.0
    return l


def _path_matrix(n_pre: int, n_post: int) -> tuple[np.ndarray, np.ndarray]:
    """Violation path over pre and post periods (reference excluded) as
    ``slope * (t + 1) + G u`` where ``u`` are the second differences centred on every
    interior point of the full grid (reference included)."""
    n = n_pre + 1 + n_post                     # full grid with the reference period
    r = n_pre                                  # position of the reference (t = -1)
    times = np.arange(-n_pre - 1, n_post)
    n_u = n - 2
    G = np.zeros((n, n_u))
    for j in range(n_u):
        u = np.zeros(n_u)
        u[j] = 1.0
        d = np.zeros(n)
        for p in range(r + 2, n):              # forward: d_p = 2 d_{p-1} - d_{p-2} + u_{p-1}
            d[p] = 2 * d[p - 1] - d[p - 2] + u[p - 2]
        for p in range(r - 1, -1, -1):         # backward: d_p = 2 d_{p+1} - d_{p+2} + u_{p+1}
            d[p] = 2 * d[p + 1] - d[p + 2] + u[p]
        G[:, j] = d
    keep = np.arange(n) != r
    return G[keep], (times + 1)[keep].astype(float)


def _folded_cv(t: float, alpha: float) -> float:
    """c with P(|N(t, 1)| <= c) = 1 - alpha."""
    t = abs(t)
    f = lambda c: special.ndtr(c - t) - special.ndtr(-c - t) - (1 - alpha)  # noqa: E731
    return float(optimize.brentq(f, 0.0, t + 10.0))


@dataclass(frozen=True)
class HonestInterval:
    restriction: str
    m: float
    lower: float
    upper: float
    method: str


def flci_smoothness(inputs: EventInputs, m: float, l: np.ndarray, alpha: float = 0.05) -> HonestInterval:
    """Optimal fixed-length interval for ``l' tau_post`` under Delta^SD(m)."""
    if m < 0:
        raise OptionError(f"M={m} must be >= 0")
    G, trend = _path_matrix(inputs.n_pre, inputs.n_post)
    n_pre = inputs.n_pre
    if n_pre == 0:
        raise EstimationError("smoothness bounds need at least one pre-period coefficient")
    sigma = inputs.sigma
    beta = inputs.beta
    # w = (v_pre, l): unbiased for tau needs nothing more; bounded bias needs w'trend = 0
    trend_pre, trend_post = trend[:n_pre], trend[n_pre:]
    rhs = -float(l @ trend_post)
    # v_pre = v0 + N z spans {v: v'trend_pre = rhs}
    v0 = trend_pre * rhs / float(trend_pre @ trend_pre)
    null = np.linalg.svd(trend_pre[None, :])[2][1:].T if n_pre > 1 else np.zeros((1, 0))

    def weights(z: np.ndarray) -> np.ndarray:
        return np.r_[v0 + (null @ z if null.size else 0.0), l]

    def half_length(z: np.ndarray) -> float:
        w = weights(z)
        sd = float(np.sqrt(w @ sigma @ w))
        bias = m * float(np.abs(G.T @ w).sum())
        return _folded_cv(bias / sd, alpha) * sd if sd > 0 else np.inf

    def min_sd_given_bias(h: float, z0: np.ndarray) -> np.ndarray:
        """min sd(w) s.t. worst-case bias <= h (convex: slack variables for the L1 norm)."""
        k = null.shape[1]
        n_u = G.shape[1]
        base = G.T @ np.r_[v0, l]
        GN = G[:n_pre].T @ null                      # how z moves G'w

        def sd2(x: np.ndarray) -> float:
            w = weights(x[:k])
            return float(w @ sigma @ w)

        def grad(x: np.ndarray) -> np.ndarray:
            w = weights(x[:k])
            g = np.zeros_like(x)
            g[:k] = 2 * null.T @ (sigma @ w)[:n_pre]
            return g

        cons = [
            {"type": "ineq", "fun": lambda x: x[k:] - (base + GN @ x[:k]),
             "jac": lambda x: np.hstack([-GN, np.eye(n_u)])},
            {"type": "ineq", "fun": lambda x: x[k:] + (base + GN @ x[:k]),
             "jac": lambda x: np.hstack([GN, np.eye(n_u)])},
            {"type": "ineq", "fun": lambda x: np.array([h - m * x[k:].sum()]),
             "jac": lambda x: np.r_[np.zeros(k), -m * np.ones(n_u)][None, :]},
        ]
        x0 = np.r_[z0, np.abs(base + GN @ z0) + 1e-9]
        res = optimize.minimize(sd2, x0, jac=grad, constraints=cons, method="SLSQP",
                                options={"maxiter": 500, "ftol": 1e-14})
        return res.x[:k]

    if null.size:
        starts = [np.zeros(null.shape[1])]
        # also start from the variance-minimising weights (the M = infinity-free direction)
        a = null.T @ sigma[:n_pre, :n_pre] @ null
        bvec = null.T @ (sigma[:n_pre, :n_pre] @ v0 + sigma[:n_pre, n_pre:] @ l)
        try:
            starts.append(-np.linalg.solve(a, bvec))
        except np.linalg.LinAlgError:
            pass
        candidates = list(starts)
        if m > 0:
            # Armstrong-Kolesar: the optimum minimises sd for some bias bound h; search h
            z_var = starts[-1]
            h_max = m * float(np.abs(G.T @ weights(z_var)).sum())
            cache: dict[float, np.ndarray] = {}

            def outer(h: float) -> float:
                z_h = min_sd_given_bias(h, z_var)
                cache[h] = z_h
                return half_length(z_h)

            if h_max > 0:
                r = optimize.minimize_scalar(outer, bounds=(0.0, h_max), method="bounded",
                                             options={"xatol": 1e-6 * h_max})
                candidates.append(cache.get(r.x, min_sd_given_bias(r.x, z_var)))
        z = min(candidates, key=half_length)
        # polish the best start with Nelder-Mead on the exact half-length: the inner SLSQP
        # stops short by up to ~2% in some designs; one polish from the best point matches
        # (to 1e-13) polishing from every start, at a third of the cost. With M = 0 the
        # variance-minimising start is exact (no bias), so there is nothing to polish.
        if m > 0:
            res = optimize.minimize(half_length, z, method="Nelder-Mead",
                                    options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
            z = min([z, res.x], key=half_length)
    else:
        z = np.zeros(0)
    w = weights(z)
    center = float(w @ beta)
    h = half_length(z)
    return HonestInterval("smoothness", m, center - h, center + h, "FLCI")


def bonferroni_relative_magnitudes(inputs: EventInputs, mbar: float, l: np.ndarray,
                                   alpha: float = 0.05, alpha_pre: float | None = None) -> HonestInterval:
    """Conservative interval for ``l' tau_post`` under Delta^RM(mbar) (see module doc)."""
    if mbar < 0:
        raise OptionError(f"Mbar={mbar} must be >= 0")
    n_pre, n_post = inputs.n_pre, inputs.n_post
    beta, sigma = inputs.beta, inputs.sigma
    post = beta[n_pre:]
    sd_post = float(np.sqrt(l @ sigma[n_pre:, n_pre:] @ l))
    center = float(l @ post)
    if mbar == 0:
        z = special.ndtri(1 - alpha / 2)
        return HonestInterval("relative_magnitudes", 0.0, center - z * sd_post, center + z * sd_post,
                              "conventional (Mbar = 0)")
    if n_pre == 0:
        raise EstimationError("relative-magnitude bounds need pre-period coefficients")
    a_pre = alpha / 2 if alpha_pre is None else alpha_pre
    # first differences of the pre-period path, the reference (0) included
    full_pre = np.r_[beta[:n_pre], 0.0]
    D = np.zeros((n_pre, n_pre))
    for k in range(n_pre):
        D[k, k] = -1.0
        if k + 1 < n_pre:
            D[k, k + 1] = 1.0
    diffs = np.diff(full_pre)
    cov_d = D @ sigma[:n_pre, :n_pre] @ D.T
    zb = special.ndtri(1 - a_pre / (2 * n_pre))  # Bonferroni over the pre differences
    bound = float(np.max(np.abs(diffs) + zb * np.sqrt(np.diag(cov_d))))
    # worst-case |l' delta_post| when every post first difference is at most mbar * bound
    # and delta_{-1} = 0: delta_t = sum_{j<=t} step_j, |step_j| <= mbar * bound
    weights_steps = np.array([l[k:].sum() for k in range(n_post)])
    bias = mbar * bound * float(np.abs(weights_steps).sum())
    z = special.ndtri(1 - (alpha - a_pre) / 2)
    return HonestInterval("relative_magnitudes", mbar, center - bias - z * sd_post,
                          center + bias + z * sd_post, "Bonferroni (conservative)")


# --- conditional and hybrid sets (Andrews-Roth-Pakes via estimators.arp) -------------------

METHODS = {"smoothness": ("flci", "c-lf", "conditional"),
           "relative_magnitudes": ("c-lf", "conditional", "bonferroni")}
DEFAULT_METHOD = {"smoothness": "flci", "relative_magnitudes": "c-lf"}
METHOD_LABEL = {"flci": "FLCI", "c-lf": "C-LF", "conditional": "Conditional",
                "bonferroni": "Bonferroni (conservative)"}


def _first_differences(n: int) -> np.ndarray:
    D = np.zeros((n - 1, n))
    D[np.arange(n - 1), np.arange(n - 1)] = -1.0
    D[np.arange(n - 1), np.arange(1, n)] = 1.0
    return D


def rm_constraints(n_pre: int, n_post: int, mbar: float, s: int, positive: bool) -> np.ndarray:
    """``A`` with Delta^RM_{s,+/-}(Mbar) = {delta: A delta <= 0}: pre-period difference ``s``
    (0 = earliest) is the largest in absolute value and has the given sign, and every
    post-period difference is at most Mbar times it. Columns: pre then post periods (the
    reference, normalised to zero, dropped), as HonestDiD's ``.create_A_RM``."""
    n = n_pre + n_post + 1
    At = _first_differences(n)
    v = np.zeros(n)
    v[s], v[s + 1] = -1.0, 1.0
    if not positive:
        v = -v
    ub = np.vstack([np.tile(v, (n_pre, 1)), np.tile(mbar * v, (n_post, 1))])
    A = np.vstack([At - ub, -At - ub])
    A = A[(A ** 2).sum(axis=1) > 1e-10]
    return np.delete(A, n_pre, axis=1)


def sd_constraints(n_pre: int, n_post: int, m: float) -> tuple[np.ndarray, np.ndarray]:
    """``A, d`` with Delta^SD(M) = {delta: A delta <= d}: every second difference of the
    path (reference included, at zero) within +-M."""
    n = n_pre + n_post + 1
    D2 = _first_differences(n - 1) @ _first_differences(n)
    A = np.delete(np.vstack([D2, -D2]), n_pre, axis=1)
    return A, np.full(A.shape[0], float(m))


def _post_rows(A: np.ndarray, n_pre: int, n_post: int, post_moments_only: bool) -> np.ndarray | None:
    if post_moments_only and n_post > 1:
        return np.flatnonzero(np.abs(A[:, n_pre:]).sum(axis=1) > 0)
    return None


def _identified_set(A: np.ndarray, d: np.ndarray, inputs: EventInputs, l: np.ndarray) -> tuple[float, float]:
    """Range of ``l' tau_post`` over violations in {A delta <= d} that match the
    pre-period coefficients exactly (the identified set at the estimates)."""
    n_pre = inputs.n_pre
    b_pre, b_post = inputs.beta[:n_pre], inputs.beta[n_pre:]
    rhs = d - A[:, :n_pre] @ b_pre
    out = []
    for sign in (1.0, -1.0):                       # max then min of l' delta_post
        r = optimize.linprog(-sign * l, A_ub=A[:, n_pre:], b_ub=rhs, bounds=(None, None),
                             method="highs")
        out.append(sign * -r.fun if r.status == 0 else np.nan)
    hi_delta, lo_delta = out
    if np.isnan(hi_delta) or np.isnan(lo_delta):   # pre-periods outside Delta: no identified set
        c = float(l @ b_post)
        return c, c
    return float(l @ b_post - hi_delta), float(l @ b_post - lo_delta)


def _problems(inputs: EventInputs, restriction: str, m: float, l: np.ndarray,
              post_moments_only: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """The polyhedra whose union is the restriction: ``(A, d, rows)`` each."""
    n_pre, n_post = inputs.n_pre, inputs.n_post
    if restriction == "smoothness":
        A, d = sd_constraints(n_pre, n_post, m)
        return [(A, d, _post_rows(A, n_pre, n_post, post_moments_only))]
    out, seen = [], set()
    for s in range(n_pre):
        for positive in (True, False):
            A = rm_constraints(n_pre, n_post, m, s, positive)
            rows = _post_rows(A, n_pre, n_post, post_moments_only)
            key = (A if rows is None else A[rows]).tobytes()
            if key in seen:                         # e.g. Mbar = 0 with post moments only
                continue
            seen.add(key)
            out.append((A, np.zeros(A.shape[0]), rows))
    return out


@dataclass
class ConditionalSet:
    """Tests of H0: l' tau_post = theta for each polyhedron of a restriction."""

    tests: list[tuple[MomentProblem, float | None]]
    alpha: float
    kappa: float
    polyhedra: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]
    l: np.ndarray
    n_pre: int

    def with_beta(self, beta: np.ndarray) -> "ConditionalSet":
        """The same tests for other estimates with the same covariance: the least-favourable
        critical values depend only on the covariance, so Monte Carlo loops reuse them."""
        tests = []
        for (prob, cv), (A, d, rows) in zip(self.tests, self.polyhedra):
            idx = np.arange(A.shape[0]) if rows is None else rows
            tests.append((prob.with_y0((A @ beta - d)[idx]), cv))
        return ConditionalSet(tests, self.alpha, self.kappa, self.polyhedra, self.l, self.n_pre)

    def accepts(self, theta: float) -> bool:
        """Whether ``theta`` is in the confidence set (accepted for some polyhedron)."""
        return any(p.accept(np.array([theta]), self.alpha, cv, self.kappa)[0] for p, cv in self.tests)

    def identified_set(self, inputs: EventInputs, l: np.ndarray) -> tuple[float, float]:
        """The union's identified set at the estimates (sets the grid's span)."""
        bounds = np.array([_identified_set(A, d, inputs, l) for A, d, _ in self.polyhedra])
        return float(bounds[:, 0].min()), float(bounds[:, 1].max())


def conditional_set(inputs: EventInputs, restriction: str, m: float, l: np.ndarray,
                    alpha: float = 0.05, hybrid: bool = True, kappa: float | None = None,
                    post_moments_only: bool = True, sims: int = 1000, seed: int = 0) -> ConditionalSet:
    """Set up the ARP tests (with the least-favourable critical values when ``hybrid``)."""
    check_choice("restriction", restriction, RESTRICTIONS)
    if m < 0:
        raise OptionError(f"{'M' if restriction == 'smoothness' else 'Mbar'}={m} must be >= 0")
    if inputs.n_pre == 0:
        raise EstimationError(f"{restriction} bounds need pre-period coefficients")
    kappa = alpha / 10 if kappa is None else float(kappa)
    if hybrid and not 0 < kappa < alpha:
        raise OptionError(f"kappa={kappa} must lie in (0, alpha={alpha})")
    tests = []
    polyhedra = _problems(inputs, restriction, m, l, post_moments_only)
    for A, d, rows in polyhedra:
        prob = problem_from_constraints(A, d, inputs.beta, inputs.sigma, inputs.n_pre, l, rows)
        cv = (prob.least_favorable_cv(kappa, moment_draws(A, inputs.sigma, rows, sims, seed))
              if hybrid else None)
        tests.append((prob, cv))
    return ConditionalSet(tests, alpha, kappa if hybrid else 0.0, polyhedra, l, inputs.n_pre)


def conditional_interval(inputs: EventInputs, restriction: str, m: float, l: np.ndarray,
                         alpha: float = 0.05, hybrid: bool = True, kappa: float | None = None,
                         post_moments_only: bool = True, grid_points: int = 1000,
                         refine: int = 3, sims: int = 1000, seed: int = 0) -> HonestInterval:
    """Hull of the accepted values of ``l' tau_post`` on a grid spanning the identified
    set +- 20 standard errors (as HonestDiD), each end point then refined ``refine`` times
    by a 31-point sub-grid between the last rejected and first accepted points (so the
    end is located to ``step / 32**refine``)."""
    cs = conditional_set(inputs, restriction, m, l, alpha, hybrid, kappa, post_moments_only,
                         sims, seed)
    n_pre = inputs.n_pre
    sd_theta = float(np.sqrt(l @ inputs.sigma[n_pre:, n_pre:] @ l))
    id_lo, id_hi = cs.identified_set(inputs, l)
    grid = np.linspace(id_lo - 20 * sd_theta, id_hi + 20 * sd_theta, int(grid_points))
    accepted = [prob.accept(grid, alpha, cv, cs.kappa) for prob, cv in cs.tests]
    acc = np.any(accepted, axis=0)
    method = METHOD_LABEL["c-lf" if hybrid else "conditional"]
    if not acc.any():
        return HonestInterval(restriction, m, np.nan, np.nan, method + " (empty)")
    i, j = np.flatnonzero(acc)[[0, -1]]

    def edge(inside: float, outside: float, idx: int) -> float:
        """Refine between an accepted and a rejected grid point with nested sub-grids,
        testing only the polyhedra that accept the grid point (the one setting the end)."""
        tests = [t for t, a in zip(cs.tests, accepted) if a[idx]]
        for _ in range(refine):
            sub = np.linspace(inside, outside, 33)[1:-1]
            ok = np.any([p.accept(sub, alpha, cv, cs.kappa) for p, cv in tests], axis=0)
            # the last accepted point walking from inside to outside
            k = int(np.argmin(ok)) if not ok.all() else sub.size
            inside = sub[k - 1] if k > 0 else inside
            outside = sub[k] if k < sub.size else outside
        return float(inside)

    lower = edge(grid[i], grid[i - 1], i) if i > 0 else -np.inf
    upper = edge(grid[j], grid[j + 1], j) if j < grid.size - 1 else np.inf
    return HonestInterval(restriction, m, float(lower), float(upper), method)


def resolve_method(restriction: str, method: str | None) -> str:
    """The procedure for a restriction: its default when None, checked, lower case."""
    check_choice("restriction", restriction, RESTRICTIONS)
    method = (method or DEFAULT_METHOD[restriction]).lower()
    check_choice(f"method for {restriction}", method, METHODS[restriction])
    return method


def honest_interval(inputs: EventInputs, restriction: str, m: float, l: np.ndarray,
                    alpha: float = 0.05, method: str | None = None, **options) -> HonestInterval:
    """One honest set for ``l' tau_post`` by the named method (see the module doc)."""
    method = resolve_method(restriction, method)
    if method == "flci":
        return flci_smoothness(inputs, m, l, alpha)
    if method == "bonferroni":
        return bonferroni_relative_magnitudes(inputs, m, l, alpha)
    return conditional_interval(inputs, restriction, m, l, alpha, hybrid=method == "c-lf", **options)


def honest_intervals(est: Estimate, restriction: str = "smoothness",
                     grid: Sequence[float] | None = None, target: str | int = "average",
                     alpha: float = 0.05, method: str | None = None, **options) -> pd.DataFrame:
    """Honest confidence sets across a grid of M (smoothness) or Mbar (relative magnitudes),
    with the conventional interval as the first row.

    ``method``: ``"flci"`` (default for smoothness), ``"c-lf"`` (default for relative
    magnitudes), ``"conditional"``, or ``"bonferroni"`` (relative magnitudes only); the
    conditional methods take ``options`` of :func:`conditional_interval`.
    """
    check_choice("restriction", restriction, RESTRICTIONS)
    inputs = event_inputs(est)
    l = target_weights(inputs, target)
    if grid is None:
        sd = float(np.sqrt(np.diag(inputs.sigma)).mean())
        grid = (np.linspace(0, 0.5 * sd, 6) if restriction == "smoothness" else np.linspace(0, 2, 9))
    center = float(l @ inputs.beta[inputs.n_pre:])
    sd_post = float(np.sqrt(l @ inputs.sigma[inputs.n_pre:, inputs.n_pre:] @ l))
    z = special.ndtri(1 - alpha / 2)
    rows = [{"restriction": "none (parallel trends)", "M": np.nan, "lower": center - z * sd_post,
             "upper": center + z * sd_post, "method": "conventional"}]
    for m in grid:
        iv = honest_interval(inputs, restriction, float(m), l, alpha, method, **options)
        rows.append({"restriction": restriction, "M": float(m), "lower": iv.lower,
                     "upper": iv.upper, "method": iv.method})
    out = pd.DataFrame(rows)
    out["includes_zero"] = (out["lower"] <= 0) & (out["upper"] >= 0)
    return out


def breakdown(est: Estimate, restriction: str = "smoothness", target: str | int = "average",
              alpha: float = 0.05, upper: float | None = None, method: str | None = None,
              rtol: float = 1e-3, **options) -> float:
    """Smallest M (or Mbar) at which the honest set includes zero, by bisection to a
    relative tolerance ``rtol``; ``inf`` when it never does below ``upper``, 0 when the
    conventional interval already does. For the conditional methods "includes zero"
    means the test accepts a zero effect (the set is that of the accepted values)."""
    method = resolve_method(restriction, method)
    inputs = event_inputs(est)
    l = target_weights(inputs, target)

    def has_zero(m: float) -> bool:
        if method in ("c-lf", "conditional"):
            opts = {k: v for k, v in options.items() if k in ("kappa", "post_moments_only", "sims", "seed")}
            return conditional_set(inputs, restriction, m, l, alpha, hybrid=method == "c-lf",
                                   **opts).accepts(0.0)
        iv = honest_interval(inputs, restriction, m, l, alpha, method, **options)
        return iv.lower <= 0 <= iv.upper

    if has_zero(0.0):
        return 0.0
    hi = upper if upper is not None else (10 * float(np.sqrt(np.diag(inputs.sigma)).max())
                                          if restriction == "smoothness" else 20.0)
    if not has_zero(hi):
        return float("inf")
    lo = 0.0
    while hi - lo > rtol * hi:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if has_zero(mid) else (mid, hi)
    return hi


# --- pre-trend power (Roth 2022) ------------------------------------------------------------

def pretest_power(est: Estimate, slope: float, alpha: float = 0.05, n_sim: int = 20_000,
                  rng: np.random.Generator | None = None, target: str | int = "average"
                  ) -> dict[str, float]:
    """Power of the joint pre-test (Wald, chi2) against a linear violation
    ``delta_t = slope * (t + 1)``, and the bias of the post-period target among draws that
    pass it, by simulation from N(delta, Sigma)."""
    inputs = event_inputs(est)
    if inputs.n_pre == 0:
        raise EstimationError("pre-trend power needs pre-period coefficients")
    rng = rng or np.random.default_rng(0)
    l = target_weights(inputs, target)
    delta = slope * (inputs.times + 1).astype(float)
    draws = rng.multivariate_normal(delta, inputs.sigma, size=n_sim, method="cholesky")
    pre = draws[:, :inputs.n_pre]
    inv = np.linalg.inv(inputs.sigma[:inputs.n_pre, :inputs.n_pre])
    wald = np.einsum("ij,jk,ik->i", pre, inv, pre)
    passes = wald <= stats.chi2.ppf(1 - alpha, inputs.n_pre)
    post = draws[:, inputs.n_pre:] @ l
    true_bias = float(delta[inputs.n_pre:] @ l)
    return {"slope": slope, "power": float(1 - passes.mean()),
            "bias_unconditional": true_bias,
            "bias_given_pass": float(post[passes].mean()) if passes.any() else float("nan")}


def detectable_slope(est: Estimate, power: float = 0.8, alpha: float = 0.05) -> float:
    """Slope of a linear violation the pre-test detects with the given power (exact: the
    Wald statistic is noncentral chi2 with noncentrality ``slope^2 t' Sigma^-1 t``)."""
    inputs = event_inputs(est)
    t = (inputs.times[:inputs.n_pre] + 1).astype(float)
    a = float(t @ np.linalg.solve(inputs.sigma[:inputs.n_pre, :inputs.n_pre], t))
    crit = stats.chi2.ppf(1 - alpha, inputs.n_pre)
    f = lambda lam: stats.ncx2.sf(crit, inputs.n_pre, lam) - power  # noqa: E731
    lam = optimize.brentq(f, 1e-10, 1e4)
    return float(np.sqrt(lam / a))
