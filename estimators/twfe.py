"""Two-way fixed-effects difference-in-differences."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .design import FEArrays, fe_arrays
from .fe import DIST_TYPES, SE_TYPES, SSC_TYPES, OLSFit, Dof, ols_fe, reference_df, vcov
from .panel import COHORT, D, TIME, UNIT, EstimationError, OptionError, check_choice
from .result import Estimate, critical_value, p_value, terms_frame

#: columns the study (seed 002, Table 4) puts beside unit and year effects; a two-way
#: fixed-effects model cannot identify them, and didlab says so instead of dropping them.
PAPER_TERMS = ("policy", "post")


def describe_inference(se: str, ssc: str, dist: str, cluster: str | None, df: float | None) -> str:
    """One line saying how SEs and p-values were computed."""
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


def add_paper_terms(panel: pd.DataFrame) -> dict[str, np.ndarray]:
    """The study's ``policy`` (pilot) and ``post`` (``time`` in the paper) dummies."""
    cohort = panel[COHORT].to_numpy()
    first = cohort[cohort > 0].min() if (cohort > 0).any() else np.inf
    return {
        "policy": (cohort > 0).astype(float),
        "post": (panel[TIME].to_numpy() >= first).astype(float),
    }


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
        return terms_frame(list(self.names), est, se, alpha, self.df,
                           identified=self.fit.keep, **extra)


def fit_fe(arrays: FEArrays, se: str, ssc: str, dist: str) -> FEResult:
    """Fit the two-way fixed-effects regression held in ``arrays``."""
    yt, xt = arrays.within()
    fit = ols_fe(yt, xt, arrays.x, arrays.weights, arrays.names)
    dof = arrays.dof(int(fit.keep.sum()))
    cov = vcov(fit, se, ssc, dof, arrays.clusters, arrays.weights)
    df = reference_df(se, dist, dof)
    w = arrays.weights
    tss = float(yt @ (yt if w is None else yt * w))
    rss = float(fit.resid @ (fit.resid if w is None else fit.resid * w))
    r2 = 1 - rss / tss if tss > 0 else float("nan")
    yc = arrays.y - (np.average(arrays.y, weights=w) if w is not None else arrays.y.mean())
    tss_total = float(yc @ (yc if w is None else yc * w))
    r2_full = 1 - rss / tss_total if tss_total > 0 else float("nan")
    return FEResult(arrays.names, fit, cov, dof, df, r2, r2_full)


@dataclass(frozen=True)
class TWFE:
    """Two-way fixed-effects DID: ``y_it = a_i + l_t + tau d_it + x_it'b + e_it``.

    Parameters
    ----------
    outcome
        Outcome column.
    controls
        Covariate columns (time-varying; ones the fixed effects absorb are reported as not
        identified).
    cluster
        Cluster column for ``se="cluster"`` (default the unit).
    se
        ``"cluster"`` (default), ``"robust"`` (heteroskedasticity-robust) or
        ``"conventional"``.
    ssc
        Small-sample convention: ``"stata"`` (xtreg fe / reghdfe, default), ``"full"``
        (areg / statsmodels with dummies), ``"linearmodels"`` (PanelOLS defaults) or
        ``"none"``. See :func:`estimators.fe.vcov`.
    dist
        Reference law for p-values and intervals: ``"t"`` (t(G-1) clustered, t(N-K)
        otherwise, as Stata) or ``"normal"`` (as linearmodels).
    alpha
        Significance level of the interval.
    paper_terms
        Also put the study's ``policy`` and ``post`` dummies beside the fixed effects, as
        seed 002's Table 4 does; both are reported as not identified.
    weights
        Optional column of observation weights (weighted DID after matching).
    time_by
        Column grouping units (e.g. region): period effects become group-by-period
        effects (region-by-year fixed effects).

    Notes
    -----
    Identification: parallel trends of the untreated outcome between treated and comparison
    units, and no anticipation. With staggered adoption and heterogeneous effects the
    coefficient is a weighted average of 2x2 comparisons, some with negative weights
    (Goodman-Bacon 2021); use the staggered estimators then.
    """

    outcome: str
    controls: Sequence[str] = ()
    cluster: str | None = UNIT
    se: str = "cluster"
    ssc: str = "stata"
    dist: str = "t"
    alpha: float = 0.05
    paper_terms: bool = False
    weights: str | None = None
    time_by: str | None = None
    label: str = "twfe"

    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True value of the headline on a simulated panel: the ATT over treated cells."""
        te = panel[f"te_{self.outcome}"].to_numpy()
        d = panel[D].to_numpy() == 1
        return {"ATT": float(te[d].mean())}

    def fit(self, panel: pd.DataFrame) -> Estimate:
        """Estimate the ATT on ``panel`` (see the class docstring)."""
        cluster = self.cluster if self.se == "cluster" else None
        check_inference_options(self.se, self.ssc, self.dist, cluster, self.alpha)
        controls = tuple(self.controls)
        if D in controls or self.outcome in controls:
            raise OptionError(f"controls {list(controls)} must not include {D!r} or the outcome")
        extra = add_paper_terms(panel) if self.paper_terms else None
        arrays = fe_arrays(panel, self.outcome, (D, *controls), cluster=cluster,
                           weights=self.weights, extra=extra, time_by=self.time_by)
        res = fit_fe(arrays, self.se, self.ssc, self.dist)
        if not res.fit.keep[0]:
            raise EstimationError(
                f"the treatment indicator {D!r} is {res.fit.reasons[0]}: no DID contrast"
            )
        terms = res.terms(self.alpha)
        est, se = float(res.fit.coef[0]), float(np.sqrt(res.cov[0, 0]))
        crit = critical_value(self.alpha, res.df)
        notes = tuple(
            f"{n} not identified: {r}" for n, r in zip(res.names, res.fit.reasons) if r
        )
        return Estimate(
            estimator=self.label,
            term="ATT",
            estimate=est,
            std_error=se,
            p_value=float(p_value(est / se, res.df)),
            conf_low=est - crit * se,
            conf_high=est + crit * se,
            alpha=self.alpha,
            n_obs=res.dof.n_obs,
            n_units=res.dof.n_units,
            n_clusters=res.dof.n_clusters,
            inference=describe_inference(self.se, self.ssc, self.dist, cluster, res.df),
            terms=terms,
            diagnostics={"r2_within": res.r2_within, "r2": res.r2},
            notes=notes,
        )
