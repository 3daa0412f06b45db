# Frozen copy of simulate/province.py before the batched draw (didlab issue #19), kept as the
# reference tests/test_batch.py compares draw_province and draw_province_batch with, bit for bit.
# Do not edit; if the province process changes on purpose, replace this file with the old module.
"""The flagship design: 30 Chinese provinces, 2000-2018 (seed 002).

Draw a synthetic province panel whose covariates have the pilot / non-pilot means and SDs
of seed 002's Table 3, whose emissions are built from eight fuels by the IPCC formula
(Table 2), whose log emissions respond to the covariates with Table 4 (model 2)'s
coefficients, and whose treatment effect is known in every unit and year.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import functools

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from estimators.panel import COHORT, D, TIME, UNIT, OptionError, treatment_from_cohort

from simulate.design import Assignment, DesignSupport, Effect, Timing, assign_cohorts, validate_design
from simulate.emissions import NON_COAL_MIX, carbon_emissions, fuels_for_emissions
from simulate.mediators import Channel, CovariateParts, draw_channels, validate_channels

PROVINCES = (
    "Beijing", "Tianjin", "Hebei", "Shanxi", "Inner Mongolia", "Liaoning", "Jilin",
    "Heilongjiang", "Shanghai", "Jiangsu", "Zhejiang", "Anhui", "Fujian", "Jiangxi",
    "Shandong", "Henan", "Hubei", "Hunan", "Guangdong", "Guangxi", "Hainan", "Chongqing",
    "Sichuan", "Guizhou", "Yunnan", "Shaanxi", "Gansu", "Qinghai", "Ningxia", "Xinjiang",
)
PILOTS = ("Beijing", "Tianjin", "Shanghai", "Chongqing", "Hubei", "Guangdong")
#: market opening dates, seed 002 Table 1 (year, month, day)
MARKET_OPENED = {
    "Beijing": (2013, 11, 28),
    "Tianjin": (2013, 12, 26),
    "Shanghai": (2013, 11, 26),
    "Chongqing": (2014, 6, 19),
    "Hubei": (2014, 4, 2),
    "Guangdong": (2013, 12, 19),
}

#: covariate -> (level column, growth of the log level per year, SD of the AR(1) noise in
#: logs, loading on the common development factor). Growth rates are those of the Chinese
#: provincial aggregates over 2000-2018 in broad terms.
COVARIATES = {
    "lnpgdp": ("pgdp", 0.090, 0.03, 1.0),
    "lnpeople": ("people", 0.005, 0.01, 0.0),
    "lnis2": ("is2", -0.010, 0.05, 0.0),
    "lnfdi": ("fdi", -0.040, 0.15, 1.0),
    "lntech": ("tech", 0.080, 0.20, 1.0),
    "lnes": ("es", -0.025, 0.08, -1.0),
}
CONTROLS = tuple(COVARIATES)
#: the coal share is capped at 0.99 in logs
ES_CAP = float(np.log(0.99))
#: multiplier on the province-effect SD, by (level, group). A pooled sample SD over a few
#: provinces of a skewed (lognormal) variable falls short of its population value, and the
#: coal share is capped below one; these factors were tuned so that the average per-draw
#: Table 3 moments over 200 draws land within about 5% of the paper's (checked by
#: tests/test_simulate.py). Unlisted pairs use 1.
SD_BOOST = {
    ("tech", "pilot"): 1.3, ("tech", "non_pilot"): 1.08,
    ("es", "pilot"): 1.25, ("es", "non_pilot"): 1.3,
    ("fdi", "pilot"): 1.1, ("people", "pilot"): 1.05,
}

#: seed 002 Table 3, [mean, SD] of the level variables by group (pooled province-years)
TABLE3 = {
    "pilot": {
        "pgdp": (5.1, 3.4), "people": (3976.4, 3095.1), "is2": (0.5, 0.1),
        "fdi": (4.1, 2.5), "tech": (3.0, 3.6), "es": (0.5, 0.2),
    },
    "non_pilot": {
        "pgdp": (2.6, 1.9), "people": (4513.3, 2527.0), "is2": (0.5, 0.1),
        "fdi": (2.0, 1.8), "tech": (0.5, 0.6), "es": (0.7, 0.2),
    },
}
#: seed 002 Table 3, mean carbon emissions (10^4 t) by group
CE_MEAN = {"pilot": 6702.0, "non_pilot": 9459.0}
#: seed 002 Table 4, model 2 (lnce with controls), coefficients on the logged controls
BETA_LNCE = {
    "lnpgdp": 0.617, "lnpeople": 1.113, "lnis2": 0.237,
    "lnfdi": -0.0279, "lntech": -0.0580, "lnes": 0.253,
}


@dataclass
class ProvinceDGP:
    """Parameters of the province process (defaults: calibrated to seed 002)."""

    first_year: int = 2000
    last_year: int = 2018
    # persistence of the outcome's AR(1) error; > 0 breaks the i.i.d.-error assumption that
    # conventional SEs make (Bertrand, Duflo and Mullainathan 2004)
    rho: float = 0.6
    sigma: float = 0.08               # innovation SD of the outcome's AR(1) error
    unit_sd: float = 0.25             # SD of province effects in log emissions beyond covariates
    year_sd: float = 0.03             # SD of common year shocks
    rho_x: float = 0.7                # persistence of covariate noise
    factor_corr: float = 0.4          # share of province-level covariate variance on a common
                                      # development factor (rich provinces are more open etc.)
    covariate_effects: float = 1.0    # scales Table 4's coefficients on the controls
    # pilots' untreated outcome trends by this much per year relative to other provinces;
    # breaks parallel trends
    trend_gap: float = 0.0
    # untreated outcome trends by this much per year per SD of baseline log GDP per capita;
    # with pilots selected on GDP, parallel trends fail
    trend_pgdp: float = 0.0
    # error variance by province size: the outcome's AR(1) error of a province with
    # baseline population P has SD sigma * (P / geometric mean P)^(-sigma_size / 2), so with
    # 1 the variance is inversely proportional to population (small provinces are noisy
    # averages); the setting Ferman and Pinto (2019) correct for. 0: homoskedastic
    sigma_size: float = 0.0
    # seed 000's outcomes (extra columns, drawn only when on): the share of enterprises
    # doing voluntary clean production and annual mean PM10, SO2, NO2 (mg/m3)
    air_outcomes: bool = False
    clean_effect: float = 0.22       # pilots +22 percentage points (seed 000)
    # the effect shrinks by this much per unit of the province's baseline clean share:
    # the policy works more where fewer firms already produce cleanly
    clean_slope: float = -0.5
    pm10_effect: float = -0.0288     # seed 000: 0.0288, 0.0170, 0.0105 mg/m3 lower
    so2_effect: float = -0.0170
    no2_effect: float = -0.0105

    def validate(self) -> None:
        if self.last_year <= self.first_year:
            raise OptionError(
                f"data.last_year={self.last_year} must exceed data.first_year={self.first_year}"
            )
        for name in ("rho", "rho_x"):
            v = getattr(self, name)
            if not -1 < v < 1:
                raise OptionError(f"data.{name}={v} must lie in (-1, 1) (stationary AR(1))")
        for name in ("sigma", "unit_sd", "year_sd"):
            if getattr(self, name) < 0:
                raise OptionError(f"data.{name}={getattr(self, name)} must be >= 0")
        if not np.isfinite(self.sigma_size) or self.sigma_size < 0:
            raise OptionError(f"data.sigma_size={self.sigma_size} must be >= 0")
        if not 0 <= self.factor_corr < 1:
            raise OptionError(f"data.factor_corr={self.factor_corr} must lie in [0, 1)")

    @property
    def years(self) -> np.ndarray:
        return np.arange(self.first_year, self.last_year + 1)

    def design_support(self) -> DesignSupport:
        """The shared design knobs this panel reads (:func:`~simulate.design.validate_design`):
        all but ``effect.het_cohort``, which only the city panel draws."""
        return DesignSupport("data=province", len(PROVINCES), {
            "effect.het_cohort": "effect.het_cohort is used by the city panel (data=city) only",
        })


def lognormal_params(mean: float, sd: float, growth: float, noise_sd: float,
                     years: np.ndarray, n_units: int, boost: float = 1.0) -> tuple[float, float]:
    """Location ``m`` and province-effect SD of a log-level process that hits a target
    pooled mean and SD of the level.

    The log level is ``m + a_i + growth*(t - tbar) + v_it`` with ``a_i ~ N(0, s_a^2)`` and
    stationary noise of SD ``noise_sd``. Moments of the level follow from the lognormal
    formulas with the time trend averaged exactly over the years; the province-effect
    variance is inflated by n/(n-1) because a pooled sample SD over n provinces sees only
    (n-1)/n of it; ``boost`` multiplies the province-effect SD further (see
    :data:`SD_BOOST`) while ``m`` is moved so that the mean stays on target.
    """
    tau = years - years.mean()
    a1 = np.mean(np.exp(growth * tau))
    a2 = np.mean(np.exp(2 * growth * tau))
    total = np.log1p((sd / mean) ** 2) - np.log(a2 / a1**2) - noise_sd**2
    if total <= 0:
        raise OptionError(
            f"cannot reach SD {sd} around mean {mean} with growth {growth} and noise "
            f"{noise_sd}: the trend alone is too dispersed"
        )
    var_a = total * n_units / (n_units - 1) * boost**2
    m = np.log(mean) - var_a / 2 - noise_sd**2 / 2 - np.log(a1)
    return float(m), float(np.sqrt(var_a))


def _ar1(rng: np.random.Generator, shape: tuple[int, int], rho: float, sd: float) -> np.ndarray:
    """Stationary AR(1) along axis 1 with marginal SD ``sd``:
    ``x_0 = sd e_0``, ``x_t = rho x_{t-1} + sd sqrt(1 - rho^2) e_t``."""
    z = rng.standard_normal(shape)
    z[:, 0] *= sd
    z[:, 1:] *= sd * np.sqrt(1 - rho**2)
    return lfilter([1.0], [1.0, -rho], z, axis=1)


@functools.lru_cache(maxsize=64)
def covariate_locations(first_year: int, last_year: int, n_pilot: int, n_other: int
                        ) -> dict[tuple[str, str], tuple[float, float]]:
    """(level, group) -> (location m, province-effect SD) for every covariate; a pure
    function of the calibration targets, computed once per panel shape."""
    years = np.arange(first_year, last_year + 1)
    out = {}
    for level, growth, noise, _ in COVARIATES.values():
        for g, n_g in (("pilot", n_pilot), ("non_pilot", n_other)):
            mean, sd = TABLE3[g][level]
            out[(level, g)] = lognormal_params(mean, sd, growth, noise, years, n_g,
                                               SD_BOOST.get((level, g), 1.0))
    return out


def draw_province(
    rng: np.random.Generator,
    dgp: ProvinceDGP | None = None,
    assignment: Assignment | None = None,
    timing: Timing | None = None,
    effect: Effect | None = None,
    channels: Sequence[Channel] = (),
) -> pd.DataFrame:
    """Draw one province panel (30 provinces x ``first_year..last_year``).

    Parameters
    ----------
    rng
        The only source of randomness; the same generator state gives the same panel.
    dgp, assignment, timing, effect
        Process, pilot selection, treatment dates and effect (defaults: seed 002's design
        with a -0.3 log-point effect from 2011).
    channels
        Mediator channels (:mod:`simulate.mediators`): covariates the policy moves and
        through which it moves emissions. ``effect`` is then the direct effect. Without
        channels (the default) nothing extra is drawn and the panel is unchanged.

    Returns
    -------
    pandas.DataFrame
        Canonical panel (``unit``, ``time``, ``cohort``, ``d``), the outcomes ``lnce`` and
        ``lncei``, the six logged controls and their levels, the eight fuel quantities and
        ``ce``, ``gdp``; truth columns ``y0_lnce``, ``te_lnce``, ``y0_lncei``, ``te_lncei``;
        ``province`` (name) and ``pilot_profile`` (an actual pilot). With channels, appended
        after those: ``y0_<m>`` and ``te_<m>`` for each mediator ``m``, ``de_lnce`` and
        ``de_lncei`` (direct effects), and ``ie_lnce_<m>``, ``ie_lncei_<m>`` (indirect
        effects through ``m``); ``te_<outcome>`` is then direct plus indirect.

    Raises
    ------
    OptionError
        For a knob out of range, or one this panel ignores set away from its default
        (:meth:`ProvinceDGP.design_support`), before anything is drawn; for treatment dates
        outside the panel's years.

    Notes
    -----
    Covariates: each log level is ``m_g + a_i + growth*(t - tbar) + v_it`` with group
    (pilot / non-pilot profile) locations from Table 3, province effects loading on a
    common development factor and AR(1) noise. Untreated log emissions are
    ``c_g + alpha_i + lambda_t + beta'x_it + trend terms + u_it`` with ``beta`` from Table 4
    model 2 and AR(1) ``u``. Treated log emissions add ``te_it``. Fuels are then split so
    that the coal share equals ``es`` and the IPCC formula returns the emissions exactly.
    """
    dgp = dgp or ProvinceDGP()
    assignment = assignment or Assignment()
    timing = timing or Timing()
    effect = effect or Effect()
    dgp.validate()
    validate_design(dgp, assignment, timing, effect)
    years = dgp.years
    n_units, n_years = len(PROVINCES), years.size
    channels = tuple(channels)
    validate_channels(channels, n_years)
    profile = np.array([p in PILOTS for p in PROVINCES])
    group = np.where(profile, "pilot", "non_pilot")
    tau = (years - years.mean())[None, :]

    # --- covariates -------------------------------------------------------------------
    factor = rng.standard_normal(n_units)
    logs: dict[str, np.ndarray] = {}
    levels: dict[str, np.ndarray] = {}
    parts: dict[str, CovariateParts] = {}
    locations = covariate_locations(dgp.first_year, dgp.last_year, int(profile.sum()),
                                    int((~profile).sum()))
    for name, (level, growth, noise, loading) in COVARIATES.items():
        loc = np.empty(n_units)
        sd_a = np.empty(n_units)
        for g, mask in (("pilot", profile), ("non_pilot", ~profile)):
            loc[mask], sd_a[mask] = locations[(level, g)]
        rho_f = dgp.factor_corr if loading != 0 else 0.0
        z = np.sign(loading) * np.sqrt(rho_f) * factor + np.sqrt(1 - rho_f) * rng.standard_normal(n_units)
        a = loc + sd_a * z
        v = _ar1(rng, (n_units, n_years), dgp.rho_x, noise)
        x = a[:, None] + growth * tau + v
        if level == "es":  # a share: keep it inside (0, 1)
            x = np.minimum(x, ES_CAP)
        logs[name] = x
        levels[level] = np.exp(x)
        parts[name] = CovariateParts(a, growth, noise, v, ES_CAP if level == "es" else None)
    baseline = logs["lnpgdp"][:, 0]
    z_pgdp = (baseline - baseline.mean()) / baseline.std()

    # --- treatment ----------------------------------------------------------------------
    pilot_idx = np.flatnonzero(profile)
    dates = [MARKET_OPENED[PROVINCES[i]] for i in pilot_idx]
    cohort = assign_cohorts(assignment, timing, years, pilot_idx, dates, baseline, rng,
                            n_pilots=assignment.n_pilots)
    t_grid = np.broadcast_to(years[None, :], (n_units, n_years))
    c_grid = np.broadcast_to(cohort[:, None], (n_units, n_years))
    treated_unit = cohort > 0
    k = np.where(treated_unit[:, None], t_grid - c_grid, -np.inf)
    tau_i = effect.het_pgdp * z_pgdp + effect.het_sd * rng.standard_normal(n_units)
    # anticipation shifts the effect's start earlier; d still follows the recorded date
    k_eff = k + timing.anticipation
    te = np.where(k_eff >= 0, effect.path(k_eff) + tau_i[:, None], 0.0)
    te = np.where(treated_unit[:, None], te, 0.0)

    # --- untreated outcome: random parts, drawn in this order ------------------------------
    alpha = dgp.unit_sd * rng.standard_normal(n_units)
    lam = dgp.year_sd * rng.standard_normal(n_years)
    lam -= lam.mean()
    trend = (dgp.trend_gap * treated_unit[:, None] + dgp.trend_pgdp * z_pgdp[:, None]) * tau
    u = _ar1(rng, (n_units, n_years), dgp.rho, dgp.sigma / np.sqrt(max(1 - dgp.rho**2, 1e-12)))
    if dgp.sigma_size:  # rescales the same draws: the rest of the draw is unchanged
        log_pop = logs["lnpeople"][:, 0]
        u = u * np.exp(-0.5 * dgp.sigma_size * (log_pop - log_pop.mean()))[:, None]
    mix = rng.dirichlet(40 * np.array(list(NON_COAL_MIX.values())), size=n_units)

    # --- mediator channels: drawn after everything else, so that they leave the rest of
    # the draw as it is without them ----------------------------------------------------------
    beta = {n: b * dgp.covariate_effects for n, b in BETA_LNCE.items()}
    outcome_terms = {n: beta[n] * logs[n] for n in CONTROLS}
    direct = te
    ch = None
    if channels:
        ch = draw_channels(rng, channels, parts, logs, years, cohort, timing.anticipation,
                           dgp.rho_x, beta)
        outcome_terms.update(ch.outcome_terms)
        for m, x in ch.observed.items():
            logs[m] = x
            levels[COVARIATES[m][0]] = np.exp(x)
        te = direct + sum(ch.indirect.values())

    # --- untreated outcome ----------------------------------------------------------------
    xb = sum(outcome_terms[n] for n in CONTROLS)
    level_c = np.array([np.log(CE_MEAN[g]) for g in group])
    group_mean = {g: xb[group == g].mean() for g in ("pilot", "non_pilot")}
    mean_xb = np.array([group_mean[g] for g in group])  # centre xb within profile
    y0 = (level_c - 0.5 * 0.3)[:, None] + (xb - mean_xb[:, None]) + alpha[:, None] + lam[None, :] + trend + u
    if ch is not None:
        y0 = y0 + ch.outcome_trend

    # --- emissions by the IPCC accounting -------------------------------------------------
    mix_grid = np.broadcast_to(mix[:, None, :], (n_units, n_years, mix.shape[1]))
    es = levels["es"]
    fuels = fuels_for_emissions(np.exp(y0 + te), es, mix_grid)
    ce = carbon_emissions(fuels)
    gdp = levels["pgdp"] * levels["people"]  # 10^8 yuan at 2000 prices
    lnce = np.log(ce)
    lncei = lnce - np.log(gdp)

    d = treatment_from_cohort(c_grid, t_grid)
    cols: dict[str, np.ndarray] = {
        UNIT: np.repeat(np.arange(1, n_units + 1), n_years),
        TIME: t_grid.ravel(),
        COHORT: c_grid.ravel(),
        D: d.ravel(),
        "lnce": lnce.ravel(),
        "lncei": lncei.ravel(),
    }
    cols.update({n: v.ravel() for n, v in logs.items()})
    cols.update({n: v.ravel() for n, v in levels.items()})
    cols.update({n: v.ravel() for n, v in fuels.items()})
    cols["ce"] = ce.ravel()
    cols["gdp"] = gdp.ravel()
    cols["y0_lnce"] = y0.ravel()
    cols["te_lnce"] = te.ravel()
    cols["y0_lncei"] = (y0 - np.log(gdp)).ravel()
    cols["te_lncei"] = te.ravel()
    cols["province"] = np.repeat(np.array(PROVINCES, dtype=object), n_years)
    cols["pilot_profile"] = np.repeat(profile, n_years)
    if dgp.air_outcomes:
        cols.update(_air_outcomes(rng, dgp, cohort, years, k_eff, treated_unit))
    if ch is not None:
        for m in ch.effect:
            cols[f"y0_{m}"] = ch.untreated[m].ravel()
            cols[f"te_{m}"] = ch.effect[m].ravel()
        for outcome in ("lnce", "lncei"):
            cols[f"de_{outcome}"] = direct.ravel()
        for outcome in ("lnce", "lncei"):
            for m in ch.indirect:
                cols[f"ie_{outcome}_{m}"] = ch.indirect[m].ravel()
    return pd.DataFrame(cols)


def _air_outcomes(rng: np.random.Generator, dgp: ProvinceDGP, cohort: np.ndarray,
                  years: np.ndarray, k_eff: np.ndarray, treated_unit: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """Seed 000's outcomes with their truth: clean-production share (effect larger where
    the baseline share is low) and three pollutant concentrations."""
    n, t_n = cohort.size, years.size
    on = (k_eff >= 0) & treated_unit[:, None]
    tau = (years - years.mean())[None, :]
    out: dict[str, np.ndarray] = {}
    base = np.clip(0.35 + 0.12 * rng.standard_normal(n), 0.05, 0.8)       # baseline share
    s0 = np.clip(base[:, None] + 0.01 * tau + _ar1(rng, (n, t_n), 0.5, 0.03), 0.0, 1.0)
    te = np.where(on, dgp.clean_effect + dgp.clean_slope * (base[:, None] - base.mean()), 0.0)
    s1 = np.clip(s0 + te, 0.0, 1.0)
    out.update(clean_share=s1.ravel(), y0_clean_share=s0.ravel(), te_clean_share=(s1 - s0).ravel())
    for name, mean, sd, effect in (("pm10", 0.10, 0.025, dgp.pm10_effect),
                                   ("so2", 0.045, 0.015, dgp.so2_effect),
                                   ("no2", 0.035, 0.008, dgp.no2_effect)):
        level = mean + sd * rng.standard_normal(n)
        y0 = np.maximum(level[:, None] - 0.002 * tau + _ar1(rng, (n, t_n), 0.5, 0.2 * sd), 0.002)
        y1 = np.maximum(y0 + np.where(on, effect, 0.0), 0.001)
        out.update({name: y1.ravel(), f"y0_{name}": y0.ravel(), f"te_{name}": (y1 - y0).ravel()})
    return out


def true_att(panel: pd.DataFrame, outcome: str) -> float:
    """The draw's ATT: mean unit-period effect over treated observations (``d == 1``)."""
    te = panel[f"te_{outcome}"].to_numpy()
    d = panel[D].to_numpy() == 1
    return float(te[d].mean())
