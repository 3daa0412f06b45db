"""The flagship design: 30 Chinese provinces, 2000-2018 (seed 002).

Draw a synthetic province panel whose covariates have the pilot / non-pilot means and SDs
of seed 002's Table 3, whose emissions are built from eight fuels by the IPCC formula
(Table 2), whose log emissions respond to the covariates with Table 4 (model 2)'s
coefficients, and whose treatment effect is known in every unit and year.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import functools

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from estimators.batch import PanelBatch
from estimators.panel import COHORT, D, TIME, UNIT, OptionError, treatment_from_cohort

from .design import Assignment, DesignSupport, Effect, Timing, assign_cohorts, validate_design
from .emissions import NON_COAL_MIX, carbon_emissions, fuels_for_emissions
from .mediators import Channel, CovariateParts, draw_channels, validate_channels

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


#: what a replicate redraws (:attr:`ProvinceDGP.redraw`)
REDRAW = ("all", "outcome")


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
    # what each replicate redraws. "all": everything (the unconditional design). "outcome":
    # the covariates, the pilots and their dates, and the fuel mix are drawn once, from
    # design_seed, and held fixed; each replicate draws only the outcome's random parts
    # (effect heterogeneity, province effects, year shocks, AR(1) error, and seed 000's
    # outcomes when on): a fixed-design Monte Carlo, conditional on the regressors and on
    # one treatment assignment (the replicate-batched engine then demeans the regressors
    # once for all replicates)
    redraw: str = "all"
    design_seed: int = 0

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
        if self.redraw not in REDRAW:
            raise OptionError(f"data.redraw={self.redraw!r} is not one of {list(REDRAW)}: "
                              "'all' redraws the whole panel each replicate, 'outcome' holds "
                              "the covariates and the assignment at one draw (data.design_seed)")
        if isinstance(self.design_seed, bool) or not isinstance(self.design_seed, (int, np.integer)) \
                or self.design_seed < 0:
            raise OptionError(f"data.design_seed={self.design_seed!r} must be an integer >= 0")

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
    return draw_province_batch([rng], dgp, assignment, timing, effect, channels).frame(0)


def draw_province_batch(
    rngs: Sequence[np.random.Generator],
    dgp: ProvinceDGP | None = None,
    assignment: Assignment | None = None,
    timing: Timing | None = None,
    effect: Effect | None = None,
    channels: Sequence[Channel] = (),
) -> PanelBatch:
    """Draw one province panel per generator, as arrays stacked over replicates.

    Replicate ``b`` is exactly the panel :func:`draw_province` draws from ``rngs[b]``
    (:meth:`~estimators.batch.PanelBatch.frame` gives that DataFrame, bit for bit;
    :func:`draw_province` is this function with one generator). Each generator makes the
    same calls in the same order as a lone draw: normal draws that follow each other are
    made in one call (a ``Generator`` gives the same stream either way), everything else
    -- the pilot draw, the Dirichlet fuel mix, mediator channels, seed 000's outcomes --
    replicate by replicate. The arithmetic runs once over ``(replicates, units, years)``
    arrays, with the element-wise operations of the single draw in the same order, so
    every number is the single draw's whatever the number of generators; the few
    reductions (means over provinces) are taken replicate by replicate on the arrays the
    single draw reduces.

    Parameters
    ----------
    rngs
        One generator per replicate.
    dgp, assignment, timing, effect, channels
        As :func:`draw_province`.

    Returns
    -------
    estimators.batch.PanelBatch
        Columns of :func:`draw_province` in its order: ``(B, n_obs)`` arrays where they vary
        over replicates, ``(n_obs,)`` where they do not (``unit``, ``time``, ``province``,
        ``pilot_profile``).
    """
    dgp = dgp or ProvinceDGP()
    assignment = assignment or Assignment()
    timing = timing or Timing()
    effect = effect or Effect()
    dgp.validate()
    validate_design(dgp, assignment, timing, effect)
    rngs = list(rngs)
    n_reps = len(rngs)
    years = dgp.years
    n_units, n_years = len(PROVINCES), years.size
    channels = tuple(channels)
    validate_channels(channels, n_years)
    profile = np.array([p in PILOTS for p in PROVINCES])
    group = np.where(profile, "pilot", "non_pilot")
    tau = (years - years.mean())[None, :]
    n_cov = len(COVARIATES)
    cell = n_units * n_years

    # what varies over replicates: everything, or (redraw="outcome") only the outcome's
    # random parts, the covariates, pilots and fuel mix being one draw from design_seed
    fixed = dgp.redraw == "outcome"
    validate_redraw(dgp, channels)
    design_rngs = [np.random.default_rng(dgp.design_seed)] if fixed else rngs
    n_x = len(design_rngs)       # leading size of what the design draws (1 when fixed)

    # --- covariates -------------------------------------------------------------------
    # the draw's first normals, one call per replicate: the common factor, then per
    # covariate its province shocks and its AR(1) innovations
    first = np.empty((n_x, n_units + n_cov * (n_units + cell)))
    for b, rng in enumerate(design_rngs):
        first[b] = rng.standard_normal(first.shape[1])
    factor = first[:, :n_units]
    logs: dict[str, np.ndarray] = {}
    levels: dict[str, np.ndarray] = {}
    parts: dict[str, tuple[np.ndarray, float, float, np.ndarray]] = {}
    locations = covariate_locations(dgp.first_year, dgp.last_year, int(profile.sum()),
                                    int((~profile).sum()))
    # every covariate's AR(1) noise in one pass over time (the innovations of covariate j
    # follow its province shocks in the stream)
    noise_sd = np.array([c[2] for c in COVARIATES.values()])[:, None]  # (covariate, unit)
    innov = first[:, n_units:].reshape(n_x, n_cov, n_units + cell)[:, :, n_units:]
    noises = _ar1_of(innov.reshape(n_x, n_cov, n_units, n_years), dgp.rho_x, noise_sd)
    at = n_units
    for j, (name, (level, growth, noise, loading)) in enumerate(COVARIATES.items()):
        loc = np.empty(n_units)
        sd_a = np.empty(n_units)
        for g, mask in (("pilot", profile), ("non_pilot", ~profile)):
            loc[mask], sd_a[mask] = locations[(level, g)]
        rho_f = dgp.factor_corr if loading != 0 else 0.0
        raw = first[:, at:at + n_units]
        at += n_units + cell
        z = np.sign(loading) * np.sqrt(rho_f) * factor + np.sqrt(1 - rho_f) * raw
        a = loc + sd_a * z
        v = noises[:, j]
        x = a[:, :, None] + growth * tau
        x += v
        if level == "es":  # a share: keep it inside (0, 1)
            x = np.minimum(x, ES_CAP)
        logs[name] = x
        levels[level] = np.exp(x)
        parts[name] = (a, growth, noise, v)

    # --- treatment, then the untreated outcome's random parts, replicate by replicate ----
    pilot_idx = np.flatnonzero(profile)
    dates = [MARKET_OPENED[PROVINCES[i]] for i in pilot_idx]
    cohort = np.empty((n_x, n_units), dtype=np.int64)
    second = np.empty((n_reps, 2 * n_units + n_years + cell))
    second_at = np.cumsum([0, n_units, n_units, n_years])
    mix = np.empty((n_x, n_units, len(NON_COAL_MIX)))
    scale = np.ones((n_x, n_units))
    # reductions over provinces run along each replicate's own row, as the single draw's
    baseline = logs["lnpgdp"][:, :, 0]
    z_pgdp = ((baseline - baseline.mean(axis=1, keepdims=True))
              / baseline.std(axis=1, keepdims=True))
    mix_alpha = 40 * np.array(list(NON_COAL_MIX.values()))
    if fixed:  # the design's assignment and mix, then each replicate's outcome normals
        cohort[0] = assign_cohorts(assignment, timing, years, pilot_idx, dates, baseline[0],
                                   design_rngs[0], n_pilots=assignment.n_pilots)
        mix[0] = design_rngs[0].dirichlet(mix_alpha, size=n_units)
        for b, rng in enumerate(rngs):
            second[b] = rng.standard_normal(second.shape[1])
    else:
        for b, rng in enumerate(rngs):
            cohort[b] = assign_cohorts(assignment, timing, years, pilot_idx, dates, baseline[b],
                                       rng, n_pilots=assignment.n_pilots)
            # the effect's heterogeneity, province and year effects, the AR(1) error: in order
            second[b] = rng.standard_normal(second.shape[1])
            mix[b] = rng.dirichlet(mix_alpha, size=n_units)
    lam = dgp.year_sd * second[:, second_at[2]:second_at[3]]
    lam -= lam.mean(axis=1, keepdims=True)
    if dgp.sigma_size:
        log_pop = logs["lnpeople"][:, :, 0]
        for b in range(n_x):  # exp of each replicate's own array, as the single draw
            scale[b] = np.exp(-0.5 * dgp.sigma_size * (log_pop[b] - log_pop[b].mean()))
    t_grid = np.broadcast_to(years[None, None, :], (n_x, n_units, n_years))
    c_grid = np.broadcast_to(cohort[:, :, None], (n_x, n_units, n_years))
    treated_unit = cohort > 0
    k = np.where(treated_unit[:, :, None], t_grid - c_grid, -np.inf)
    tau_i = effect.het_pgdp * z_pgdp + effect.het_sd * second[:, :second_at[1]]
    # anticipation shifts the effect's start earlier; d still follows the recorded date
    k_eff = k + timing.anticipation
    te = np.where(k_eff >= 0, effect.path(k_eff) + tau_i[:, :, None], 0.0)
    te = np.where(treated_unit[:, :, None], te, 0.0)
    alpha = dgp.unit_sd * second[:, second_at[1]:second_at[2]]
    trend = (dgp.trend_gap * treated_unit[:, :, None] + dgp.trend_pgdp * z_pgdp[:, :, None]) * tau
    u = _ar1_of(second[:, second_at[3]:].reshape(n_reps, n_units, n_years), dgp.rho,
                dgp.sigma / np.sqrt(max(1 - dgp.rho**2, 1e-12)))
    if dgp.sigma_size:  # rescales the same draws: the rest of the draw is unchanged
        u = u * scale[:, :, None]

    # --- mediator channels: drawn after everything else, so that they leave the rest of
    # the draw as it is without them ----------------------------------------------------------
    beta = {n: b * dgp.covariate_effects for n, b in BETA_LNCE.items()}
    outcome_terms = {n: beta[n] * logs[n] for n in CONTROLS}
    direct = te
    draws: list[Any] = []
    if channels:
        te = te.copy()
        outcome_trend = np.zeros_like(te)
        outcome_terms = {n: v.copy() for n, v in outcome_terms.items()}
        for b, rng in enumerate(rngs):
            own = {n: CovariateParts(p[0][b], p[1], p[2], p[3][b],
                                     ES_CAP if COVARIATES[n][0] == "es" else None)
                   for n, p in parts.items()}
            ch = draw_channels(rng, channels, own, {n: x[b] for n, x in logs.items()}, years,
                               cohort[b], timing.anticipation, dgp.rho_x, beta)
            draws.append(ch)
            for m, term in ch.outcome_terms.items():
                outcome_terms[m][b] = term
            te[b] = direct[b] + sum(ch.indirect.values())
            outcome_trend[b] = ch.outcome_trend
        for m in draws[0].observed:
            observed = np.stack([ch.observed[m] for ch in draws])
            logs[m] = observed
            levels[COVARIATES[m][0]] = np.stack([np.exp(ch.observed[m]) for ch in draws])

    # --- untreated outcome ----------------------------------------------------------------
    # 0 + t1 + t2 + ..., as sum() adds them, accumulated in place
    xb = 0 + outcome_terms[CONTROLS[0]]
    for n in CONTROLS[1:]:
        xb += outcome_terms[n]
    level_c = np.array([np.log(CE_MEAN[g]) for g in group])
    # centre xb within profile (each replicate's profile cells, reduced along its own row)
    mean_xb = np.where(profile, xb[:, profile].reshape(n_x, -1).mean(axis=1)[:, None],
                       xb[:, ~profile].reshape(n_x, -1).mean(axis=1)[:, None])
    # the sum left to right, each term added in place after the first two
    y0 = ((level_c - 0.5 * 0.3)[None, :, None] + (xb - mean_xb[:, :, None])
          + alpha[:, :, None])
    y0 += lam[:, None, :]
    y0 += trend
    y0 += u
    if channels:
        y0 = y0 + outcome_trend

    # --- emissions by the IPCC accounting -------------------------------------------------
    mix_grid = np.broadcast_to(mix[:, :, None, :], (n_x, n_units, n_years, mix.shape[2]))
    es = levels["es"]
    level_ce = y0 + te
    np.exp(level_ce, out=level_ce)
    fuels = fuels_for_emissions(level_ce, es, mix_grid)
    ce = carbon_emissions(fuels)
    gdp = levels["pgdp"] * levels["people"]  # 10^8 yuan at 2000 prices
    lnce = np.log(ce)
    lncei = lnce - np.log(gdp)

    d = treatment_from_cohort(c_grid, t_grid)

    def flat(v: np.ndarray) -> np.ndarray:
        return v.reshape(n_reps, cell)

    def design_col(v: np.ndarray) -> np.ndarray:
        # what the design holds fixed is stored once, (n_obs,): batched fits then share it
        return v.reshape(cell) if fixed else flat(v)

    cols: dict[str, np.ndarray] = {
        UNIT: np.repeat(np.arange(1, n_units + 1), n_years),
        TIME: np.tile(years, n_units),
        COHORT: design_col(np.ascontiguousarray(c_grid)),
        D: design_col(d),
        "lnce": flat(lnce),
        "lncei": flat(lncei),
    }
    if assignment.kind == "actual" and not fixed:
        # one assignment in every replicate, a property of the design (not of the batch):
        # batched fits then share the treatment's regressors across replicates
        cols[COHORT], cols[D] = cols[COHORT][0], cols[D][0]
    cols.update({n: design_col(v) for n, v in logs.items()})
    cols.update({n: design_col(v) for n, v in levels.items()})
    cols.update({n: flat(v) for n, v in fuels.items()})
    cols["ce"] = flat(ce)
    cols["gdp"] = design_col(gdp)
    cols["y0_lnce"] = flat(y0)
    cols["te_lnce"] = flat(te)
    cols["y0_lncei"] = flat(y0 - np.log(gdp))
    cols["te_lncei"] = flat(te)
    cols["province"] = np.repeat(np.array(PROVINCES, dtype=object), n_years)
    cols["pilot_profile"] = np.repeat(profile, n_years)
    if dgp.air_outcomes:
        x_of = (lambda b: 0) if fixed else (lambda b: b)
        air = [_air_outcomes(rng, dgp, cohort[x_of(b)], years, k_eff[x_of(b)],
                             treated_unit[x_of(b)])
               for b, rng in enumerate(rngs)]
        cols.update({n: np.stack([a[n] for a in air]) for n in air[0]})
    if channels:
        for m in draws[0].effect:
            cols[f"y0_{m}"] = np.stack([ch.untreated[m].ravel() for ch in draws])
            cols[f"te_{m}"] = np.stack([ch.effect[m].ravel() for ch in draws])
        for outcome in ("lnce", "lncei"):
            cols[f"de_{outcome}"] = flat(direct)
        for outcome in ("lnce", "lncei"):
            for m in draws[0].indirect:
                cols[f"ie_{outcome}_{m}"] = np.stack([ch.indirect[m].ravel() for ch in draws])
    return PanelBatch(cols, n_units, n_years)


def validate_redraw(dgp: ProvinceDGP, channels: Sequence[Channel]) -> None:
    """Refuse a fixed design (``data.redraw=outcome``) with mediator channels: a channel
    moves its covariate by the treatment with its own random parts each replicate, which
    a design that holds the covariates fixed cannot honour."""
    if dgp.redraw != "all" and channels:
        raise OptionError(
            f"data.redraw={dgp.redraw!r} holds the covariates fixed, but data.channels "
            f"({', '.join(c.mediator for c in channels)}) redraw a mediator each replicate: "
            "use data.redraw=all with channels"
        )


def _ar1_of(z: np.ndarray, rho: float, sd: float) -> np.ndarray:
    """:func:`_ar1` on innovations already drawn (the last axis is time; ``z`` is not
    modified), bit for bit.

    ``lfilter([1], [1, -rho])`` computes ``y_t = x_t + rho y_{t-1}`` with exactly these
    two roundings (its state is ``0 - y_{t-1} (-rho)``), so the recursion is written out
    over time with every replicate, unit and covariate at once: three times faster than
    ``lfilter``'s lane-by-lane loop on a batch.
    """
    zt = np.ascontiguousarray(np.moveaxis(z, -1, 0))   # time first: each step contiguous
    y = np.empty(zt.shape)
    np.multiply(zt[0], sd, out=y[0])
    step = sd * np.sqrt(1 - rho**2)
    carry = np.empty(zt.shape[1:])
    for t in range(1, y.shape[0]):
        # zt[t] * step + rho * y[t-1]: the same two products and one sum, in place
        np.multiply(zt[t], step, out=y[t])
        np.multiply(y[t - 1], rho, out=carry)
        y[t] += carry
    return np.ascontiguousarray(np.moveaxis(y, 0, -1))


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
