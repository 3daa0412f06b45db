"""Propensity-score matching: the score model, common support, matching and balance.

The numbers happen in module-level functions on numpy arrays, usable on any unit-level
table (the LaLonde tests run them on a cross section): :func:`fit_binary` (logit / probit
by Newton-Raphson), :func:`common_support`, :func:`kernel_match` (psmatch2's formula),
:func:`nearest_neighbor_match`, :func:`balance_table`, :func:`effective_n` and
:func:`att_from_weights`. :class:`MatchOptions` bundles the matching options and its
:meth:`~MatchOptions.match_units` runs score -> support -> matching on arrays.

On a panel, :func:`parse_baseline` reads the ``baseline`` option, the subject helpers turn
the panel into the units (at a baseline) or unit-years that get scored and matched, and
:class:`MatchResult` holds the scores, weights, pairs and balance of one matching step. The
estimators built on this core live in :mod:`estimators.psm_did` (PSM-DID, both routes) and
:mod:`estimators.drdid` (the doubly robust DID).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy import special

from .panel import COHORT, TIME, UNIT, EstimationError, OptionError, PanelError, check_choice, check_panel

LINKS = ("logit", "probit")
METHODS = ("kernel", "nearest", "radius")
KERNELS = ("epanechnikov", "gaussian", "uniform", "tricube", "biweight")
SUPPORT_RULES = ("minmax", "quantile", "none")
ORDERS = ("descending", "ascending", "data", "random")
TIES = ("lowest", "random")
BASELINE_HELP = ("'mean' (pre-period means), 'year:2010' or 2010 (one pre-period year), "
                 "'period' (a score per unit and year, matched within year) or 'pooled' "
                 "(one score over all unit-years)")

#: Newton-Raphson: converged when the largest step on the standardised coefficients is below
#: this; a quadratically convergent Newton step of 1e-10 leaves an error near 1e-20
NEWTON_TOL = 1e-10
#: Newton iterations before the score model is declared separated (a logit or probit without
#: separation converges in well under 20 from the sample share)
NEWTON_MAX_ITER = 100


# --- the score model ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BinaryFit:
    """A fitted logit or probit ``P(treated = 1 | x) = F(b0 + x'b)``.

    Attributes
    ----------
    params
        ``(1 + k,)`` intercept first, on the scale of the covariates given.
    cov
        Inverse of the (observed) information matrix at the optimum.
    fitted
        Fitted probabilities (the propensity score).
    index
        Linear index ``b0 + x'b``.
    loglik, n_iter, link
        Log-likelihood at the optimum, Newton iterations, link.
    """

    params: np.ndarray
    cov: np.ndarray
    fitted: np.ndarray
    index: np.ndarray
    loglik: float
    n_iter: int
    link: str


def _loglik(y: np.ndarray, eta: np.ndarray, link: str) -> float:
    if link == "logit":
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))
    return float(np.sum(special.log_ndtr((2 * y - 1) * eta)))


def _firth_loglik(y: np.ndarray, eta: np.ndarray, link: str, z: np.ndarray) -> float:
    """Firth's penalised logit log-likelihood ``l + 0.5 log|Z'WZ|``."""
    p = special.expit(eta)
    sign, logdet = np.linalg.slogdet((z * (p * (1 - p))[:, None]).T @ z)
    return _loglik(y, eta, "logit") + (0.5 * logdet if sign > 0 else -np.inf)


def _firth_score_info(y: np.ndarray, eta: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Firth's modified score ``Z'(y - p + h (1/2 - p))`` (``h``: the hat values of the
    weighted design) and the Fisher information."""
    p = special.expit(eta)
    w = p * (1 - p)
    info = (z * w[:, None]).T @ z
    h = w * np.einsum("ij,ij->i", z @ np.linalg.pinv(info), z)
    return z.T @ (y - p + h * (0.5 - p)), info


def _score_info(y: np.ndarray, eta: np.ndarray, z: np.ndarray, link: str) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and observed information of the log-likelihood in the coefficients."""
    if link == "logit":
        p = special.expit(eta)
        resid, w = y - p, p * (1 - p)
    else:
        q = 2 * y - 1
        # lambda = q phi(q eta) / Phi(q eta), in logs so that it stays finite in the tails
        lam = q * np.exp(-0.5 * eta**2 - 0.5 * np.log(2 * np.pi) - special.log_ndtr(q * eta))
        resid, w = lam, lam * (lam + eta)
    return z.T @ resid, (z * w[:, None]).T @ z


def fit_binary(
    y: np.ndarray,
    x: np.ndarray,
    link: str = "logit",
    names: Sequence[str] | None = None,
    *,
    firth: bool = False,
    tol: float = NEWTON_TOL,
    max_iter: int = NEWTON_MAX_ITER,
) -> BinaryFit:
    """Maximum-likelihood logit or probit by Newton-Raphson (an intercept is added); with
    ``firth=True``, Firth's penalised logit.

    Parameters
    ----------
    y
        0/1 outcome (treated).
    x
        ``(n, k)`` covariates without a constant (``k`` may be 0).
    link
        ``"logit"`` or ``"probit"``.
    names
        Covariate names, for error messages.
    firth
        Maximise ``l(b) + 0.5 log|I(b)|`` (Firth 1993; R's logistf): the estimate exists
        under separation and its small-sample bias is removed to first order. Logit only.
        ``loglik`` is then the penalised log-likelihood.

    Returns
    -------
    BinaryFit

    Raises
    ------
    EstimationError
        No variation in ``y``, a constant or collinear covariate, or (quasi-)complete
        separation, in which case the maximum-likelihood estimate does not exist.

    Notes
    -----
    The covariates are standardised before the iterations (the fitted probabilities are
    invariant; the conditioning of ``X'WX`` is not) and the coefficients mapped back.
    Newton steps use the observed information (for the logit it equals the expected one)
    with step halving if the log-likelihood would fall; both log-likelihoods are concave.
    A test pins the result to statsmodels ``Logit`` / ``Probit`` to 1e-8.
    """
    check_choice("link", link, LINKS)
    if firth and link != "logit":
        raise OptionError("the Firth penalty is implemented for the logit link only")
    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n, k = x.shape
    names = list(names) if names is not None else [f"x{j}" for j in range(k)]
    share = y.mean() if n else np.nan
    if not 0 < share < 1:
        raise EstimationError(
            f"the propensity score needs treated and control units; got {int(y.sum())} "
            f"treated of {n}"
        )
    m = x.mean(axis=0)
    s = x.std(axis=0)
    flat = ~(s > 1e-12 * np.maximum(np.abs(m), 1.0))
    if flat.any():
        raise EstimationError(
            f"covariate {names[int(np.flatnonzero(flat)[0])]!r} does not vary across the "
            f"{n} units being scored; drop it from the propensity score"
        )
    z = np.column_stack([np.ones(n), (x - m) / s])
    g = np.zeros(k + 1)
    g[0] = special.logit(share) if link == "logit" else special.ndtri(share)
    ll = _firth_loglik(y, z @ g, link, z) if firth else _loglik(y, z @ g, link)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        grad, info = (_firth_score_info(y, z @ g, z) if firth
                      else _score_info(y, z @ g, z, link))
        try:
            step = np.linalg.solve(info, grad)
        except np.linalg.LinAlgError:
            step = np.full(k + 1, np.nan)
        if not np.all(np.isfinite(step)):
            raise EstimationError(_separation_message(names, link, "singular information"))
        t = 1.0
        while True:
            g_new = g + t * step
            ll_new = (_firth_loglik(y, z @ g_new, link, z) if firth
                      else _loglik(y, z @ g_new, link))
            if ll_new >= ll - 1e-12 * (1 + abs(ll)) or t < 1e-8:
                break
            t /= 2
        g, ll = g_new, ll_new
        if np.max(np.abs(t * step)) < tol:
            converged = True
            break
    if not converged:
        raise EstimationError(_separation_message(names, link, f"no convergence in {max_iter} steps"))
    eta = z @ g
    _, info = _score_info(y, eta, z, link)
    try:
        cov_g = np.linalg.inv(info)
    except np.linalg.LinAlgError as exc:  # pragma: no cover - caught by the solve above
        raise EstimationError(_separation_message(names, link, str(exc))) from exc
    a = np.zeros((k + 1, k + 1))
    a[0, 0] = 1.0
    a[0, 1:] = -m / s
    a[1:, 1:] = np.diag(1 / s)
    params = a @ g
    fitted = special.expit(eta) if link == "logit" else special.ndtr(eta)
    if firth:  # the penalty depends on the scale of the design: report it on the user's
        ll = _firth_loglik(y, eta, link, np.column_stack([np.ones(n), x]))
    return BinaryFit(params, a @ cov_g @ a.T, fitted, eta, ll, it, link)


def _separation_message(names: Sequence[str], link: str, why: str) -> str:
    return (
        f"the {link} propensity score on {list(names)} has no maximum-likelihood estimate "
        f"({why}): the covariates (nearly) separate treated from control units, so there is "
        "no overlap to match on; use fewer score covariates, another baseline, or (DR-DID) "
        "Firth's penalised logit, firth=True"
    )


# --- common support ---------------------------------------------------------------------------

def common_support(score: np.ndarray, treated: np.ndarray, rule: str = "minmax",
                   q: float = 0.02) -> np.ndarray:
    """Which units lie on the common support of the score.

    ``"minmax"`` keeps treated units inside the controls' ``[min, max]`` of the score and
    controls inside the treated units' ``[min, max]`` (psmatch2's ``common`` does the first
    half; with ATT weights the second half only removes controls that could not be used).
    ``"quantile"`` replaces each group's min and max with its ``q`` and ``1 - q`` quantiles
    (linear interpolation), trimming the thin tails of the other group. ``"none"`` keeps all.
    """
    check_choice("support", rule, SUPPORT_RULES)
    score = np.asarray(score, dtype=float)
    treated = np.asarray(treated, dtype=bool)
    if rule == "none":
        return np.ones(score.shape, dtype=bool)
    t, c = score[treated], score[~treated]
    if rule == "minmax":
        lo_c, hi_c, lo_t, hi_t = c.min(), c.max(), t.min(), t.max()
    else:
        lo_c, hi_c = np.quantile(c, [q, 1 - q])
        lo_t, hi_t = np.quantile(t, [q, 1 - q])
    keep_t = (score >= lo_c) & (score <= hi_c)
    keep_c = (score >= lo_t) & (score <= hi_t)
    return np.where(treated, keep_t, keep_c)


# --- matching --------------------------------------------------------------------------------

class Matching(NamedTuple):
    """Result of a matching step on ``n`` units (arrays index those units).

    ``weights`` are ATT weights: 1 for a matched treated unit, the sum of its matching
    weights for a control, 0 otherwise. ``pairs_*`` list every (treated, control) link with
    its weight ``w_ij`` (each matched treated unit's weights sum to one).
    """

    weights: np.ndarray
    matched: np.ndarray        # bool: treated units that found at least one control
    pairs_treated: np.ndarray  # int positions
    pairs_control: np.ndarray  # int positions
    pairs_weight: np.ndarray


def kernel_function(dif: np.ndarray, bandwidth: float, kernel: str = "epanechnikov") -> np.ndarray:
    """psmatch2's kernels at score differences ``dif``, unnormalised (constants cancel).

    epanechnikov ``1 - u^2``, biweight ``(1 - u^2)^2``, uniform ``1``, tricube
    ``(1 - |u|^3)^3``, all for ``|dif| <= bandwidth`` and zero outside; gaussian
    ``phi(u)`` everywhere; ``u = dif / bandwidth``.
    """
    check_choice("kernel", kernel, KERNELS)
    u = dif / bandwidth
    if kernel == "gaussian":
        return np.exp(-0.5 * u * u) / np.sqrt(2 * np.pi)
    inside = np.abs(dif) <= bandwidth
    if kernel == "epanechnikov":
        k = 1 - u * u
    elif kernel == "biweight":
        k = (1 - u * u) ** 2
    elif kernel == "uniform":
        k = np.ones_like(u)
    else:
        k = (1 - np.abs(u) ** 3) ** 3
    return np.where(inside, k, 0.0)


def kernel_match(score: np.ndarray, treated: np.ndarray, bandwidth: float = 0.06,
                 kernel: str = "epanechnikov", on_support: np.ndarray | None = None) -> Matching:
    """Kernel matching as psmatch2 does it (ATT).

    For treated unit ``i`` and control ``j`` (both on support),
    ``w_ij = K((p_j - p_i) / h) / sum_l K((p_l - p_i) / h)``; a control's weight is
    ``sum_i w_ij``; a treated unit with no control inside the kernel's window is unmatched
    (psmatch2 sets its ``_support`` to 0) and gets weight 0.
    """
    if not bandwidth > 0:
        raise OptionError(f"bandwidth={bandwidth!r} must be positive")
    score = np.asarray(score, dtype=float)
    treated = np.asarray(treated, dtype=bool)
    on = np.ones(score.size, dtype=bool) if on_support is None else np.asarray(on_support, bool)
    t_idx = np.flatnonzero(treated & on)
    c_idx = np.flatnonzero(~treated & on)
    k = kernel_function(score[c_idx][None, :] - score[t_idx][:, None], bandwidth, kernel)
    mass = k.sum(axis=1)
    ok = mass > 0
    w = np.zeros_like(k)
    w[ok] = k[ok] / mass[ok, None]
    weights = np.zeros(score.size)
    weights[t_idx[ok]] = 1.0
    weights[c_idx] = w.sum(axis=0)
    matched = np.zeros(score.size, dtype=bool)
    matched[t_idx[ok]] = True
    ti, ci = np.nonzero(w > 0)
    return Matching(weights, matched, t_idx[ti], c_idx[ci], w[ti, ci])


def _logit(p: np.ndarray) -> np.ndarray:
    return special.logit(np.clip(p, 1e-15, 1 - 1e-15))


def nearest_neighbor_match(
    score: np.ndarray,
    treated: np.ndarray,
    *,
    n_neighbors: int = 1,
    replace: bool = True,
    caliper: float | None = None,
    order: str = "descending",
    ties: str = "lowest",
    rng: np.random.Generator | None = None,
    on_support: np.ndarray | None = None,
) -> Matching:
    """Nearest-neighbour matching on the score (ATT).

    Parameters
    ----------
    score, treated
        Propensity score and treatment of each unit.
    n_neighbors
        Controls per treated unit (``k``).
    replace
        With replacement (psmatch2's default): each treated unit takes its ``k`` nearest
        controls. Without (MatchIt's default): greedy, in rounds -- round ``r`` gives every
        treated unit that found ``r - 1`` matches its nearest control not yet used, the
        treated units taken in ``order``.
    caliper
        Maximum distance, in standard deviations of the logit of the score over all units
        given (Austin 2011 suggests 0.2); ``None`` for no caliper. Distances themselves are
        ``|p_i - p_j|`` (psmatch2, MatchIt).
    order
        Greedy order without replacement: ``"descending"`` score (MatchIt's ``"largest"``,
        its default), ``"ascending"``, ``"data"`` (as given) or ``"random"`` (needs ``rng``).
    ties
        Equal distances: ``"lowest"`` position wins (deterministic) or ``"random"`` (``rng``).

    Returns
    -------
    Matching
        Control weights ``sum_i 1{j in M_i} / |M_i|``; treated units without a match (only
        possible with a caliper or when controls run out) are unmatched.
    """
    check_choice("order", order, ORDERS)
    check_choice("ties", ties, TIES)
    if int(n_neighbors) != n_neighbors or n_neighbors < 1:
        raise OptionError(f"n_neighbors={n_neighbors!r} must be a positive integer")
    if caliper is not None and not caliper > 0:
        raise OptionError(f"caliper={caliper!r} must be positive (SDs of the logit score) or None")
    if (ties == "random" or (order == "random" and not replace)) and rng is None:
        raise OptionError("ties='random' or order='random' needs a generator: pass rng=...")
    k = int(n_neighbors)
    score = np.asarray(score, dtype=float)
    treated = np.asarray(treated, dtype=bool)
    on = np.ones(score.size, dtype=bool) if on_support is None else np.asarray(on_support, bool)
    t_idx = np.flatnonzero(treated & on)
    c_idx = np.flatnonzero(~treated & on)
    lg = _logit(score)
    limit = np.inf if caliper is None else caliper * float(np.std(lg, ddof=1))
    dist = np.abs(score[c_idx][None, :] - score[t_idx][:, None])
    allowed = np.abs(lg[c_idx][None, :] - lg[t_idx][:, None]) <= limit
    matches = np.full((t_idx.size, k), -1, dtype=np.intp)

    def tiebreak() -> np.ndarray:
        return np.arange(c_idx.size) if ties == "lowest" else rng.permutation(c_idx.size)

    if replace:
        for a in range(t_idx.size):
            cand = np.flatnonzero(allowed[a])
            if cand.size == 0:
                continue
            key = tiebreak()[cand]
            best = cand[np.lexsort((key, dist[a, cand]))[:k]]
            matches[a, :best.size] = best
    else:
        if order == "descending":
            seq = np.argsort(-score[t_idx], kind="stable")
        elif order == "ascending":
            seq = np.argsort(score[t_idx], kind="stable")
        elif order == "data":
            seq = np.arange(t_idx.size)
        else:
            seq = rng.permutation(t_idx.size)
        free = np.ones(c_idx.size, dtype=bool)
        for r in range(k):
            for a in seq:
                if r > 0 and matches[a, r - 1] < 0:
                    continue
                cand = np.flatnonzero(free & allowed[a])
                if cand.size == 0:
                    continue
                dd = dist[a, cand]
                best = cand[dd == dd.min()]
                if best.size > 1:
                    key = tiebreak()[best]
                    best = best[np.argsort(key, kind="stable")]
                matches[a, r] = best[0]
                free[best[0]] = False
    n_match = (matches >= 0).sum(axis=1)
    weights = np.zeros(score.size)
    matched = np.zeros(score.size, dtype=bool)
    ok = n_match > 0
    weights[t_idx[ok]] = 1.0
    matched[t_idx[ok]] = True
    rows, cols = np.nonzero(matches >= 0)
    pc = c_idx[matches[rows, cols]]
    pw = 1.0 / n_match[rows]
    np.add.at(weights, pc, pw)
    return Matching(weights, matched, t_idx[rows], pc, pw)


# --- balance -----------------------------------------------------------------------------------

def _wmean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    sw = w.sum()
    return (w @ x) / sw if sw > 0 else np.full(x.shape[1], np.nan)


def _wvar(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted variance with the reliability-weight correction (ddof=1 for equal weights)."""
    v1, v2 = w.sum(), (w * w).sum()
    denom = v1 - v2 / v1 if v1 > 0 else 0.0
    if not denom > 0:
        return np.full(x.shape[1], np.nan)
    m = (w @ x) / v1
    return (w @ (x - m) ** 2) / denom


def balance_table(x: np.ndarray, names: Sequence[str], treated: np.ndarray,
                  weights: np.ndarray) -> pd.DataFrame:
    """Covariate balance before and after matching (or weighting).

    Parameters
    ----------
    x
        ``(n, k)`` covariates of the units.
    treated
        Treatment of each unit.
    weights
        ATT weights after matching (0 drops a unit).

    Returns
    -------
    pandas.DataFrame
        One row per covariate: ``mean_treated`` / ``mean_control`` before (all units) and
        ``mean_treated_after`` / ``mean_control_after`` (weighted), standardised mean
        differences ``smd_before`` / ``smd_after`` and variance ratios ``vr_before`` /
        ``vr_after`` (treated over control).

    Notes
    -----
    Both SMDs divide by the same denominator, ``sqrt((s_t^2 + s_c^2) / 2)`` of the
    unmatched sample (Rosenbaum and Rubin 1985, as Stata's ``pstest``), so that the
    before/after comparison reflects mean shifts only. Weighted variances use the
    reliability-weight correction ``sum w (x - m)^2 / (sum w - sum w^2 / sum w)``.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    t = np.asarray(treated, dtype=bool)
    w = np.asarray(weights, dtype=float)
    xt, xc = x[t], x[~t]
    with np.errstate(invalid="ignore", divide="ignore"):
        vt = xt.var(axis=0, ddof=1) if xt.shape[0] > 1 else np.full(x.shape[1], np.nan)
        vc = xc.var(axis=0, ddof=1) if xc.shape[0] > 1 else np.full(x.shape[1], np.nan)
        sd = np.sqrt((vt + vc) / 2)
        mt, mc = xt.mean(axis=0), xc.mean(axis=0)
        mta, mca = _wmean(xt, w[t]), _wmean(xc, w[~t])
        vta, vca = _wvar(xt, w[t]), _wvar(xc, w[~t])
        out = pd.DataFrame({
            "covariate": list(names),
            "mean_treated": mt,
            "mean_control": mc,
            "mean_treated_after": mta,
            "mean_control_after": mca,
            "smd_before": np.where(sd > 0, (mt - mc) / sd, np.nan),
            "smd_after": np.where(sd > 0, (mta - mca) / sd, np.nan),
            "vr_before": vt / vc,
            "vr_after": vta / vca,
        })
    return out


def effective_n(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` of positive weights."""
    w = np.asarray(weights, dtype=float)
    w = w[w > 0]
    return float(w.sum() ** 2 / (w * w).sum()) if w.size else 0.0


def att_from_weights(y: np.ndarray, treated: np.ndarray, weights: np.ndarray) -> float:
    """Matching ATT on a cross section: mean outcome of the matched treated units minus the
    weighted mean of the controls (weights from :func:`kernel_match` or
    :func:`nearest_neighbor_match`)."""
    y = np.asarray(y, dtype=float)
    t = np.asarray(treated, dtype=bool)
    w = np.asarray(weights, dtype=float)
    wt, wc = w * t, w * ~t
    if not (wt.sum() > 0 and wc.sum() > 0):
        raise EstimationError("no matched treated unit or no weighted control: the ATT is undefined")
    return float(wt @ y / wt.sum() - wc @ y / wc.sum())


# --- matching options and the array-level pipeline ---------------------------------------------

@dataclass(frozen=True)
class UnitMatch:
    """Score, support and matching of one set of units (arrays index those units)."""

    score: np.ndarray
    treated: np.ndarray
    on_support: np.ndarray
    matching: Matching
    score_fit: BinaryFit

    @property
    def weights(self) -> np.ndarray:
        return self.matching.weights


@dataclass(frozen=True, kw_only=True)
class MatchOptions:
    """How to score and match (shared by the PSM-DID estimators; usable on its own).

    Parameters
    ----------
    link
        Score model: ``"logit"`` (the carbon-trading papers) or ``"probit"`` (psmatch2's
        and Stata ``diff``'s default).
    method
        ``"kernel"`` (default, psmatch2 / ``diff``), ``"nearest"`` or ``"radius"``
        (uniform kernel of half-width ``bandwidth``: every control within the radius,
        equally weighted, as psmatch2's ``radius``).
    kernel
        ``"epanechnikov"`` (default), ``"gaussian"``, ``"uniform"``, ``"tricube"``,
        ``"biweight"``.
    bandwidth
        Kernel bandwidth or radius on the score scale (default 0.06, psmatch2 / ``diff``).
    n_neighbors, replace, caliper, order, ties
        Nearest-neighbour options, see :func:`nearest_neighbor_match`. ``replace=True`` by
        default (psmatch2); MatchIt's default is ``replace=False, order="descending"``.
    support, support_q
        Common-support rule (see :func:`common_support`) and its quantile.
    """

    link: str = "logit"
    method: str = "kernel"
    kernel: str = "epanechnikov"
    bandwidth: float = 0.06
    n_neighbors: int = 1
    replace: bool = True
    caliper: float | None = None
    order: str = "descending"
    ties: str = "lowest"
    support: str = "minmax"
    support_q: float = 0.02

    def check_matching(self) -> None:
        """Validate the matching options (each error names the option and the choices)."""
        check_choice("link", self.link, LINKS)
        check_choice("method", self.method, METHODS)
        check_choice("kernel", self.kernel, KERNELS)
        check_choice("order", self.order, ORDERS)
        check_choice("ties", self.ties, TIES)
        check_choice("support", self.support, SUPPORT_RULES)
        check_choice("replace", self.replace, (True, False))
        if not (isinstance(self.bandwidth, (int, float)) and math.isfinite(self.bandwidth)
                and self.bandwidth > 0):
            raise OptionError(f"bandwidth={self.bandwidth!r} must be a positive number")
        if (isinstance(self.n_neighbors, bool) or not isinstance(self.n_neighbors, (int, np.integer))
                or self.n_neighbors < 1):
            raise OptionError(f"n_neighbors={self.n_neighbors!r} must be a positive integer")
        if self.caliper is not None and not (isinstance(self.caliper, (int, float)) and self.caliper > 0):
            raise OptionError(f"caliper={self.caliper!r} must be positive (SDs of the logit score) or None")
        if not 0 < self.support_q < 0.5:
            raise OptionError(f"support_q={self.support_q!r} must lie strictly between 0 and 0.5")

    def needs_rng(self) -> bool:
        """Whether matching itself is random (random ties or random greedy order)."""
        if self.method != "nearest":
            return False
        return self.ties == "random" or (self.order == "random" and not self.replace)

    def match_units(self, x: np.ndarray, treated: np.ndarray, names: Sequence[str] | None = None,
                    rng: np.random.Generator | None = None) -> UnitMatch:
        """Score, trim to the common support and match one set of units.

        Parameters
        ----------
        x
            ``(n, k)`` covariates of the score model (a constant is added).
        treated
            Treatment of each unit.
        names
            Covariate names for error messages.
        rng
            Needed only for random ties or a random greedy order.
        """
        self.check_matching()
        treated = np.asarray(treated, dtype=bool)
        fit = fit_binary(treated.astype(float), x, self.link, names)
        score = fit.fitted
        on = common_support(score, treated, self.support, self.support_q)
        if self.method == "nearest":
            m = nearest_neighbor_match(score, treated, n_neighbors=self.n_neighbors,
                                       replace=self.replace, caliper=self.caliper,
                                       order=self.order, ties=self.ties, rng=rng, on_support=on)
        else:
            kernel = "uniform" if self.method == "radius" else self.kernel
            m = kernel_match(score, treated, self.bandwidth, kernel, on)
        return UnitMatch(score, treated, on, m, fit)

    def describe_matching(self) -> str:
        if self.method == "nearest":
            how = (f"{self.n_neighbors}-nearest-neighbour "
                   f"{'with' if self.replace else 'without'} replacement"
                   + ("" if self.replace else f" ({self.order} order)")
                   + (f", caliper {self.caliper:g} SD of logit score" if self.caliper else ""))
        elif self.method == "radius":
            how = f"radius {self.bandwidth:g}"
        else:
            how = f"{self.kernel} kernel, bandwidth {self.bandwidth:g}"
        return f"{self.link} score; {how}; support {self.support}"


# --- panel -> matching subjects ----------------------------------------------------------------

def parse_baseline(baseline: Any, row_level: bool = True) -> tuple[str, int | None]:
    """``baseline`` option -> (kind, year): ``("mean", None)``, ``("year", 2010)``,
    ``("period", None)`` or ``("pooled", None)``."""
    if isinstance(baseline, (int, np.integer)) and not isinstance(baseline, bool):
        return "year", int(baseline)
    if isinstance(baseline, str):
        b = baseline.strip().lower()
        if b == "mean":
            return "mean", None
        if b in ("period", "pooled") and row_level:
            return b, None
        if b.startswith("year:"):
            try:
                return "year", int(b.split(":", 1)[1])
            except ValueError:
                pass
    forms = BASELINE_HELP if row_level else "'mean' (pre-period means) or 'year:2010' / 2010 (one pre-period year)"
    raise OptionError(f"baseline={baseline!r} is not accepted; use {forms}")


@dataclass(frozen=True)
class _Subjects:
    """What gets scored and matched: units (at a baseline) or unit-years."""

    level: str                  # "unit" or "unit-year"
    x: np.ndarray               # (m, k) score covariates
    treated: np.ndarray         # (m,) bool
    rows: np.ndarray | None     # unit-year level: panel row of each subject
    units: np.ndarray           # unit code of each subject
    groups: np.ndarray | None   # "period": time code of each subject (matched within)
    n_no_baseline: int


@dataclass(frozen=True)
class _PanelData:
    panel: pd.DataFrame
    unit: np.ndarray            # row -> unit code
    time: np.ndarray            # row -> time code
    arrays: dict[str, np.ndarray]
    unit_ids: np.ndarray        # unit code -> id
    unit_cohort: np.ndarray     # unit code -> cohort
    years: np.ndarray           # time code -> year
    first: int                  # first treated cohort
    balanced: bool


def _panel_data(panel: pd.DataFrame, outcome: str, columns: Sequence[str]) -> _PanelData:
    info, unit, time, arrays = check_panel(panel, outcomes=(outcome,), covariates=tuple(columns))
    n_units = info.n_units
    unit_cohort = np.zeros(n_units)
    unit_cohort[unit] = arrays[COHORT]
    years = np.zeros(info.n_periods)
    years[time] = arrays[TIME]
    unit_ids = np.unique(panel[UNIT].to_numpy())
    first = int(unit_cohort[unit_cohort > 0].min())
    return _PanelData(panel, unit, time, arrays, unit_ids, unit_cohort, years.astype(int),
                      first, info.balanced)


def _subjects(data: _PanelData, covariates: Sequence[str], kind: str, year: int | None) -> _Subjects:
    """Score covariates per unit at the baseline, or per unit-year."""
    n_units = data.unit_ids.size
    x_rows = np.column_stack([data.arrays[c] for c in covariates])
    row_time = data.arrays[TIME]
    if kind in ("period", "pooled"):
        treated = data.unit_cohort[data.unit] > 0
        return _Subjects("unit-year", x_rows, treated, np.arange(len(row_time)), data.unit,
                         data.time if kind == "period" else None, 0)
    if kind == "mean":
        sel = row_time < data.first
        what = f"before the first treated period {data.first}"
    else:
        if year >= data.first:
            raise OptionError(
                f"baseline year {year} is not a pre-period year: the first cohort is treated "
                f"from {data.first}; choose a year before it"
            )
        sel = row_time == year
        what = f"in {year}"
        if not sel.any():
            raise OptionError(
                f"baseline year {year} is not in the panel (years {data.years.min()}-{data.years.max()})"
            )
    counts = np.bincount(data.unit[sel], minlength=n_units).astype(float)
    sums = np.zeros((n_units, x_rows.shape[1]))
    for j in range(x_rows.shape[1]):
        sums[:, j] = np.bincount(data.unit[sel], weights=x_rows[sel, j], minlength=n_units)
    has = counts > 0
    if not has.any():
        raise PanelError(f"no unit is observed {what}: no baseline to score covariates at")
    codes = np.flatnonzero(has)
    x = sums[has] / counts[has, None]
    return _Subjects("unit", x, data.unit_cohort[codes] > 0, None, codes, None,
                     int((~has).sum()))


# --- the panel-level matching result -------------------------------------------------------------

@dataclass(frozen=True)
class MatchResult:
    """Scores, weights and balance of a PSM step on a panel (for tables and figures).

    Attributes
    ----------
    table
        One row per matching subject -- unit (unit-level baseline) or unit-year (``period``
        / ``pooled``): ``unit`` (and ``time``), ``cohort``, ``treated``, ``score``,
        ``on_support``, ``matched`` (weight > 0) and ``weight`` (ATT weight).
    pairs
        Every (treated, control) link with its weight ``w_ij``: ``treated``, ``control``
        (unit ids; at the unit-year level also ``time`` of the treated and
        ``control_time`` of the control unit-year, which differ under ``pooled``).
    balance
        :func:`balance_table` of the score covariates, with the score itself first as
        ``pscore``.
    diagnostics
        Scalars: ``n_treated``, ``n_controls``, ``n_off_support`` (and by group),
        ``n_unmatched_treated``, ``n_matched_treated``, ``n_matched_controls``,
        ``eff_n_controls``, ``max_abs_smd_before``, ``max_abs_smd_after``,
        ``n_no_baseline``.
    level
        ``"unit"`` or ``"unit-year"``.
    """

    table: pd.DataFrame
    pairs: pd.DataFrame
    balance: pd.DataFrame
    diagnostics: Mapping[str, float]
    level: str
    row_weights: np.ndarray = field(repr=False)  # weight of each panel row (panel order)


def _match_subjects(opts: MatchOptions, subj: _Subjects, names: Sequence[str],
                    years: np.ndarray, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, Matching]:
    """Score and match all subjects (within each year for ``period``).

    Returns score, on_support, weights and the pooled Matching (positions index subjects).
    """
    if subj.groups is None:
        um = opts.match_units(subj.x, subj.treated, names, rng)
        return um.score, um.on_support, um.weights, um.matching
    m = subj.treated.size
    score = np.full(m, np.nan)
    on = np.zeros(m, dtype=bool)
    weights = np.zeros(m)
    matched = np.zeros(m, dtype=bool)
    pt, pc, pw = [], [], []
    for g in np.unique(subj.groups):
        idx = np.flatnonzero(subj.groups == g)
        try:
            um = opts.match_units(subj.x[idx], subj.treated[idx], names, rng)
        except EstimationError as exc:
            raise EstimationError(f"year {years[g]}: {exc}") from exc
        score[idx], on[idx], weights[idx] = um.score, um.on_support, um.weights
        matched[idx] = um.matching.matched
        pt.append(idx[um.matching.pairs_treated])
        pc.append(idx[um.matching.pairs_control])
        pw.append(um.matching.pairs_weight)
    return score, on, weights, Matching(weights, matched, np.concatenate(pt), np.concatenate(pc),
                                        np.concatenate(pw))


def _matching_diagnostics(treated: np.ndarray, on: np.ndarray, weights: np.ndarray,
                          balance: pd.DataFrame, n_no_baseline: int) -> dict[str, float]:
    cov = balance.iloc[1:]  # the first row is the score itself
    smd_b = np.abs(cov["smd_before"].to_numpy(float))
    smd_a = np.abs(cov["smd_after"].to_numpy(float))
    t, c = treated, ~treated
    return {
        "n_treated": float(t.sum()),
        "n_controls": float(c.sum()),
        "n_off_support": float((~on).sum()),
        "n_off_support_treated": float((~on & t).sum()),
        "n_off_support_controls": float((~on & c).sum()),
        "n_unmatched_treated": float((on & t & (weights <= 0)).sum()),
        "n_matched_treated": float((t & (weights > 0)).sum()),
        "n_matched_controls": float((c & (weights > 0)).sum()),
        "eff_n_controls": effective_n(weights[c]),
        "max_abs_smd_before": float(np.nanmax(smd_b)) if np.isfinite(smd_b).any() else float("nan"),
        "max_abs_smd_after": float(np.nanmax(smd_a)) if np.isfinite(smd_a).any() else float("nan"),
        "n_no_baseline": float(n_no_baseline),
    }


def _no_match_error(diag: Mapping[str, float], opts: MatchOptions) -> EstimationError:
    tip = ("widen the bandwidth, use method='nearest', or check overlap"
           if opts.method != "nearest" else "relax the caliper or check overlap")
    return EstimationError(
        f"matching left {int(diag['n_matched_treated'])} treated and "
        f"{int(diag['n_matched_controls'])} control subjects with positive weight "
        f"({int(diag['n_off_support_treated'])} treated and {int(diag['n_off_support_controls'])} "
        f"controls off support, {int(diag['n_unmatched_treated'])} treated without a control "
        f"within reach; {opts.describe_matching()}); {tip}"
    )


__all__ = [
    "BASELINE_HELP", "KERNELS", "LINKS", "METHODS", "NEWTON_MAX_ITER", "NEWTON_TOL", "ORDERS",
    "SUPPORT_RULES", "TIES", "BinaryFit", "MatchOptions", "MatchResult", "Matching",
    "UnitMatch", "att_from_weights", "balance_table", "common_support", "effective_n",
    "fit_binary", "kernel_function", "kernel_match", "nearest_neighbor_match", "parse_baseline",
]
