"""Propensity-score matching DID (PSM-DID) and the doubly robust DID.

Three estimators, one matching core:

* :class:`PSMDID` (label ``psm_did``) -- score, match, keep the units (or unit-years) that
  received a positive matching weight, and re-run the two-way fixed-effects DID on that
  matched sample, unweighted. This is the route of seed 002's Table 5 ("DID re-estimated on
  the matched sample", n = 287) and of the carbon-trading literature generally
  (``psmatch2 ...; reghdfe ... if _weight != .``).
* :class:`PSMDIDWeighted` (label ``psm_did_weighted``) -- the same matching, but the DID is
  a weighted two-way fixed-effects regression whose weights are the matching (ATT) weights
  carried over every year: the kernel-matching DID of Heckman, Ichimura and Todd (1997)
  and of Stata's ``diff, kernel``. Route (a) throws the weights away after using them to
  pick the sample; route (b) uses them.
* :class:`DRDID` (label ``dr_did``) -- Sant'Anna and Zhao's (2020) doubly robust DID for
  panel data (pre/post-averaged), with its influence-function standard error: the modern
  comparison.

The numbers happen in module-level functions on numpy arrays, usable on any unit-level
table (the LaLonde tests run them on a cross section): :func:`fit_binary` (logit / probit
by Newton-Raphson), :func:`common_support`, :func:`kernel_match` (psmatch2's formula),
:func:`nearest_neighbor_match`, :func:`balance_table`, :func:`att_from_weights` and
:func:`drdid_panel`. :class:`MatchOptions` bundles the matching options and its
:meth:`~MatchOptions.match_units` runs score -> support -> matching on arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy import special

from .fe import ols_fe
from .panel import (COHORT, D, TIME, UNIT, EstimationError, OptionError, PanelError,
                    check_choice, check_panel)
from .result import Estimate, critical_value, p_value, terms_frame
from .resample import draw_units
from .twfe import TWFE, check_inference_options

LINKS = ("logit", "probit")
METHODS = ("kernel", "nearest", "radius")
KERNELS = ("epanechnikov", "gaussian", "uniform", "tricube", "biweight")
SUPPORT_RULES = ("minmax", "quantile", "none")
ORDERS = ("descending", "ascending", "data", "random")
TIES = ("lowest", "random")
PSM_INFERENCE = ("cluster", "bootstrap")
DR_INFERENCE = ("influence", "bootstrap")
BOOT_CI = ("normal", "percentile")
BASELINE_HELP = ("'mean' (pre-period means), 'year:2010' or 2010 (one pre-period year), "
                 "'period' (a score per unit and year, matched within year) or 'pooled' "
                 "(one score over all unit-years)")

#: Newton-Raphson: converged when the largest step on the standardised coefficients is below
#: this; a quadratically convergent Newton step of 1e-10 leaves an error near 1e-20
NEWTON_TOL = 1e-10
#: Newton iterations before the score model is declared separated (a logit or probit without
#: separation converges in well under 20 from the sample share)
NEWTON_MAX_ITER = 100
#: propensity scores are capped at 1 - PS_CAP in the DR-DID, as R DRDID does
PS_CAP = 1e-6
#: a bootstrap whose draws fail (no overlap or a separated score in the resample) more often
#: than this share raises instead of reporting an SE computed on the lucky resamples only
MAX_BOOT_FAIL_SHARE = 0.5
#: column that carries matching weights into TWFE (must not clash with a user column)
WEIGHT_COLUMN = "_psm_weight"


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
    tol: float = NEWTON_TOL,
    max_iter: int = NEWTON_MAX_ITER,
) -> BinaryFit:
    """Maximum-likelihood logit or probit by Newton-Raphson (an intercept is added).

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
    ll = _loglik(y, z @ g, link)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        grad, info = _score_info(y, z @ g, z, link)
        try:
            step = np.linalg.solve(info, grad)
        except np.linalg.LinAlgError:
            step = np.full(k + 1, np.nan)
        if not np.all(np.isfinite(step)):
            raise EstimationError(_separation_message(names, link, "singular information"))
        t = 1.0
        while True:
            g_new = g + t * step
            ll_new = _loglik(y, z @ g_new, link)
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
    return BinaryFit(params, a @ cov_g @ a.T, fitted, eta, ll, it, link)


