"""The fixed-effects regression service the estimators share, and its inference options.

:func:`fit_fe` fits the two-way fixed-effects regression held in an
:class:`~estimators.design.FEArrays` (within transform, least squares and one covariance
convention, all from the kernels in :mod:`estimators.fe`) and returns an :class:`FEResult`:
every coefficient with its covariance, the counts of the small-sample rule and the
reference law. :class:`~estimators.twfe.TWFE`, the event studies, heterogeneity, mediation,
imputation and the permutation tests all fit through it.

:class:`InferenceOptions` holds the five inference fields those estimators share
(``cluster``, ``se``, ``ssc``, ``dist``, ``alpha``) as a keyword-only mixin, with their
validation (:meth:`~InferenceOptions.check_inference`) and the line that describes them in
outputs (:meth:`~InferenceOptions.describe_inference`).

Beyond the analytic cluster-robust t, the options offer the methods built for few
(treated) clusters (didlab issue #17): the bias-reduced CR2 variance with Bell-McCaffrey
(``dist="satterthwaite"``) or Imbens-Kolesar (``dist="ik"``) degrees of freedom
(:mod:`estimators.cr2`), the wild cluster bootstrap (``dist="wild"``,
:mod:`estimators.wild`) and Conley-Taber / Ferman-Pinto intervals (``dist="conley_taber"``,
``"ferman_pinto"``, :mod:`estimators.few_treated`). An estimator offers those its
``SE_CHOICES`` and ``DIST_CHOICES`` list (default: the analytic ones only) and computes
its headline with :meth:`InferenceOptions.contrast_inference`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Mapping

import numpy as np
import pandas as pd

from .cr2 import CR2, cr2
from .design import FEArrays
from .fe import (DIST_TYPES, SE_TYPES, SSC_TYPES, OLSFit, Dof, ols_fe, reference_df, vcov,
                 within_balanced, within_general)
from .few_treated import contrasts, few_treated_inference, law_of
from .panel import UNIT, EstimationError, OptionError, check_choice
from .result import critical_value, p_value, terms_frame
from .wild import WILD_TYPES, WILD_WEIGHTS, draw_weights, wild_bootstrap

#: every SE type the shared options know (an estimator lists those it offers in SE_CHOICES)
ALL_SE = (*SE_TYPES, "cr2")
#: degrees of freedom of CR2 (per contrast)
CR2_DISTS = ("satterthwaite", "ik")
#: few-treated-groups intervals (no standard error)
FEW_TREATED_DISTS = ("conley_taber", "ferman_pinto")
#: every reference law / p-value method the shared options know
ALL_DIST = (*DIST_TYPES, *CR2_DISTS, "wild", *FEW_TREATED_DISTS)
_DIST_NAMES = {"satterthwaite": "Bell-McCaffrey", "ik": "Imbens-Kolesar"}


def describe_inference(se: str, ssc: str, dist: str, cluster: str | None, df: float | None) -> str:
    """One line saying how SEs and p-values were computed."""
    if se == "cr2":
        kind = f"CR2({cluster})"
        law = "normal" if df is None else f"t({df:.4g})"
        if dist in CR2_DISTS:
            law = f"{_DIST_NAMES[dist]} t({df:.4g})"
        return f"{kind}, {law}"
    kind = f"cluster({cluster})" if se == "cluster" else se
    law = "normal" if df is None else f"t({df:g})"
    return f"{kind}, ssc={ssc}, {law}"


def check_inference_options(se: str, ssc: str, dist: str, cluster: str | None, alpha: float) -> None:
    check_choice("se", se, SE_TYPES)
    check_choice("ssc", ssc, SSC_TYPES)
    check_choice("dist", dist, DIST_TYPES)
    if se == "cluster" and not cluster:
        raise OptionError("se='cluster' needs a cluster column (cluster='unit' by default)")
    if not 0 < alpha < 1:
        raise OptionError(f"alpha={alpha!r} must lie strictly between 0 and 1")


@dataclass(frozen=True, kw_only=True)
class InferenceOptions:
    """How standard errors, p-values and intervals are computed (a keyword-only mixin).

    Parameters
    ----------
    cluster
        Cluster column for ``se="cluster"`` / ``"cr2"`` (default the unit); ignored
        otherwise.
    se
        ``"cluster"`` (default), ``"robust"`` (heteroskedasticity-robust),
        ``"conventional"``, or ``"cr2"`` (Bell-McCaffrey bias-reduced cluster-robust
        variance of the dummy-variable regression, as R clubSandwich ``vcovCR(type =
        "CR2")``; no small-sample factor; where the estimator offers it).
    ssc
        Small-sample convention: ``"stata"`` (xtreg fe / reghdfe, default), ``"full"``
        (areg / statsmodels with dummies), ``"linearmodels"`` (PanelOLS defaults) or
        ``"none"``. See :func:`estimators.fe.vcov`. Not used by ``se="cr2"``.
    dist
        How p-values and intervals are obtained: ``"t"`` (t(G-1) clustered, t(N-K)
        otherwise, as Stata) or ``"normal"`` (as linearmodels); where the estimator offers
        them, ``"satterthwaite"`` / ``"ik"`` (with ``se="cr2"``: t with Bell-McCaffrey or
        Imbens-Kolesar degrees of freedom, per coefficient), ``"wild"`` (wild cluster
        bootstrap-t with ``se="cluster"``, interval by test inversion, as Stata's
        ``boottest``), ``"conley_taber"`` or ``"ferman_pinto"`` (few treated groups:
        interval and p-value from the control groups' residuals; no standard error).
    alpha
        Significance level of the interval.
    wild_type
        ``dist="wild"``: ``"wcr"`` (null imposed, default, ``boottest``'s) or ``"wcu"``.
    wild_weights
        ``dist="wild"``: ``"rademacher"`` (default; every sign vector when
        ``2^G <= wild_draws``), ``"webb"`` (6-point, for few clusters) or ``"mammen"``.
    wild_draws
        ``dist="wild"``: bootstrap draws (default 9999).
    fp_size
        ``dist="ferman_pinto"``: column of group sizes (population, individuals per cell;
        its mean within each unit is the group's size ``M_j``, variance ``A + B/M_j``).
    """

    cluster: str | None = UNIT
    se: str = "cluster"
    ssc: str = "stata"
    dist: str = "t"
    alpha: float = 0.05
    wild_type: str = "wcr"
    wild_weights: str = "rademacher"
    wild_draws: int = 9999
    fp_size: str | None = None

    #: the SE types and p-value methods this estimator offers (subclasses extend them)
    SE_CHOICES: ClassVar[tuple[str, ...]] = SE_TYPES
    DIST_CHOICES: ClassVar[tuple[str, ...]] = DIST_TYPES

    @property
    def cluster_column(self) -> str | None:
        """The cluster column when clustering (``se="cluster"`` or ``"cr2"``), and for the
        few-treated methods (their groups), else None."""
        if self.se in ("cluster", "cr2") or self.dist in FEW_TREATED_DISTS:
            return self.cluster
        return None

    def uses_rng(self) -> bool:
        """Whether a fit draws random numbers: the wild bootstrap does (unless it enumerates
        every Rademacher sign vector, which depends on the number of clusters). The
        experiments ask this beside the catalogue's ``needs_rng``."""
        return self.dist == "wild"

    def check_inference(self, weights: str | None = None) -> None:
        """Validate the inference options (each error names the option and the choices);
        a cluster column is required only when clustering. ``weights``: the estimator's
        weights column, which the few-cluster methods do not support."""
        check_choice("se", self.se, self.SE_CHOICES)
        check_choice("dist", self.dist, self.DIST_CHOICES)
        se = "cluster" if self.se == "cr2" else self.se
        dist = "t" if self.dist not in DIST_TYPES else self.dist
        check_inference_options(se, self.ssc, dist, self.cluster_column, self.alpha)
        if self.dist in CR2_DISTS and self.se != "cr2":
            raise OptionError(f"dist={self.dist!r} (CR2 degrees of freedom) needs se='cr2', "
                              f"not se={self.se!r}")
        if self.dist == "wild":
            if self.se != "cluster":
                raise OptionError(f"dist='wild' bootstraps the cluster-robust t: it needs "
                                  f"se='cluster', not se={self.se!r}")
            check_choice("wild_type", self.wild_type, WILD_TYPES)
            check_choice("wild_weights", self.wild_weights, WILD_WEIGHTS)
            d = self.wild_draws
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 19:
                raise OptionError(f"wild_draws={d!r} must be an integer of at least 19")
        if self.dist in FEW_TREATED_DISTS:
            if self.cluster != UNIT:
                raise OptionError(f"dist={self.dist!r} treats the units as the groups: it needs "
                                  f"cluster='unit', not cluster={self.cluster!r}")
            if self.dist == "ferman_pinto" and not self.fp_size:
                raise OptionError("dist='ferman_pinto' needs fp_size, a column of group sizes "
                                  "(e.g. population)")
        special = self.se == "cr2" or self.dist in ("wild", *FEW_TREATED_DISTS)
        if weights is not None and special:
            raise OptionError(f"se={self.se!r}, dist={self.dist!r} are for unweighted "
                              f"regressions; weights={weights!r} needs se='cluster' with "
                              "dist='t' or 'normal'")

    def describe_inference(self, df: float | None) -> str:
        """One line saying how SEs and p-values were computed (``df``: the reference t
        law's degrees of freedom, None for the normal)."""
        return describe_inference(self.se, self.ssc, self.dist, self.cluster_column, df)

    def contrast_inference(self, res: FEResult, w: np.ndarray,
                           rng: np.random.Generator | None = None,
                           size: np.ndarray | None = None) -> ContrastInference:
        """Standard error, p-value (of ``w'beta = 0``) and interval of ``w'beta`` under
        these options.

        Parameters
        ----------
        res
            The fit (:func:`fit_fe`).
        w
            ``(k,)`` weights over the identified coefficients.
        rng
            Generator for the wild bootstrap's draws (not used otherwise).
        size
            ``(n_units,)`` group sizes for ``dist="ferman_pinto"``.
        """
        return contrast_inference(self, res, np.asarray(w, dtype=float), rng, size)


@dataclass(frozen=True)
class ContrastInference:
    """Inference on one linear combination of coefficients (a headline).

    ``std_error`` is the ``se`` option's standard error (for ``dist="wild"`` the
    cluster-robust SE whose t statistic is bootstrapped), NaN for the few-treated methods,
    which give an interval and a p-value but no standard error.
    """

    estimate: float
    std_error: float
    p_value: float
    conf_low: float
    conf_high: float
    df: float | None
    inference: str
    diagnostics: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FEResult:
    """A fitted fixed-effects regression: all coefficients with one covariance convention."""

    names: tuple[str, ...]            # every requested regressor
    fit: OLSFit
    cov: np.ndarray                   # over identified regressors
    dof: Dof
    df: float | None
    r2_within: float
    r2: float = float("nan")     # of the full dummy-variable regression (what papers print)
    #: per identified coefficient: degrees of freedom of its t law where they differ by
    #: coefficient (CR2 with dist="satterthwaite" / "ik"), else None (``df`` for all)
    term_df: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: the arrays of the fit and the CR2 pieces, for the few-cluster methods
    arrays: FEArrays | None = field(default=None, repr=False, compare=False)
    cr2: CR2 | None = field(default=None, repr=False, compare=False)

    @property
    def identified(self) -> tuple[str, ...]:
        return tuple(n for n, k in zip(self.names, self.fit.keep) if k)

    def index(self, name: str) -> int:
        ids = self.identified
        if name not in ids:
            raise EstimationError(f"regressor {name!r} is not identified in this fit")
        return ids.index(name)

    def terms(self, alpha: float, **extra: object) -> pd.DataFrame:
        """Tidy terms of every requested regressor (NaN where not identified)."""
        est = np.full(len(self.names), np.nan)
        se = np.full(len(self.names), np.nan)
        est[self.fit.keep] = self.fit.coef
        se[self.fit.keep] = np.sqrt(np.diag(self.cov))
        if any(self.fit.reasons):  # say why, where something is not identified
            extra = {"note": np.array(self.fit.reasons, dtype=object), **extra}
        frame = terms_frame(list(self.names), est, se, alpha, self.df,
                            identified=self.fit.keep, **extra)
        if self.term_df is not None:  # a t law per coefficient (CR2 degrees of freedom)
            df = np.full(len(self.names), np.nan)
            df[self.fit.keep] = self.term_df
            crit = np.array([critical_value(alpha, v) if np.isfinite(v) else np.nan for v in df])
            frame["p_value"] = [float(p_value(t, v)) if np.isfinite(v) else np.nan
                                for t, v in zip(frame["statistic"], df)]
            frame["conf_low"] = est - crit * se
            frame["conf_high"] = est + crit * se
            frame["df"] = df
        return frame

    def within(self, z: np.ndarray) -> np.ndarray:
        """The fixed-effects residual maker applied to ``z`` ``(N, m)``, rows as the fit's."""
        a = self.arrays
        if a is None:  # pragma: no cover - fit_fe always stores them
            raise EstimationError("this fit carries no arrays")
        if a.balanced and a.weights is None:
            return within_balanced(z, a.n_units, a.n_periods)
        return within_general(z, a.unit, a.time, a.n_units, a.n_periods, a.weights)


def fit_fe(arrays: FEArrays, se: str, ssc: str, dist: str) -> FEResult:
    """Fit the two-way fixed-effects regression held in ``arrays``."""
    yt, xt = arrays.within()
    # an outcome the fixed effects explain exactly (a constant, or a unit- or
    # period-level variable) has nothing left to explain: any coefficient and p-value
    # would be rounding noise (-1.5e-31 with p = 0.01), so it is refused
    scale = float(np.max(np.abs(arrays.y))) if arrays.y.size else 0.0
    if not np.any(np.abs(yt) > 1e-10 * max(scale, 1e-300)):
        raise EstimationError("the outcome does not vary within units and periods: the fixed "
                              "effects explain it exactly, so no effect on it is identified")
    fit = ols_fe(yt, xt, arrays.x, arrays.weights, arrays.names)
    dof = arrays.dof(int(fit.keep.sum()))
    pieces, term_df = None, None
    if se == "cr2":
        if arrays.clusters is None:
            raise EstimationError("se='cr2' needs a cluster column")
        if arrays.weights is not None:
            raise EstimationError("se='cr2' is implemented for unweighted regressions only")
        pieces = cr2(fit.x, fit.resid, fit.bread, arrays.clusters, arrays.n_clusters,
                     lambda z: _within(arrays, z))
        cov = pieces.vcov()
        df = reference_df("cluster", dist if dist in DIST_TYPES else "t", dof)
        if dist in CR2_DISTS:
            eye = np.eye(cov.shape[0])
            rule = pieces.df_bm if dist == "satterthwaite" else pieces.df_ik
            term_df = np.array([rule(eye[j]) for j in range(cov.shape[0])])
    else:
        cov = vcov(fit, se, ssc, dof, arrays.clusters, arrays.weights)
        # the bootstrap and few-treated methods report the analytic t beside their own
        df = reference_df(se, dist if dist in DIST_TYPES else "t", dof)
    w = arrays.weights
    tss = float(yt @ (yt if w is None else yt * w))
    rss = float(fit.resid @ (fit.resid if w is None else fit.resid * w))
    r2 = 1 - rss / tss if tss > 0 else float("nan")
    yc = arrays.y - (np.average(arrays.y, weights=w) if w is not None else arrays.y.mean())
    tss_total = float(yc @ (yc if w is None else yc * w))
    r2_full = 1 - rss / tss_total if tss_total > 0 else float("nan")
    return FEResult(arrays.names, fit, cov, dof, df, r2, r2_full, term_df, arrays, pieces)


def _within(arrays: FEArrays, z: np.ndarray) -> np.ndarray:
    if arrays.balanced and arrays.weights is None:
        return within_balanced(z, arrays.n_units, arrays.n_periods)
    return within_general(z, arrays.unit, arrays.time, arrays.n_units, arrays.n_periods,
                          arrays.weights)


def contrast_inference(opts: InferenceOptions, res: FEResult, w: np.ndarray,
                       rng: np.random.Generator | None = None,
                       size: np.ndarray | None = None) -> ContrastInference:
    """See :meth:`InferenceOptions.contrast_inference`."""
    est = float(w @ res.fit.coef)
    se = float(np.sqrt(w @ res.cov @ w))
    alpha = opts.alpha
    dist = opts.dist
    if dist in DIST_TYPES or dist in CR2_DISTS:
        df = res.df
        if dist in CR2_DISTS:
            assert res.cr2 is not None
            df = res.cr2.df_bm(w) if dist == "satterthwaite" else res.cr2.df_ik(w)
        crit = critical_value(alpha, df)
        p = float(p_value(est / se, df)) if se > 0 else float("nan")
        return ContrastInference(est, se, p, est - crit * se, est + crit * se, df,
                                 opts.describe_inference(df))
    arrays = res.arrays
    assert arrays is not None
    if arrays.weights is not None:
        raise EstimationError(f"dist={dist!r} is implemented for unweighted regressions only")
    if dist == "wild":
        return _wild(opts, res, w, est, se, rng)
    return _few_treated(opts, res, w, est, size)


def _wild(opts: InferenceOptions, res: FEResult, w: np.ndarray, est: float, se: float,
          rng: np.random.Generator | None) -> ContrastInference:
    arrays = res.arrays
    assert arrays is not None and arrays.clusters is not None
    g = arrays.n_clusters
    v = draw_weights(opts.wild_weights, g, opts.wild_draws, rng)
    boot = wild_bootstrap(res.fit.x, res.fit.resid, res.fit.bread, res.fit.coef, w,
                          arrays.clusters, g, res.within, v,
                          impose_null=opts.wild_type == "wcr")
    p = boot.p_value(0.0)
    lo, hi = boot.conf_int(opts.alpha)
    how = "every sign vector" if boot.enumerated else f"{boot.draws} draws"
    text = (f"wild cluster bootstrap-t ({opts.wild_type.upper()}, {opts.wild_weights}, "
            f"{how}) on cluster({opts.cluster}), {g} clusters; interval by test inversion")
    notes = ()
    if opts.wild_weights == "rademacher" and g <= 11 and not boot.enumerated:
        notes = (f"with {g} clusters Rademacher weights take only {2 ** g} distinct values: "
                 "Webb weights (wild_weights='webb') give a finer p-value",)
    return ContrastInference(est, se, p, lo, hi, None, text,
                             {"wild_draws": float(boot.draws),
                              "wild_enumerated": float(boot.enumerated)}, notes)


def _few_treated(opts: InferenceOptions, res: FEResult, w: np.ndarray, est: float,
                 size: np.ndarray | None) -> ContrastInference:
    arrays = res.arrays
    assert arrays is not None
    nonzero = np.nonzero(w)[0]
    ids = res.identified
    if nonzero.size != 1 or ids[nonzero[0]] != "d" or w[nonzero[0]] != 1.0:
        raise EstimationError(f"dist={opts.dist!r} tests the treatment coefficient d of a "
                              "two-way fixed-effects regression only")
    if opts.dist == "ferman_pinto" and size is None:
        raise EstimationError("dist='ferman_pinto' needs the group sizes (fp_size)")
    d = arrays.x[:, list(arrays.names).index("d")]
    con = contrasts(d, res.fit.resid, arrays.unit, arrays.time, arrays.n_units,
                    arrays.n_periods, size if opts.dist == "ferman_pinto" else None)
    law = law_of(con.values)
    n0 = len(np.unique(np.concatenate(con.controls)))
    out = few_treated_inference(est, law, opts.alpha, con.treated.size, n0)
    name = "Conley-Taber" if opts.dist == "conley_taber" else "Ferman-Pinto"
    text = (f"{name}: law of the estimate's error from {n0} control groups' residuals "
            f"({out.n_tuples:.3g} tuples for {out.n_treated} treated groups, "
            + ("exact)" if law.exact else f"convolved on a grid of step {law.step:.2g})"))
    if opts.dist == "ferman_pinto":
        text += f"; variance A + B/M by group size {opts.fp_size!r}"
    return ContrastInference(est, float("nan"), out.p_value, out.conf_low, out.conf_high,
                             None, text, {"n_treated_groups": float(out.n_treated),
                                          "n_control_groups": float(n0)},
                             ("std_error is NaN: this method gives an interval and a p-value, "
                              "not a standard error",))


__all__ = ["ALL_DIST", "ALL_SE", "ContrastInference", "FEResult", "InferenceOptions",
           "check_inference_options", "contrast_inference", "describe_inference", "fit_fe"]
