"""Two-way fixed-effects difference-in-differences.

The regression itself (:func:`~estimators.regression.fit_fe`) and the inference options
(:class:`~estimators.regression.InferenceOptions`) live in :mod:`estimators.regression`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import pandas as pd

from .design import fe_arrays
from .design import codes_of
from .panel import (treated_att, excluding_always_treated, COHORT, D, TIME, UNIT,
                    EstimationError, OptionError, PanelError)
from .regression import ALL_DIST, ALL_SE, InferenceOptions, fit_fe
from .result import Estimate

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

    The inference options ``cluster``, ``se``, ``ssc``, ``dist``, ``alpha`` and the wild
    bootstrap's and Ferman-Pinto's settings are keyword only
    (:class:`~estimators.regression.InferenceOptions`); TWFE offers every method there:
    CR2 with Bell-McCaffrey or Imbens-Kolesar degrees of freedom, the wild cluster
    bootstrap, Conley-Taber and Ferman-Pinto.

    Parameters
    ----------
    outcome
        Outcome column.
    controls
        Covariate columns (time-varying; ones the fixed effects absorb are reported as not
        identified).
    cluster, se, ssc, dist, alpha, wild_type, wild_weights, wild_draws, fp_size
        Inference, keyword only: see :class:`~estimators.regression.InferenceOptions`
        (cluster-robust by unit with Stata's small-sample convention and t(G-1) by
        default). ``dist="wild"`` draws from ``rng`` (unless it enumerates every sign
        vector); ``dist="conley_taber"`` / ``"ferman_pinto"`` report NaN as the standard
        error and their own interval and p-value.
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

    SE_CHOICES: ClassVar[tuple[str, ...]] = ALL_SE
    DIST_CHOICES: ClassVar[tuple[str, ...]] = ALL_DIST

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True value of the headline on a simulated panel: the ATT over treated cells."""
        return treated_att(panel, self.outcome)

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        self.check_inference(weights=self.weights)
        if self.dist in ("conley_taber", "ferman_pinto") and self.time_by is not None:
            raise OptionError(f"dist={self.dist!r} needs common period effects: time_by="
                              f"{self.time_by!r} is not supported with it")
        controls = tuple(self.controls)
        if D in controls or self.outcome in controls:
            raise OptionError(f"controls {list(controls)} must not include {D!r} or the outcome")

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Estimate the ATT on ``panel`` (see the class docstring); ``rng`` draws the wild
        bootstrap's weights (``dist="wild"``) and is not used otherwise."""
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
        w = np.zeros(len(res.identified))
        w[0] = 1.0
        size = self._group_sizes(panel) if self.dist == "ferman_pinto" else None
        inf = self.contrast_inference(res, w, rng=rng, size=size)
        if self.dist in ("wild", "conley_taber", "ferman_pinto"):
            # the treatment's row carries the headline's inference; other rows stay analytic
            row = terms.index[terms["term"] == D][0]
            terms.loc[row, ["std_error", "p_value", "conf_low", "conf_high"]] = (
                inf.std_error, inf.p_value, inf.conf_low, inf.conf_high)
            if np.isnan(inf.std_error):
                terms.loc[row, "statistic"] = np.nan
        notes = tuple(
            f"{n} not identified: {r}" for n, r in zip(res.names, res.fit.reasons) if r
        ) + inf.notes
        return Estimate(
            estimator=self.label,
            term="ATT",
            estimate=inf.estimate,
            std_error=inf.std_error,
            p_value=inf.p_value,
            conf_low=inf.conf_low,
            conf_high=inf.conf_high,
            alpha=self.alpha,
            n_obs=res.dof.n_obs,
            n_units=res.dof.n_units,
            n_clusters=res.dof.n_clusters,
            inference=inf.inference,
            terms=terms,
            diagnostics={"r2_within": res.r2_within, "r2": res.r2, **inf.diagnostics},
            notes=notes,
        )

    def _group_sizes(self, panel: pd.DataFrame) -> np.ndarray:
        """Ferman-Pinto's group size per unit code: the mean of ``fp_size`` in the unit."""
        col = self.fp_size
        if col not in panel.columns:
            raise PanelError(f"fp_size column {col!r} is not in the panel")
        unit, n_units = codes_of(panel[UNIT].to_numpy())
        values = panel[col].to_numpy(dtype=float)
        if not np.isfinite(values).all() or (values <= 0).any():
            raise PanelError(f"fp_size column {col!r} must be positive and finite")
        return np.bincount(unit, weights=values, minlength=n_units) / np.bincount(unit)