def _separation_message(names: Sequence[str], link: str, why: str) -> str:
    return (
        f"the {link} propensity score on {list(names)} has no maximum-likelihood estimate "
        f"({why}): the covariates (nearly) separate treated from control units, so there is "
        "no overlap to match on; use fewer covariates or another baseline"
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


# --- fast DID on a balanced panel (bootstrap inner loop) ----------------------------------------

def did_coefficient(y: np.ndarray, d: np.ndarray, c: np.ndarray | None = None,
                    w: np.ndarray | None = None) -> float:
    """TWFE coefficient on ``d`` in a balanced panel with unit-level weights.

    Parameters
    ----------
    y, d
        ``(n_units, n_periods)`` outcome and treatment.
    c
        ``(n_units, n_periods, k)`` controls or None.
    w
        ``(n_units,)`` weight of each unit in every period, or None.

    Notes
    -----
    With weights constant within unit, the weighted two-way within transform of a
    balanced panel has the closed form ``z_it - zbar_i. - sum_j w_j (z_jt - zbar_j.) / sum w``
    (the unit mean needs no weights; the period mean is the weighted mean of the
    unit-demeaned values). The regression then goes through :func:`estimators.fe.ols_fe`,
    so absorbed or collinear controls are dropped by the same rule as :class:`TWFE`. A test
    pins this path to :class:`TWFE` to 1e-10.
    """
    parts = [y[..., None], d[..., None]]
    if c is not None and c.shape[-1]:
        parts.append(c)
    z = np.concatenate(parts, axis=2)
    z = z - z.mean(axis=1, keepdims=True)
    if w is None:
        z = z - z.mean(axis=0, keepdims=True)
    else:
        z = z - (np.tensordot(w, z, axes=(0, 0)) / w.sum())[None]
    n, t, m = z.shape
    flat = z.reshape(n * t, m)
    raw = np.concatenate(parts[1:], axis=2).reshape(n * t, m - 1)
    wr = None if w is None else np.repeat(w, t)
    fit = ols_fe(flat[:, 0], flat[:, 1:], raw, wr)
    if not fit.keep[0]:
        raise EstimationError("the treatment indicator is absorbed in this sample")
    return float(fit.coef[0])


def _boot_summary(est: float, draws: np.ndarray, alpha: float, ci: str) -> tuple[float, float, float, float, int]:
    ok = draws[np.isfinite(draws)]
    n_failed = draws.size - ok.size
    if ok.size < 2 or n_failed > MAX_BOOT_FAIL_SHARE * draws.size:
        raise EstimationError(
            f"the bootstrap failed in {n_failed} of {draws.size} draws (a resample without "
            "overlap, a separated score or no match); an SE from the remaining draws would "
            "describe only resamples with overlap: use fewer score covariates or "
            "inference='cluster' / 'influence'"
        )
    se = float(ok.std(ddof=1))
    if ci == "percentile":
        lo, hi = (float(v) for v in np.quantile(ok, [alpha / 2, 1 - alpha / 2]))
    else:
        crit = critical_value(alpha, None)
        lo, hi = est - crit * se, est + crit * se
    p = float(p_value(est / se, None)) if se > 0 else float("nan")
    return se, p, lo, hi, int(n_failed)


def _resample_panel(panel: pd.DataFrame, unit: np.ndarray, columns: Sequence[str],
                    draw: np.ndarray) -> pd.DataFrame:
    """Panel of the drawn units (unit codes), each copy a new unit numbered by its draw."""
    order = np.argsort(unit, kind="stable")
    counts = np.bincount(unit, minlength=int(unit.max()) + 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rows = np.concatenate([order[starts[u]:starts[u] + counts[u]] for u in draw])
    new_unit = np.repeat(np.arange(draw.size), counts[draw])
    out = panel[list(columns)].iloc[rows].reset_index(drop=True)
    out[UNIT] = new_unit
    return out


# --- PSM-DID ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class PSMDID(MatchOptions):
    """PSM-DID: propensity-score matching, then DID on the matched sample (route a).

    Score the units at a baseline, match treated (``cohort > 0``) to never-treated
    (``cohort == 0``) units,
    keep every unit (or unit-year) with a positive matching weight, and fit the two-way
    fixed-effects DID on those rows **unweighted**. This is seed 002's Table 5 route: "DID
    re-estimated on the matched sample" (n = 287). 287 is not a multiple of the 19 years,
    which suggests the paper matched province-years (psmatch2 on the stacked panel,
    ``baseline="pooled"``) and kept the rows with a weight -- see Notes for why that is
    fragile.
    :class:`PSMDIDWeighted` keeps the weights instead (route b).

    Parameters
    ----------
    outcome
        Outcome column.
    covariates
        Score covariates; empty (default) uses ``controls``.
    controls
        Covariates of the final DID regression (time-varying; seed 002's models 6 and 8).
    baseline
        Where the score covariates are measured: ``"mean"`` (default: each unit's mean over
        the periods before the first cohort), an int year or ``"year:2010"`` (that
        pre-period year), ``"period"`` (a separate score and matching in each year, as
        for repeated cross sections) or ``"pooled"`` (one score over all unit-years, treated
        unit-years matched to control unit-years of any year: the common ``psmatch2``
        practice). The last two match unit-years, not units.
    inference
        ``"cluster"`` (default): the final regression's cluster-robust SE, which treats the
        score and the matching as fixed. ``"bootstrap"``: resample units, re-estimate the
        score, the support, the matching and the DID in every draw (needs ``rng``).
    n_boot, boot_ci, stratify
        Bootstrap draws; ``"normal"`` (estimate +- z * bootstrap SE) or ``"percentile"``
        interval; resample treated and control units separately (keeps the number of
        treated units, as the pilot design fixes it).
    cluster, se, ssc, dist, alpha
        Inference options of the final regression, as :class:`~estimators.twfe.TWFE`.
    fast
        Bootstrap through the array path (balanced panel, unit-level baseline); ``False``
        refits the estimator on each resampled panel (identical numbers, pinned by a test).
    label
        Name in outputs.

    Matching options (keyword only) are those of :class:`MatchOptions`: ``link="logit"``,
    ``method="kernel"``, ``kernel="epanechnikov"``, ``bandwidth=0.06``, ``n_neighbors=1``,
    ``replace=True``, ``caliper=None``, ``order="descending"``, ``ties="lowest"``,
    ``support="minmax"``, ``support_q=0.02``.

    Notes
    -----
    Model: ``y_it = a_i + l_t + tau d_it + x_it'b + e_it`` on the matched sample.
    Identification: parallel trends of the untreated outcome *conditional on the score*
    (on the matched sample), no anticipation, and overlap. Matching changes the estimand:
    treated units off support or without a control in reach are dropped, so the target is
    the ATT of the matched treated units (:meth:`matched_estimand`), not the ATT of all
    treated units (:meth:`estimand`); when pilots are selected on the score and effects vary
    with it, the two differ (the Monte Carlo test in ``tests/test_psm.py`` shows kernel
    matching with min-max trimming unbiased for the first and biased for the second).
    Route (a) discards the weights, so a control that
    is the best match of five treated units counts as much as one barely inside the kernel;
    with unit-year matching the kept sample can hold a province in some years and not in
    others, and scores built on post-treatment covariates (``period`` / ``pooled``) are
    affected by the policy itself. The cluster-robust SE (small-sample convention
    ``ssc``) ignores the estimation of the score and the matching; the bootstrap does not
    (but Abadie and Imbens 2008 show the bootstrap is not valid for nearest-neighbour
    matching with a fixed number of matches; smooth kernel matching escapes that result).
    A bootstrap with more than half of its draws failing raises instead of reporting.
    """

    outcome: str
    covariates: Sequence[str] = ()
    controls: Sequence[str] = ()
    baseline: Any = "mean"
    inference: str = "cluster"
    n_boot: int = 499
    boot_ci: str = "normal"
    stratify: bool = True
    cluster: str | None = UNIT
    se: str = "cluster"
    ssc: str = "stata"
    dist: str = "t"
    alpha: float = 0.05
    fast: bool = True
    label: str = "psm_did"

    route: ClassVar[str] = "matched"

    # -- options ---------------------------------------------------------------------------
    def score_covariates(self) -> tuple[str, ...]:
        """The score covariates (``covariates``, or ``controls`` when empty)."""
        return tuple(self.covariates) or tuple(self.controls)

    def _check(self) -> tuple[str, int | None]:
        self.check_matching()
        check_choice("inference", self.inference, PSM_INFERENCE)
        check_choice("boot_ci", self.boot_ci, BOOT_CI)
        cluster = self.cluster if self.se == "cluster" else None
        check_inference_options(self.se, self.ssc, self.dist, cluster, self.alpha)
        if not self.score_covariates():
            raise OptionError(
                "PSM-DID needs covariates for the propensity score: set covariates=(...) "
                "(controls are used when covariates is empty)"
            )
        if isinstance(self.n_boot, bool) or not isinstance(self.n_boot, (int, np.integer)) or self.n_boot < 2:
            raise OptionError(f"n_boot={self.n_boot!r} must be an integer >= 2")
        controls = tuple(self.controls)
        if D in controls or self.outcome in controls:
            raise OptionError(f"controls {list(controls)} must not include {D!r} or the outcome")
        return parse_baseline(self.baseline, row_level=True)

    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True value of the headline on a simulated panel: the ATT over treated cells
        (``mean te_<outcome>`` over rows with ``d == 1``, as :meth:`TWFE.estimand`)."""
        te = panel[f"te_{self.outcome}"].to_numpy()
        d = panel[D].to_numpy() == 1
        return {"ATT": float(te[d].mean())}

    # -- matching ----------------------------------------------------------------------------
    def _prepare(self, panel: pd.DataFrame) -> tuple[_PanelData, _Subjects]:
        kind, year = self._check()
        covs = self.score_covariates()
        extra = [c for c in tuple(self.controls) if c not in covs]
        data = _panel_data(panel, self.outcome, (*covs, *extra))
        return data, _subjects(data, covs, kind, year)

    def _match_prepared(self, data: _PanelData, subj: _Subjects,
                        rng: np.random.Generator | None) -> MatchResult:
        if self.needs_rng() and rng is None:
            raise OptionError("ties='random' or order='random' needs a generator: fit(panel, rng=...)")
        covs = self.score_covariates()
        score, on, weights, m = _match_subjects(self, subj, covs, data.years, rng)
        bal = balance_table(np.column_stack([score, subj.x]), ["pscore", *covs], subj.treated, weights)
        diag = _matching_diagnostics(subj.treated, on, weights, bal, subj.n_no_baseline)
        ids = data.unit_ids[subj.units]
        table = {UNIT: ids}
        if subj.level == "unit-year":
            table[TIME] = data.arrays[TIME][subj.rows].astype(int)
            row_w = weights
        else:
            unit_w = np.zeros(data.unit_ids.size)
            unit_w[subj.units] = weights
            row_w = unit_w[data.unit]
        table.update({COHORT: data.unit_cohort[subj.units].astype(int), "treated": subj.treated,
                      "score": score, "on_support": on, "matched": weights > 0, "weight": weights})
        pairs = {"treated": ids[m.pairs_treated], "control": ids[m.pairs_control]}
        if subj.level == "unit-year":
            pairs[TIME] = table[TIME][m.pairs_treated]
            pairs["control_time"] = table[TIME][m.pairs_control]
        pairs["weight"] = m.pairs_weight
        return MatchResult(pd.DataFrame(table), pd.DataFrame(pairs), bal, diag, subj.level, row_w)

    def match(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> MatchResult:
        """Score and match without estimating: per-subject scores and weights, the pairs,
        the balance table and the diagnostics (for tables and figures)."""
        data, subj = self._prepare(panel)
        return self._match_prepared(data, subj, rng)

    def matched_estimand(self, panel: pd.DataFrame, rng: np.random.Generator | None = None
                         ) -> dict[str, float]:
        """True ATT of the treated subjects that matching keeps, on a simulated panel.

        ``mean te_<outcome>`` over the ``d == 1`` rows of matched treated units (or
        unit-years): the estimand of both routes once trimming has dropped the treated
        units off support or out of reach. It differs from :meth:`estimand` when effects
        vary with the score (the Monte Carlo test shows the gap).
        """
        data, subj = self._prepare(panel)
        mr = self._match_prepared(data, subj, rng)
        te = panel[f"te_{self.outcome}"].to_numpy()
        d = panel[D].to_numpy() == 1
        treated_rows = data.unit_cohort[data.unit] > 0
        sel = d & treated_rows & (mr.row_weights > 0)
        return {"ATT": float(te[sel].mean()) if sel.any() else float("nan")}

    # -- estimation ------------------------------------------------------------------------------
    def _twfe(self, weights: str | None) -> TWFE:
        return TWFE(self.outcome, controls=tuple(self.controls), cluster=self.cluster, se=self.se,
                    ssc=self.ssc, dist=self.dist, alpha=self.alpha, weights=weights)

    def _did(self, panel: pd.DataFrame, row_weights: np.ndarray) -> Estimate:
        """The DID step on the matched sample (route a) or with the weights (route b)."""
        if self.route == "weighted":
            if WEIGHT_COLUMN in panel.columns:
                raise OptionError(f"the panel already has a column {WEIGHT_COLUMN!r}; rename it")
            return self._twfe(WEIGHT_COLUMN).fit(panel.assign(**{WEIGHT_COLUMN: row_weights}))
        return self._twfe(None).fit(panel.loc[row_weights > 0])

    def _point(self, data: _PanelData, subj: _Subjects,
               rng: np.random.Generator | None) -> tuple[MatchResult, Estimate]:
        mr = self._match_prepared(data, subj, rng)
        diag = mr.diagnostics
        if diag["n_matched_treated"] < 1 or diag["n_matched_controls"] < 1:
            raise _no_match_error(diag, self)
        return mr, self._did(data.panel, mr.row_weights)

    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Match, then estimate the ATT by DID (see the class docstring)."""
        data, subj = self._prepare(panel)
        if self.inference == "bootstrap" and rng is None:
            raise OptionError(
                "inference='bootstrap' needs a generator: fit(panel, rng=np.random.default_rng(...))"
            )
        mr, est = self._point(data, subj, rng)
        diagnostics = {**mr.diagnostics, **est.diagnostics}  # the final regression's R-squared
        notes = list(est.notes)
        route = ("DID re-estimated on the matched sample, unweighted (seed 002 Table 5 route)"
                 if self.route == "matched" else "weighted DID, matching weights carried over all years")
        notes.append(f"matched {mr.level}s: {self.describe_matching()}; "
                     f"score covariates {list(self.score_covariates())} at baseline={self.baseline!r}; {route}")
        if subj.n_no_baseline:
            notes.append(f"{subj.n_no_baseline} unit(s) have no baseline observation and were not matched")
        std_error, pv, lo, hi = est.std_error, est.p_value, est.conf_low, est.conf_high
        inference = f"{est.inference}; score and matching treated as fixed"
        if self.inference == "bootstrap":
            draws = self.bootstrap(panel, rng, _prepared=(data, subj))
            std_error, pv, lo, hi, n_failed = _boot_summary(est.estimate, draws, self.alpha, self.boot_ci)
            diagnostics.update(n_boot=float(self.n_boot), n_boot_failed=float(n_failed),
                               cluster_se=est.std_error)
            inference = (f"bootstrap ({self.n_boot} resamples of units"
                         f"{', within treated and controls' if self.stratify else ''}; score and "
                         f"matching re-estimated), {self.boot_ci} interval")
            if n_failed:
                notes.append(f"{n_failed} of {self.n_boot} bootstrap draws failed (no overlap or no "
                             "match) and were left out")
        terms = _psm_terms(est.terms, mr.balance)
        return replace(est, estimator=self.label, std_error=std_error, p_value=pv, conf_low=lo,
                       conf_high=hi, inference=inference, terms=terms, diagnostics=diagnostics,
                       notes=tuple(notes))

    # -- bootstrap --------------------------------------------------------------------------------
    def bootstrap(self, panel: pd.DataFrame, rng: np.random.Generator,
                  _prepared: tuple[_PanelData, _Subjects] | None = None) -> np.ndarray:
        """``n_boot`` bootstrap estimates (NaN where a draw failed).

        Each draw resamples units with replacement (within treated and never-treated units
        when ``stratify``), renumbers the copies as distinct units, and re-runs the score,
        the support rule, the matching and the DID. Draw indices come first from ``rng``,
        then any randomness the matching needs, so the fast and the generic paths consume
        the generator identically.
        """
        if rng is None:
            raise OptionError("the bootstrap needs a generator: rng=np.random.default_rng(...)")
        data, subj = _prepared if _prepared is not None else self._prepare(panel)
        treated_unit = data.unit_cohort > 0
        draws_idx = draw_units(treated_unit.astype(int), self.n_boot, rng, self.stratify)
        if self.fast and subj.level == "unit" and data.balanced and subj.n_no_baseline == 0:
            return self._bootstrap_fast(data, subj, draws_idx, rng)
        columns = list(dict.fromkeys([UNIT, TIME, COHORT, D, self.outcome, *self.score_covariates(),
                                      *self.controls]
                                     + ([self.cluster] if self.cluster and self.cluster != UNIT else [])))
        out = np.full(self.n_boot, np.nan)
        for b, draw in enumerate(draws_idx):
            sample = _resample_panel(panel, data.unit, columns, draw)
            try:
                d2, s2 = self._prepare(sample)
                out[b] = self._point(d2, s2, rng)[1].estimate
            except (EstimationError, PanelError, np.linalg.LinAlgError):
                continue
        return out

    def _bootstrap_fast(self, data: _PanelData, subj: _Subjects, draws_idx: np.ndarray,
                        rng: np.random.Generator) -> np.ndarray:
        n_units, n_periods = data.unit_ids.size, data.years.size
        order = np.lexsort((data.time, data.unit))
        y = data.arrays[self.outcome][order].reshape(n_units, n_periods)
        d = data.arrays[D][order].reshape(n_units, n_periods)
        ctrl = tuple(self.controls)
        c = (np.stack([data.arrays[k][order] for k in ctrl], axis=1).reshape(n_units, n_periods, -1)
             if ctrl else None)
        x = np.empty((n_units, subj.x.shape[1]))
        x[subj.units] = subj.x
        treated = data.unit_cohort > 0
        names = self.score_covariates()
        out = np.full(self.n_boot, np.nan)
        for b, idx in enumerate(draws_idx):
            try:
                um = self.match_units(x[idx], treated[idx], names, rng)
                w = um.weights
                keep = w > 0
                if not (keep & treated[idx]).any() or not (keep & ~treated[idx]).any():
                    continue
                sel = idx[keep]
                out[b] = did_coefficient(y[sel], d[sel], None if c is None else c[sel],
                                         w[keep] if self.route == "weighted" else None)
            except (EstimationError, np.linalg.LinAlgError):
                continue
        return out


@dataclass(frozen=True)
class PSMDIDWeighted(PSMDID):
    """PSM-DID with the matching weights carried over all years (route b).

    The same score and matching as :class:`PSMDID`; the DID is the weighted two-way
    fixed-effects regression with each subject's ATT weight (treated 1, control
    ``sum_i w_ij``) in every period. With common timing in a balanced panel it equals the
    kernel-matching DID ``mean_i [dY_i - sum_j w_ij dY_j]`` on pre/post means (Heckman,
    Ichimura and Todd 1997; Stata ``diff, kernel``). Not the route of seed 002's Table 5,
    which re-runs an unweighted DID on the matched sample (:class:`PSMDID`).

    Notes
    -----
    Model: weighted least squares of ``y_it = a_i + l_t + tau d_it + x_it'b + e_it`` with
    weights ``w_i``. Identification: parallel trends conditional on the score, no
    anticipation, overlap. Cluster-robust SEs use the weighted scores and treat the weights
    as fixed; the bootstrap re-estimates them.
    """

    label: str = "psm_did_weighted"

    route: ClassVar[str] = "weighted"


def _psm_terms(did_terms: pd.DataFrame, balance: pd.DataFrame) -> pd.DataFrame:
    """DID coefficients followed by one balance row per covariate (``term`` ``smd:<name>``,
    ``estimate`` = SMD after matching, inference columns NaN; ``kind`` tells them apart)."""
    n_c, n_b = len(did_terms), len(balance)
    nan_b = np.full(n_b, np.nan)
    cols: dict[str, Any] = {}
    for col in did_terms.columns:
        top = did_terms[col].to_numpy()
        if col == "term":
            bottom = np.array([f"smd:{c}" for c in balance["covariate"]], dtype=object)
        elif col == "estimate":
            bottom = balance["smd_after"].to_numpy(float)
        elif top.dtype.kind == "f":
            bottom = nan_b
        else:
            bottom = np.full(n_b, None, dtype=object)
        cols[col] = np.concatenate([top.astype(object) if bottom.dtype == object else top, bottom])
    cols["kind"] = np.array(["coefficient"] * n_c + ["balance"] * n_b, dtype=object)
    for col in ("smd_before", "smd_after", "vr_before", "vr_after", "mean_treated",
                "mean_control", "mean_treated_after", "mean_control_after"):
        cols[col] = np.concatenate([np.full(n_c, np.nan), balance[col].to_numpy(float)])
    return pd.DataFrame(cols, copy=False)


# --- doubly robust DID ----------------------------------------------------------------------------

def drdid_panel(dy: np.ndarray, treated: np.ndarray, x: np.ndarray | None = None,
                trim_level: float = 0.995) -> tuple[float, np.ndarray]:
    """Sant'Anna and Zhao's (2020) locally efficient doubly robust DID for panel data.

    Parameters
    ----------
    dy
        ``Y_post - Y_pre`` of each unit.
    treated
        Treatment group of each unit.
    x
        ``(n, k)`` pre-treatment covariates (a constant is added), or None.
    trim_level
        Controls with a propensity score at or above this level get no weight (R DRDID).

    Returns
    -------
    att, influence
        The ATT and its influence function (one value per unit), so that
        ``std(influence, ddof=1) / sqrt(n)`` is the standard error.

    Notes
    -----
    With ``p(x)`` a logit score and ``m(x)`` the least-squares regression of ``dY`` on
    ``x`` among controls,

    ``ATT = E[D (dY - m(X))] / E[D] - E[w0 (dY - m(X))] / E[w0]``,
    ``w0 = p(X)(1 - D) / (1 - p(X))``,

    consistent if either the score or the outcome model is right (conditional parallel
    trends, overlap). The influence function adds the estimation effect of both nuisance
    models, line by line as R ``DRDID::drdid_panel`` (version 1.x), whose Python port a test
    pins this function to. Scores are capped at ``1 - 1e-6``.
    """
    dy = np.asarray(dy, dtype=float)
    d = np.asarray(treated, dtype=float)
    n = dy.size
    xk = np.empty((n, 0)) if x is None else np.asarray(x, dtype=float).reshape(n, -1)
    fit = fit_binary(d, xk, "logit")
    ps = np.minimum(fit.fitted, 1 - PS_CAP)
    keep = np.where(d == 1, True, ps < trim_level)
    X = np.column_stack([np.ones(n), xk])
    ctrl = d == 0
    xc = X[ctrl]
    gram_c = xc.T @ xc
    try:
        beta = np.linalg.solve(gram_c, xc.T @ dy[ctrl])
    except np.linalg.LinAlgError as exc:
        raise EstimationError("the outcome regression among controls is singular: "
                              "drop collinear covariates") from exc
    out = X @ beta
    w_t = keep * d
    w_c = keep * ps * (1 - d) / (1 - ps)
    if not (w_t.mean() > 0 and w_c.mean() > 0):
        raise EstimationError("no treated unit or no control weight left after trimming")
    res = dy - out
    dr_t = w_t * res
    dr_c = w_c * res
    eta_t = dr_t.mean() / w_t.mean()
    eta_c = dr_c.mean() / w_c.mean()
    att = eta_t - eta_c
    # estimation effect of the outcome regression (OLS on controls)
    xpx_inv = np.linalg.inv((X * ctrl[:, None]).T @ X / n)
    lin_ols = (ctrl * res)[:, None] * X @ xpx_inv
    # estimation effect of the logit score (information rebuilt from the capped scores)
    info = (X * (ps * (1 - ps))[:, None]).T @ X
    lin_ps = ((d - ps)[:, None] * X) @ (np.linalg.inv(info) * n)
    inf_t = (dr_t - w_t * eta_t - lin_ols @ (w_t[:, None] * X).mean(axis=0)) / w_t.mean()
    m2 = ((w_c * (res - eta_c))[:, None] * X).mean(axis=0)
    m3 = (w_c[:, None] * X).mean(axis=0)
    inf_c = (dr_c - w_c * eta_c + lin_ps @ m2 - lin_ols @ m3) / w_c.mean()
    return float(att), inf_t - inf_c


@dataclass(frozen=True)
class DRDID:
    """Doubly robust DID (Sant'Anna and Zhao 2020), panel, pre/post-averaged.

    For each treatment cohort ``g`` the 2x2 compares its units with the never-treated:
    ``dY_i`` is the unit's mean outcome over periods ``>= g`` minus its mean over periods
    ``< g``; covariates are measured at the baseline; :func:`drdid_panel` gives ``ATT_g``
    and its influence function. Several cohorts are averaged with weights proportional to
    their treated unit-periods (``d == 1`` rows), which is the estimand of
    :meth:`estimand`.

    Parameters
    ----------
    outcome
        Outcome column.
    controls
        Covariates of both the logit score and the outcome regression, measured at
        ``baseline``; empty gives the unconditional DID of means.
    baseline
        ``"mean"`` (default: means over the periods before the first cohort) or a
        pre-period year (``2010`` / ``"year:2010"``).
    trim_level
        Controls with a score at or above it get no weight (R DRDID's 0.995).
    inference
        ``"influence"`` (default: ``sd(IF) / sqrt(n)``, normal law, as R DRDID) or
        ``"bootstrap"`` (resample units, refit everything; needs ``rng``).
    n_boot, boot_ci, stratify
        As :class:`PSMDID`.
    alpha
        Significance level.
    label
        Name in outputs.

    Notes
    -----
    ``ATT_g = E[D (dY - m(X))]/E[D] - E[w0 (dY - m(X))]/E[w0]`` with
    ``w0 = p(X)(1-D)/(1-p(X))``. Identification: parallel trends of the (pre/post averaged)
    untreated outcome conditional on the baseline covariates, no anticipation, overlap;
    consistency needs only one of the score and the outcome regression to be correct. With
    no covariates it equals the DID of means (a test checks it). With several cohorts the
    influence functions are combined as ``IF_i = sum_g w_g (N / n_g) IF_gi`` with the
    cohort weights treated as fixed (Callaway and Sant'Anna 2021 add a term for their
    estimation).
    """

    outcome: str
    controls: Sequence[str] = ()
    baseline: Any = "mean"
    trim_level: float = 0.995
    inference: str = "influence"
    n_boot: int = 499
    boot_ci: str = "normal"
    stratify: bool = True
    alpha: float = 0.05
    label: str = "dr_did"

    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True ATT over treated cells (``mean te_<outcome>`` over ``d == 1`` rows)."""
        te = panel[f"te_{self.outcome}"].to_numpy()
        d = panel[D].to_numpy() == 1
        return {"ATT": float(te[d].mean())}

    def _check(self) -> tuple[str, int | None]:
        check_choice("inference", self.inference, DR_INFERENCE)
        check_choice("boot_ci", self.boot_ci, BOOT_CI)
        if not 0 < self.alpha < 1:
            raise OptionError(f"alpha={self.alpha!r} must lie strictly between 0 and 1")
        if not 0 < self.trim_level <= 1:
            raise OptionError(f"trim_level={self.trim_level!r} must lie in (0, 1]")
        if isinstance(self.n_boot, bool) or not isinstance(self.n_boot, (int, np.integer)) or self.n_boot < 2:
            raise OptionError(f"n_boot={self.n_boot!r} must be an integer >= 2")
        if self.outcome in tuple(self.controls) or D in tuple(self.controls):
            raise OptionError(f"controls {list(self.controls)} must not include {D!r} or the outcome")
        return parse_baseline(self.baseline, row_level=False)

    def _unit_arrays(self, panel: pd.DataFrame) -> dict[str, Any]:
        """Per-unit cohort, baseline covariates, and ``dY`` for every cohort's split."""
        kind, year = self._check()
        ctrl = tuple(self.controls)
        data = _panel_data(panel, self.outcome, ctrl)
        n_units = data.unit_ids.size
        if ctrl:
            subj = _subjects(data, ctrl, kind, year)
            x = np.full((n_units, len(ctrl)), np.nan)
            x[subj.units] = subj.x
        else:
            x = np.zeros((n_units, 0))
        y = data.arrays[self.outcome]
        t = data.arrays[TIME]
        cohorts = np.unique(data.unit_cohort[data.unit_cohort > 0]).astype(int)
        dy = np.full((n_units, cohorts.size), np.nan)
        n_cells = np.zeros(cohorts.size)
        for j, g in enumerate(cohorts):
            post = t >= g
            mean = []
            for part in (~post, post):
                cnt = np.bincount(data.unit[part], minlength=n_units)
                s = np.bincount(data.unit[part], weights=y[part], minlength=n_units)
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean.append(np.where(cnt > 0, s / np.maximum(cnt, 1), np.nan))
            dy[:, j] = mean[1] - mean[0]
            n_cells[j] = float(((data.arrays[D] == 1) & (data.unit_cohort[data.unit] == g)).sum())
        return {"data": data, "x": x, "dy": dy, "cohorts": cohorts, "n_cells": n_cells,
                "cohort": data.unit_cohort.astype(int)}

    @staticmethod
    def _estimate(cohort: np.ndarray, x: np.ndarray, dy: np.ndarray, cohorts: np.ndarray,
                  n_cells: np.ndarray, trim_level: float) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """ATT, overall IF (one per unit position), per-cohort ATTs and SEs, used mask."""
        n = cohort.size
        ok_x = np.isfinite(x).all(axis=1)
        used = np.zeros(n, dtype=bool)
        atts = np.full(cohorts.size, np.nan)
        ses = np.full(cohorts.size, np.nan)
        parts = []
        for j, g in enumerate(cohorts):
            sub = ((cohort == g) | (cohort == 0)) & ok_x & np.isfinite(dy[:, j])
            idx = np.flatnonzero(sub)
            if not (cohort[idx] == g).any() or not (cohort[idx] == 0).any():
                raise EstimationError(f"cohort {g}: no treated or no never-treated unit with "
                                      "pre- and post-period outcomes and a baseline")
            att, inf = drdid_panel(dy[idx, j], cohort[idx] == g, x[idx] if x.shape[1] else None,
                                   trim_level)
            atts[j] = att
            ses[j] = inf.std(ddof=1) / np.sqrt(idx.size)
            used[idx] = True
            parts.append((idx, inf))
        w = n_cells / n_cells.sum()
        n_used = int(used.sum())
        total = np.zeros(n)
        for (idx, inf), wj in zip(parts, w):
            total[idx] += wj * (n_used / idx.size) * inf
        return float(w @ atts), total[used], atts, ses, used

    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Estimate the ATT (see the class docstring)."""
        ua = self._unit_arrays(panel)
        if self.inference == "bootstrap" and rng is None:
            raise OptionError(
                "inference='bootstrap' needs a generator: fit(panel, rng=np.random.default_rng(...))"
            )
        cohort, x, dy, cohorts, n_cells = ua["cohort"], ua["x"], ua["dy"], ua["cohorts"], ua["n_cells"]
        att, inf, atts, ses, used = self._estimate(cohort, x, dy, cohorts, n_cells, self.trim_level)
        n_used = int(used.sum())
        se = float(inf.std(ddof=1) / np.sqrt(n_used))
        crit = critical_value(self.alpha, None)
        lo, hi, pv = att - crit * se, att + crit * se, float(p_value(att / se, None))
        inference = "influence function (Sant'Anna-Zhao 2020), normal"
        diagnostics: dict[str, float] = {}
        notes = [f"pre/post-averaged 2x2 per cohort against never-treated units; covariates "
                 f"{list(self.controls)} at baseline={self.baseline!r}"]
        if self.inference == "bootstrap":
            draws = self.bootstrap(panel, rng, _arrays=ua)
            se_b, pv, lo, hi, n_failed = _boot_summary(att, draws, self.alpha, self.boot_ci)
            diagnostics.update(n_boot=float(self.n_boot), n_boot_failed=float(n_failed),
                               influence_se=se)
            se = se_b
            if n_failed:
                notes.append(f"{n_failed} of {self.n_boot} bootstrap draws failed (separated score "
                             "or no control weight) and were left out")
            inference = (f"bootstrap ({self.n_boot} resamples of units"
                         f"{', within treated and controls' if self.stratify else ''}; "
                         f"score and outcome model re-estimated), {self.boot_ci} interval")
        # balance of the baseline covariates under the odds weights of one pooled score
        treated = cohort[used] > 0
        names = ["pscore", *self.controls]
        if self.controls:
            xs = x[used]
            fit = fit_binary(treated.astype(float), xs, "logit", tuple(self.controls))
            ps = np.minimum(fit.fitted, 1 - PS_CAP)
            w = np.where(treated, 1.0, np.where(ps < self.trim_level, ps / (1 - ps), 0.0))
            bal = balance_table(np.column_stack([ps, xs]), names, treated, w)
            smd = np.abs(bal["smd_after"].to_numpy(float)[1:])
            diagnostics.update(
                max_abs_smd_before=float(np.nanmax(np.abs(bal["smd_before"].to_numpy(float)[1:]))),
                max_abs_smd_after=float(np.nanmax(smd)),
                n_trimmed_controls=float((~treated & (ps >= self.trim_level)).sum()),
                max_score_controls=float(ps[~treated].max()),
                eff_n_controls=effective_n(w[~treated]),
            )
        else:
            bal = None
            diagnostics.update(eff_n_controls=float((~treated).sum()))
        diagnostics.update(n_treated=float(treated.sum()), n_controls=float((~treated).sum()))
        names_t = ["ATT"] + ([f"ATT(g={g})" for g in cohorts] if cohorts.size > 1 else [])
        est_t = np.concatenate([[att], atts]) if cohorts.size > 1 else np.array([att])
        se_t = np.concatenate([[se], ses]) if cohorts.size > 1 else np.array([se])
        terms = terms_frame(names_t, est_t, se_t, self.alpha, None,
                            kind=np.full(len(names_t), "coefficient"))
        if self.inference == "bootstrap":
            terms.loc[0, ["conf_low", "conf_high", "p_value"]] = [lo, hi, pv]
        if bal is not None:
            terms = _psm_terms(terms, bal)
        n_obs = int(np.isin(ua["data"].unit, np.flatnonzero(used)).sum())
        return Estimate(
            estimator=self.label, term="ATT", estimate=att, std_error=se, p_value=pv,
            conf_low=lo, conf_high=hi, alpha=self.alpha, n_obs=n_obs, n_units=n_used,
            n_clusters=n_used, inference=inference, terms=terms, diagnostics=diagnostics,
            notes=tuple(notes),
        )

    def bootstrap(self, panel: pd.DataFrame, rng: np.random.Generator,
                  _arrays: dict[str, Any] | None = None) -> np.ndarray:
        """``n_boot`` bootstrap ATTs from unit resamples (NaN where a draw failed)."""
        if rng is None:
            raise OptionError("the bootstrap needs a generator: rng=np.random.default_rng(...)")
        ua = _arrays if _arrays is not None else self._unit_arrays(panel)
        cohort, x, dy, cohorts = ua["cohort"], ua["x"], ua["dy"], ua["cohorts"]
        draws_idx = draw_units((cohort > 0).astype(int), self.n_boot, rng, self.stratify)
        # cohort weights follow the resampled units' treated cells
        cells_per_unit = np.zeros(cohort.size)
        data = ua["data"]
        np.add.at(cells_per_unit, data.unit[data.arrays[D] == 1], 1.0)
        out = np.full(self.n_boot, np.nan)
        for b, idx in enumerate(draws_idx):
            cells = np.array([cells_per_unit[idx][cohort[idx] == g].sum() for g in cohorts])
            if not (cells > 0).all():
                continue
            try:
                out[b] = self._estimate(cohort[idx], x[idx], dy[idx], cohorts, cells,
                                        self.trim_level)[0]
            except (EstimationError, np.linalg.LinAlgError):
                continue
        return out


__all__ = [
    "BinaryFit", "DRDID", "KERNELS", "LINKS", "METHODS", "MatchOptions", "MatchResult",
    "Matching", "PSMDID", "PSMDIDWeighted", "UnitMatch", "att_from_weights", "balance_table",
    "common_support", "did_coefficient", "drdid_panel", "effective_n", "fit_binary",
    "kernel_function", "kernel_match", "nearest_neighbor_match", "parse_baseline",
]
