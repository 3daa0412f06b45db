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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .design import FEArrays
from .fe import DIST_TYPES, SE_TYPES, SSC_TYPES, OLSFit, Dof, ols_fe, reference_df, vcov
from .panel import UNIT, EstimationError, OptionError, check_choice
from .result import terms_frame


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


@dataclass(frozen=True, kw_only=True)
class InferenceOptions:
    """How standard errors, p-values and intervals are computed (a keyword-only mixin).

    Parameters
    ----------
    cluster
        Cluster column for ``se="cluster"`` (default the unit); ignored otherwise.
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
    """

    cluster: str | None = UNIT
    se: str = "cluster"
    ssc: str = "stata"
    dist: str = "t"
    alpha: float = 0.05

    @property
    def cluster_column(self) -> str | None:
        """The cluster column when clustering (``se="cluster"``), else None."""
        return self.cluster if self.se == "cluster" else None

    def check_inference(self) -> None:
        """Validate the inference options (each error names the option and the choices);
        a cluster column is required only with ``se="cluster"``."""
        check_inference_options(self.se, self.ssc, self.dist, self.cluster_column, self.alpha)

    def describe_inference(self, df: float | None) -> str:
        """One line saying how SEs and p-values were computed (``df``: the reference t
        law's degrees of freedom, None for the normal)."""
        return describe_inference(self.se, self.ssc, self.dist, self.cluster_column, df)


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
    # an outcome the fixed effects explain exactly (a constant, or a unit- or
    # period-level variable) has nothing left to explain: any coefficient and p-value
    # would be rounding noise (-1.5e-31 with p = 0.01), so it is refused
    scale = float(np.max(np.abs(arrays.y))) if arrays.y.size else 0.0
    if not np.any(np.abs(yt) > 1e-10 * max(scale, 1e-300)):
        raise EstimationError("the outcome does not vary within units and periods: the fixed "
                              "effects explain it exactly, so no effect on it is identified")
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


__all__ = ["FEResult", "InferenceOptions", "check_inference_options", "describe_inference",
           "fit_fe"]
