"""A city panel with staggered adoption: 282 cities, 2009-2022 (seed 001's setting).

Cities of the pilot provinces enter by their market's opening (Shenzhen, Beijing,
Tianjin, Shanghai and Guangdong 2013; Hubei and Chongqing 2014), Fujian's cities join in
2016, the rest are never treated. Effects can grow with exposure, differ by cohort and by
the city attributes seed 001's heterogeneity analysis uses, so that two-way fixed effects
can be shown to fail and the modern estimators to repair it. Every draw carries its truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from estimators.panel import COHORT, D, TIME, UNIT, OptionError, check_choice, treatment_from_cohort

from .design import Assignment, Date, DesignSupport, Effect, Timing, assign_cohorts, validate_design
from .province import _ar1

#: pilot group -> (number of prefecture-level cities, market opening (y, m, d))
CITY_GROUPS = {
    "Shenzhen": (1, (2013, 6, 18)),
    "Beijing": (1, (2013, 11, 28)),
    "Shanghai": (1, (2013, 11, 26)),
    "Tianjin": (1, (2013, 12, 26)),
    "Guangdong": (20, (2013, 12, 19)),   # Guangdong's 21 cities less Shenzhen
    "Hubei": (12, (2014, 4, 2)),
    "Chongqing": (1, (2014, 6, 19)),
    "Fujian": (9, (2016, 12, 22)),       # joined the pilots in December 2016
}
EASTERN = {"Shenzhen", "Beijing", "Shanghai", "Tianjin", "Guangdong", "Fujian"}
COHORT_DESIGNS = ("actual", "thirds")
#: shares of prefecture-level cities that are resource-based (126 of 282 in the 2013 State
#: Council plan) and old industrial bases (95 in the 2013 plan); eastern (developed) share
SHARE_RESOURCE, SHARE_OLD_INDUSTRIAL, SHARE_DEVELOPED = 126 / 282, 95 / 282, 0.36


@dataclass
class CityDGP:
    """Parameters of the city process."""

    n_cities: int = 282
    first_year: int = 2009
    last_year: int = 2022
    # actual: pilot cities by opening date, Fujian 2016, the rest never treated;
    # thirds: all but never_share of the cities treated in three equal cohorts (2011, 2014,
    # 2017) -- few clean comparisons, where TWFE's forbidden comparisons bite hardest
    cohort_design: str = "actual"
    never_share: float = 0.1
    fujian: bool = True               # Fujian's cities join in 2016 (False: never treated)
    rho: float = 0.5                  # persistence of the outcome's AR(1) error
    sigma: float = 0.05               # innovation SD of the outcome error
    unit_sd: float = 0.3              # SD of city effects
    year_sd: float = 0.02             # SD of common year shocks
    trend: float = 0.03               # common growth of the (log) index per year
    beta_pgdp: float = 0.3            # response of the outcome to log GDP per capita
    # effect shifts for treated cities with each attribute (seed 001's heterogeneity)
    het_developed: float = 0.0
    het_resource: float = 0.0
    het_old_industrial: float = 0.0
    # treated cities' untreated outcome trends by this much per year relative to the others
    # (measured from the reference year before their cohort); breaks parallel trends
    trend_gap: float = 0.0
    # seed 001's channels: the policy raises green innovation and structural transformation
    # (log indices), which raise the outcome; extra columns, drawn only when on
    mediators: bool = False
    a_green: float = 0.15           # effect of the policy on green innovation
    b_green: float = 0.4            # effect of green innovation on the outcome
    a_structure: float = 0.08       # effect of the policy on structural transformation
    b_structure: float = 0.5        # effect of structural transformation on the outcome
    # national market from 2021: every city, treated or not, gets this effect from 2021 on;
    # contaminates the never-treated comparison group
    national_2021: float = 0.0

    def validate(self) -> None:
        check_choice("data.cohort_design", self.cohort_design, COHORT_DESIGNS)
        if self.last_year <= self.first_year + 2:
            raise OptionError("data.last_year must be at least three years after data.first_year")
        if not 0 <= self.never_share < 1:
            raise OptionError(f"data.never_share={self.never_share} must lie in [0, 1)")
        if not -1 < self.rho < 1:
            raise OptionError(f"data.rho={self.rho} must lie in (-1, 1)")
        n_pilot = sum(n for n, _ in CITY_GROUPS.values())
        if self.n_cities <= n_pilot:
            raise OptionError(f"data.n_cities={self.n_cities} must exceed the {n_pilot} pilot cities")

    def design_support(self) -> DesignSupport:
        """The shared design knobs this panel reads (:func:`~simulate.design.validate_design`).

        Never ``assignment.n_pilots``: random and selected pilots take the actual pilot
        cities' places, so their number and cohort sizes are the actual ones. Never
        ``effect.het_pgdp``: the effect varies with city attributes and cohort instead.
        Under ``cohort_design="thirds"`` the three waves replace the assignment and the
        dates, so ``assignment.kind`` / ``strength`` and ``timing.year`` / ``open_rule``
        are refused too. ``timing.kind`` is not: every timing config sets it (and
        experiment=method_comparison sets market_open for either cohort design), so
        refusing one of its two values would refuse thirds under that config.
        """
        name = "data=city"
        ignores = {
            "assignment.n_pilots": "random and selected pilots keep the actual pilot cities' "
                                   "number and cohort sizes",
            "effect.het_pgdp": "the city effect varies with data.het_developed, "
                               "data.het_resource, data.het_old_industrial and effect.het_cohort",
        }
        if self.cohort_design == "thirds":
            name = "data=city with data.cohort_design=thirds"
            waves = "its cohorts are three waves (2011, 2014, 2017) of randomly ordered cities"
            ignores.update({"assignment.kind": waves, "assignment.strength": waves,
                            "timing.year": waves, "timing.open_rule": waves})
        return DesignSupport(name, self.n_cities, ignores)


def draw_city(
    rng: np.random.Generator,
    dgp: CityDGP | None = None,
    assignment: Assignment | None = None,
    timing: Timing | None = None,
    effect: Effect | None = None,
) -> pd.DataFrame:
    """Draw one city panel.

    ``timing.kind="market_open"`` (the default here: staggered) dates each pilot city by its
    market; ``"common"`` treats every pilot city from ``timing.year``. ``assignment``:
    ``actual`` cities of the pilot provinces; ``random`` / ``selected`` give the same
    cohort sizes to random cities or to cities drawn on baseline GDP per capita
    (:func:`simulate.design.assign_cohorts`). Knobs the panel ignores
    (:meth:`CityDGP.design_support`) raise :class:`~estimators.panel.OptionError` when set
    away from their defaults.

    Returns the canonical panel with outcome ``nqpf`` (log index of "new quality productive
    forces"), covariate ``lnpgdp``, attributes ``developed``, ``resource``,
    ``old_industrial`` (0/1, constant within city), ``group`` (pilot group or "other"),
    and truth columns ``y0_nqpf``, ``te_nqpf``.
    """
    dgp = dgp or CityDGP()
    assignment = assignment or Assignment()
    timing = timing or Timing(kind="market_open")
    effect = effect or Effect()
    dgp.validate()
    validate_design(dgp, assignment, timing, effect)
    years = np.arange(dgp.first_year, dgp.last_year + 1)
    n, t_n = dgp.n_cities, years.size

    group = np.array(["other"] * n, dtype=object)
    start = 0
    pilots: list[int] = []          # the actual pilot cities and their market openings
    dates: list[Date] = []
    for name, (count, date) in CITY_GROUPS.items():
        group[start:start + count] = name
        if name != "Fujian" or dgp.fujian:
            pilots.extend(range(start, start + count))
            dates.extend([date] * count)
        start += count
    developed = np.where(group == "other", rng.random(n) < SHARE_DEVELOPED,
                         np.isin(group, list(EASTERN))).astype(np.int8)
    resource = (rng.random(n) < SHARE_RESOURCE).astype(np.int8)
    old_ind = (rng.random(n) < SHARE_OLD_INDUSTRIAL).astype(np.int8)
    base_pgdp = 0.5 * developed - 0.15 * resource + 0.35 * rng.standard_normal(n)
    base_pgdp[group != "other"] += 0.3  # pilot provinces' cities are richer

    if dgp.cohort_design == "thirds":
        order = rng.permutation(n)
        n_never = int(round(dgp.never_share * n))
        cohort = np.zeros(n, dtype=np.int64)
        waves = np.array([2011, 2014, 2017], dtype=np.int64)
        cohort[order[n_never:]] = waves[np.arange(n - n_never) % 3]
        cohort = np.where(cohort > 0, np.clip(cohort, years[1], years[-1]), 0)
    else:
        cohort = assign_cohorts(assignment, timing, years, np.array(pilots), dates, base_pgdp, rng)

    tau = (years - years.mean())[None, :]
    lnpgdp = (1.0 + base_pgdp)[:, None] + 0.07 * tau + _ar1(rng, (n, t_n), 0.7, 0.04)
    alpha = dgp.unit_sd * rng.standard_normal(n)
    lam = dgp.trend * (years - years[0]) + dgp.year_sd * rng.standard_normal(t_n)
    u = _ar1(rng, (n, t_n), dgp.rho, dgp.sigma / np.sqrt(1 - dgp.rho**2))
    y0 = alpha[:, None] + lam[None, :] + dgp.beta_pgdp * lnpgdp + u
    if dgp.trend_gap:
        rel = years[None, :] - np.where(cohort > 0, cohort, years[0])[:, None] + 1
        y0 = y0 + dgp.trend_gap * np.where(cohort[:, None] > 0, rel, 0.0)

    t_grid = np.broadcast_to(years[None, :], (n, t_n))
    c_grid = np.broadcast_to(cohort[:, None], (n, t_n))
    k = np.where(cohort[:, None] > 0, t_grid - c_grid + timing.anticipation, -1)
    first = cohort[cohort > 0].min() if (cohort > 0).any() else 0
    shift = (dgp.het_developed * developed + dgp.het_resource * resource
             + dgp.het_old_industrial * old_ind
             + effect.het_cohort * np.where(cohort > 0, cohort - first, 0)
             + effect.het_sd * rng.standard_normal(n))
    te = np.where(k >= 0, effect.path(k) + shift[:, None], 0.0)
    national = np.where(t_grid >= 2021, dgp.national_2021, 0.0)
    extra: dict[str, np.ndarray] = {}
    if dgp.mediators:
        # channels: M = M0 + a 1[treated]; Y gains b M0 (untreated) and b a (indirect)
        direct = te
        for name, a_m, b_m in (("green", dgp.a_green, dgp.b_green),
                               ("structure", dgp.a_structure, dgp.b_structure)):
            m0 = (0.4 * rng.standard_normal(n))[:, None] + 0.02 * tau + _ar1(rng, (n, t_n), 0.6, 0.05)
            te_m = np.where(k >= 0, a_m, 0.0)
            y0 = y0 + b_m * m0
            te = te + b_m * te_m
            extra.update({name: (m0 + te_m).ravel(), f"y0_{name}": m0.ravel(),
                          f"te_{name}": te_m.ravel(), f"ie_nqpf_{name}": (b_m * te_m).ravel()})
        extra["de_nqpf"] = direct.ravel()
    y = y0 + te + national
    d = treatment_from_cohort(c_grid, t_grid)
    return pd.DataFrame({
        UNIT: np.repeat(np.arange(1, n + 1), t_n),
        TIME: t_grid.ravel(),
        COHORT: c_grid.ravel(),
        D: d.ravel(),
        "nqpf": y.ravel(),
        "lnpgdp": lnpgdp.ravel(),
        "developed": np.repeat(developed, t_n),
        "resource": np.repeat(resource, t_n),
        "old_industrial": np.repeat(old_ind, t_n),
        "group": np.repeat(group, t_n),
        "y0_nqpf": (y0 + national).ravel(),
        "te_nqpf": te.ravel(),
        **extra,
    })
