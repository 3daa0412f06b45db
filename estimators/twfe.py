"""Two-way fixed-effects difference-in-differences.

The regression itself (:func:`~estimators.regression.fit_fe`) and the inference options
(:class:`~estimators.regression.InferenceOptions`) live in :mod:`estimators.regression`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .design import fe_arrays
from .panel import treated_att, excluding_always_treated, COHORT, D, TIME, EstimationError, OptionError
from .regression import InferenceOptions, fit_fe
from .result import Estimate, critical_value, p_value

#: columns the study (seed 002, Table 4) puts beside unit and year effects; a two-way
#: fixed-effects model cannot identify them, and didlab says so instead of dropping them.
PAPER_TERMS = ("policy", "post")


def add_paper_terms(panel: pd.DataFrame) -> dict[str, np.ndarray]:
    """The study's ``policy`` (pilot) and ``post`` (``time`` in the paper) dummies."""
    cohort = panel[COHORT].to_numpy()
    first = cohort[cohort > 0].min() if (cohort > 0).any() else np.inf
    return {
        "policy": (cohort > 0).astype(float),
        "post": (panel[TIME].to_numpy() >= first).astype(float),
    }


@dataclass(frozen=True)
class TWFE(InferenceOptions):
    """Two-way fixed-effects DID: ``y_it = a_i + l_t + tau d_it + x_it'b + e_it``.

    The inference options ``cluster``, ``se``, ``ssc``, ``dist`` and ``alpha`` are keyword
    only (:class:`~estimators.regression.InferenceOptions`).

    Parameters
    ----------
    outcome
        Outcome column.
    controls
        Covariate columns (time-varying; ones the fixed effects absorb are reported as not
        identified).
    cluster, se, ssc, dist, alpha
        Inference, keyword only: see :class:`~estimators.regression.InferenceOptions`
        (cluster-robust by unit with Stata's small-sample convention and t(G-1) by
        default).
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
    paper_terms: bool = False
    weights: str | None = None
    time_by: str | None = None
    label: str = "twfe"

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True value of the headline on a simulated panel: the ATT over treated cells."""
        return treated_att(panel, self.outcome)

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        self.check_inference()
        controls = tuple(self.controls)
        if D in controls or self.outcome in controls:
            raise OptionError(f"controls {list(controls)} must not include {D!r} or the outcome")

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Estimate the ATT on ``panel`` (see the class docstring); ``rng`` is not used."""
        self.check()
        cluster = self.cluster_column
        controls = tuple(self.controls)
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
            inference=self.describe_inference(res.df),
            terms=terms,
            diagnostics={"r2_within": res.r2_within, "r2": res.r2},
            notes=notes,
        )
