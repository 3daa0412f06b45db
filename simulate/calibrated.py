"""A generic panel simulator whose parameters are fitted to a user's panel.

``experiments.calibrate`` estimates these parameters from a real panel and saves them;
``draw_calibrated`` then draws panels that look like it -- same units per treated cohort,
same years, same year-effect path, same persistence and scale of the outcome and the
covariates, same covariate gaps between treated and untreated units -- with a known
injected effect, so that estimators can be judged on data like the user's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np
import pandas as pd

from estimators.panel import COHORT, D, TIME, UNIT, OptionError, treatment_from_cohort

from .design import Assignment, DesignSupport, Effect, Timing, assign_cohorts, validate_design
from .province import _ar1


@dataclass
class CalibratedDGP:
    """Parameters fitted to a panel (every field is estimated by experiments.calibrate).

    ``covariates`` maps each covariate to ``{"mean_treated", "mean_control", "sd_treated",
    "sd_control", "trend", "rho", "sigma"}``: unit-level means and SDs by group, a common
    linear trend per year, and the AR(1) persistence and stationary SD of its within-unit
    deviations. ``beta`` are the outcome's coefficients on the covariates.
    """

    outcome: str = "y"
    first_year: int = 2000
    last_year: int = 2018
    n_units: int = 30
    cohort_sizes: Dict[str, int] = field(default_factory=lambda: {"2011": 6})
    unit_sd: float = 0.3              # SD of unit effects in the outcome (beyond covariates)
    year_effects: List[float] = field(default_factory=list)  # estimated year-effect path
    rho: float = 0.5                  # AR(1) persistence of the outcome's error
    sigma: float = 0.05               # stationary SD of the outcome's error
    treated_shift: float = 0.0        # mean unit-effect gap of treated units (level, not trend)
    beta: Dict[str, float] = field(default_factory=dict)
    # unit effects load on the units' covariate means (as in the data: rich provinces have
    # lower effects net of GDP, say); unit_sd is the SD of the remainder
    gamma: Dict[str, float] = field(default_factory=dict)
    covariates: Dict[str, Dict[str, float]] = field(default_factory=dict)
    selection: float = 0.0            # logit slope of treatment on the first covariate's
                                      # standardised unit mean (strength for "selected")

    @property
    def years(self) -> np.ndarray:
        return np.arange(self.first_year, self.last_year + 1)

    def validate(self) -> None:
        if self.last_year <= self.first_year:
            raise OptionError("data.last_year must exceed data.first_year")
        if not -1 < self.rho < 1:
            raise OptionError(f"data.rho={self.rho} must lie in (-1, 1)")
        if self.year_effects and len(self.year_effects) != self.years.size:
            raise OptionError(f"data.year_effects has {len(self.year_effects)} values for "
                              f"{self.years.size} years")
        n_treated = sum(int(v) for v in self.cohort_sizes.values())
        if not 0 < n_treated < self.n_units:
            raise OptionError(f"data.cohort_sizes treat {n_treated} of {self.n_units} units; "
                              "need at least one treated and one untreated unit")
        for name, par in self.covariates.items():
            missing = {"mean_treated", "mean_control", "sd_treated", "sd_control", "trend",
                       "rho", "sigma"} - set(par)
            if missing:
                raise OptionError(f"data.covariates.{name} lacks {sorted(missing)}")

    def design_support(self) -> DesignSupport:
        """The shared design knobs this panel reads (:func:`~simulate.design.validate_design`).

        Random and selected pilots keep the fitted cohort sizes, so ``assignment.n_pilots``
        is never read; the fitted cohorts are years without opening dates, so
        ``timing.open_rule`` has nothing to act on; the effect has no GDP or cohort gradient.
        """
        return DesignSupport("data=calibrated", self.n_units, {
            "assignment.n_pilots": "random and selected pilots keep the fitted cohort sizes "
                                   "(data.cohort_sizes)",
            "timing.open_rule": "the fitted cohorts are first treated years, not opening dates",
            "effect.het_pgdp": "the calibrated panel has no GDP gradient in the effect; "
                               "effect.het_sd varies it by unit",
            "effect.het_cohort": "effect.het_cohort is used by the city panel (data=city) only",
        })


def draw_calibrated(rng: np.random.Generator, dgp: CalibratedDGP,
                    assignment: Assignment | None = None, timing: Timing | None = None,
                    effect: Effect | None = None) -> pd.DataFrame:
    """Draw one panel from fitted parameters.

    The first units (as many as the file had treated units) carry the treated group's
    covariate profile; ``assignment.kind="actual"`` treats them with the file's cohorts,
    ``random`` gives the same cohort sizes to random units and ``selected`` draws them on
    the first covariate's unit mean. ``timing.kind="common"`` puts every treated unit at
    ``timing.year``; ``market_open`` (default here: the data's own dates) keeps the
    fitted cohorts (:func:`simulate.design.assign_cohorts`). Knobs the panel ignores
    (:meth:`CalibratedDGP.design_support`) raise :class:`~estimators.panel.OptionError` when
    set away from their defaults.
    """
    assignment = assignment or Assignment()
    timing = timing or Timing(kind="market_open")
    effect = effect or Effect()
    dgp.validate()
    validate_design(dgp, assignment, timing, effect)
    years = dgp.years
    n, t_n = dgp.n_units, years.size
    # the fitted first treated years, one per treated unit, in data.cohort_sizes' order
    cohorts = np.concatenate([np.full(int(k), int(g)) for g, k in sorted(dgp.cohort_sizes.items())])
    n_treated = cohorts.size
    profile = np.zeros(n, dtype=bool)
    profile[:n_treated] = True
    tau = (years - years.mean())[None, :]
    xs: dict[str, np.ndarray] = {}
    for name, par in dgp.covariates.items():
        mean = np.where(profile, par["mean_treated"], par["mean_control"])
        sd = np.where(profile, par["sd_treated"], par["sd_control"])
        a = mean + sd * rng.standard_normal(n)
        xs[name] = a[:, None] + par["trend"] * tau + _ar1(rng, (n, t_n), par["rho"], par["sigma"])
    # selected pilots are drawn on the first covariate's unit mean (none: uniformly)
    first = next(iter(xs.values()), None)
    score = first.mean(axis=1) if first is not None else np.zeros(n)
    cohort = assign_cohorts(assignment, timing, years, np.arange(n_treated), list(cohorts),
                            score, rng)
    lam = np.asarray(dgp.year_effects, dtype=float) if dgp.year_effects else np.zeros(t_n)
    alpha = dgp.unit_sd * rng.standard_normal(n) + dgp.treated_shift * profile
    for name, g in dgp.gamma.items():
        if name in xs:
            m = xs[name].mean(axis=1)
            alpha = alpha + g * (m - m.mean())
    xb = sum((dgp.beta.get(k, 0.0) * v for k, v in xs.items()), np.zeros((n, t_n)))
    u = _ar1(rng, (n, t_n), dgp.rho, dgp.sigma)
    y0 = alpha[:, None] + lam[None, :] + xb + u
    t_grid = np.broadcast_to(years[None, :], (n, t_n))
    c_grid = np.broadcast_to(cohort[:, None], (n, t_n))
    k = np.where(cohort[:, None] > 0, t_grid - c_grid + timing.anticipation, -1)
    shift = effect.het_sd * rng.standard_normal(n)
    te = np.where(k >= 0, effect.path(k) + shift[:, None], 0.0)
    out = {UNIT: np.repeat(np.arange(1, n + 1), t_n), TIME: t_grid.ravel(),
           COHORT: c_grid.ravel(), D: treatment_from_cohort(c_grid, t_grid).ravel(),
           dgp.outcome: (y0 + te).ravel()}
    out.update({k: v.ravel() for k, v in xs.items()})
    out[f"y0_{dgp.outcome}"] = y0.ravel()
    out[f"te_{dgp.outcome}"] = te.ravel()
    out["profile"] = np.repeat(profile, t_n)
    return pd.DataFrame(out)
