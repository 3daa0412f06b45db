"""A 50-state panel with serially correlated outcomes and placebo laws (``data=states``).

The design of Bertrand, Duflo and Mullainathan (2004), "How much should we trust
differences-in-differences estimates?", *Quarterly Journal of Economics* 119(1), 249-275
(BDM), and, with unequal state sizes, of the few-treated-clusters literature (Conley and
Taber 2011; MacKinnon and Webb 2017).

The outcome of state ``s`` in year ``t`` is

    y_st = a_s + l_t + te_st + sd_s * (u_st + v_st),

- ``a_s ~ N(0, unit_sd^2)``, ``l_t ~ N(0, year_sd^2)``: state and year effects (any
  estimator with state and year fixed effects is invariant to them);
- ``u_st``: a stationary AR(1), ``u_st = rho u_s,t-1 + e_st``, marginal SD ``sigma``
  (BDM Section III, Table II panel B: "AR(1)" data with ``rho`` from -0.4 to 0.8);
- ``v_st ~ N(0, sigma_iid^2)``: an optional i.i.d. component (measurement noise of a
  state-year mean);
- ``sd_s = (pop_s / geometric mean pop)^(-sigma_size / 2)``: with ``sizes="population"``
  the states have the 2010 Census populations of the 50 US states and, with
  ``sigma_size=1``, an error variance inversely proportional to population -- a state-year
  mean of individual data, the "wildly different cluster sizes" of MacKinnon and Webb
  (2017, JAE 32(2)), whose clusters are proportional to US state populations;
- ``te_st``: the effect (shared ``effect`` knobs) from each treated state's law year on
  (``timing.anticipation`` years earlier if set).

Placebo laws (BDM p. 255 and footnote 9): a share ``treated_share`` of the states (BDM:
exactly half) is drawn at random, and each draws its law year uniformly between
``law_first`` and ``law_last`` (BDM: 1985 and 1995, so that every law has pre- and
post-years in 1979-1999). ``treated_share=0`` draws ``assignment.n_pilots`` states instead
(the few-treated design); ``law_first = law_last`` gives one common date.

Every draw carries its truth: ``y0_y`` (the untreated outcome) and ``te_y`` (the effect).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from estimators.panel import COHORT, D, TIME, UNIT, OptionError, check_choice, treatment_from_cohort

from .design import Assignment, DesignSupport, Effect, Timing, pick_pilots, validate_design
from .registry import Simulator

#: the 50 US states (postal codes, alphabetical by state name) and their 2010 Census
#: resident populations in thousands (U.S. Census Bureau, 2010 Census, Table P1), the
#: cluster sizes of MacKinnon and Webb (2017) ("proportional to US state populations")
STATE_POP: dict[str, float] = {
    "AL": 4780, "AK": 710, "AZ": 6392, "AR": 2916, "CA": 37254, "CO": 5029, "CT": 3574,
    "DE": 898, "FL": 18801, "GA": 9688, "HI": 1360, "ID": 1568, "IL": 12831, "IN": 6484,
    "IA": 3046, "KS": 2853, "KY": 4339, "LA": 4533, "ME": 1328, "MD": 5774, "MA": 6548,
    "MI": 9884, "MN": 5304, "MS": 2967, "MO": 5989, "MT": 989, "NE": 1826, "NV": 2701,
    "NH": 1316, "NJ": 8792, "NM": 2059, "NY": 19378, "NC": 9535, "ND": 673, "OH": 11537,
    "OK": 3751, "OR": 3831, "PA": 12702, "RI": 1053, "SC": 4625, "SD": 814, "TN": 6346,
    "TX": 25146, "UT": 2764, "VT": 626, "VA": 8001, "WA": 6725, "WV": 1853, "WI": 5687,
    "WY": 564,
}
SIZES = ("equal", "population")
OUTCOME = "y"


@dataclass
class StatesDGP:
    """Parameters of the state panel (defaults: BDM's AR(1) placebo-law design)."""

    n_states: int = 50               # BDM: the 50 states (Table V varies it: 50, 20, 10, 6)
    first_year: int = 1979           # BDM: CPS 1979-1999, 21 years
    last_year: int = 1999
    # persistence of the AR(1) error; BDM Table II panel B: -0.4, 0, 0.2, 0.4, 0.6, 0.8
    rho: float = 0.8
    # marginal SD of the AR(1) error (log points). Sizes of TWFE-based tests do not depend
    # on it; power does: 0.035 gives the clustered test about BDM's power against a 2%
    # effect with 50 states (see experiments/library/bdm2004.py)
    sigma: float = 0.035
    sigma_iid: float = 0.0           # SD of an extra i.i.d. error component
    unit_sd: float = 0.1             # SD of state effects (absorbed by state fixed effects)
    year_sd: float = 0.02            # SD of year effects (absorbed by year fixed effects)
    # share of states treated (BDM: exactly half); 0: assignment.n_pilots states instead
    treated_share: float = 0.5
    # each treated state's law year is uniform on law_first..law_last (BDM p. 255: 1985-1995)
    law_first: int = 1985
    law_last: int = 1995
    # equal: every state the same size; population: 2010 Census populations (n_states = 50)
    sizes: str = "equal"
    # error variance by size: SD times (pop / geometric mean pop)^(-sigma_size / 2); 1 makes
    # the variance inversely proportional to population (a mean over pop individuals)
    sigma_size: float = 0.0

    def validate(self) -> None:
        if isinstance(self.n_states, bool) or not isinstance(self.n_states, (int, np.integer)) \
                or self.n_states < 3:
            raise OptionError(f"data.n_states={self.n_states!r} must be an integer >= 3")
        if self.last_year <= self.first_year:
            raise OptionError(f"data.last_year={self.last_year} must exceed data.first_year="
                              f"{self.first_year}")
        if not -1 < self.rho < 1:
            raise OptionError(f"data.rho={self.rho} must lie in (-1, 1) (stationary AR(1))")
        for name in ("sigma", "sigma_iid", "unit_sd", "year_sd", "sigma_size"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise OptionError(f"data.{name}={v} must be a finite number >= 0")
        if self.sigma == 0 and self.sigma_iid == 0:
            raise OptionError("data.sigma and data.sigma_iid are both 0: the outcome has no "
                              "noise; set one of them > 0")
        if not 0 <= self.treated_share < 1:
            raise OptionError(f"data.treated_share={self.treated_share} must lie in [0, 1) "
                              "(0: assignment.n_pilots states are treated)")
        if self.treated_share and not 1 <= round(self.treated_share * self.n_states) < self.n_states:
            raise OptionError(f"data.treated_share={self.treated_share} treats "
                              f"{round(self.treated_share * self.n_states)} of "
                              f"{self.n_states} states; it must treat at least one and leave "
                              "one untreated")
        if not self.first_year < self.law_first <= self.law_last <= self.last_year:
            raise OptionError(
                f"data.law_first={self.law_first}, data.law_last={self.law_last} must satisfy "
                f"data.first_year ({self.first_year}) < law_first <= law_last <= "
                f"data.last_year ({self.last_year}): every law needs a pre- and a post-year")
        check_choice("data.sizes", self.sizes, SIZES)
        if self.sizes == "population" and self.n_states != len(STATE_POP):
            raise OptionError(f"data.sizes='population' uses the {len(STATE_POP)} US states' "
                              f"populations: it needs data.n_states={len(STATE_POP)}, not "
                              f"{self.n_states}")

    @property
    def years(self) -> np.ndarray:
        return np.arange(self.first_year, self.last_year + 1)

    def population(self) -> np.ndarray:
        """Each state's size: the 2010 Census population (thousands) under
        ``sizes="population"``, 1 for every state under ``"equal"``."""
        if self.sizes == "population":
            return np.array(list(STATE_POP.values()), dtype=float)
        return np.ones(self.n_states)

    def design_support(self) -> DesignSupport:
        """The shared knobs this panel reads: the assignment (random, or selected on state
        size), the effect (but its GDP and cohort heterogeneity) and the anticipation; the
        law years are ``data.law_first..law_last``, not ``timing``."""
        law = ("data=states draws each treated state's law year uniformly from "
               "data.law_first..data.law_last (Bertrand, Duflo and Mullainathan 2004)")
        ignores = {"timing.kind": law, "timing.year": law, "timing.open_rule": law,
                   "effect.het_pgdp": "the state panel has no GDP covariate",
                   "effect.het_cohort": "effect.het_cohort is used by the city panel only"}
        if self.treated_share:
            ignores["assignment.n_pilots"] = (
                f"data.treated_share={self.treated_share} fixes the number of treated "
                "states; set data.treated_share=0 to draw assignment.n_pilots states")
        return DesignSupport("data=states", int(self.n_states), ignores)

    def n_treated(self, assignment: Assignment) -> int:
        """How many states get a law."""
        if self.treated_share:
            return int(round(self.treated_share * self.n_states))
        return int(assignment.n_pilots)


def check_assignment(dgp: StatesDGP, assignment: Assignment) -> None:
    """The assignment kinds this panel can draw: ``random``, and ``selected`` (probability
    rising with log population) where states have sizes. There are no actual treated
    states."""
    if assignment.kind == "actual":
        raise OptionError("assignment.kind='actual' has no meaning for data=states (there are "
                          "no actual treated states): use assignment=random")
    if assignment.kind == "selected" and dgp.sizes != "population":
        raise OptionError("assignment.kind='selected' selects states on their size: it needs "
                          "data.sizes='population'")


def _ar1(rng: np.random.Generator, shape: tuple[int, int], rho: float, sd: float) -> np.ndarray:
    """Stationary AR(1) along axis 1 with marginal SD ``sd``."""
    z = rng.standard_normal(shape)
    z[:, 0] *= sd
    z[:, 1:] *= sd * np.sqrt(1 - rho**2)
    return lfilter([1.0], [1.0, -rho], z, axis=1)


def draw(dgp: StatesDGP, assignment: Assignment, timing: Timing, effect: Effect,
         rng: np.random.Generator) -> pd.DataFrame:
    """Draw one state panel.

    Random numbers, in this order: the treated states (one Gumbel draw per state,
    :func:`~simulate.design.pick_pilots`), each treated state's law year (in state order),
    the state-level effect heterogeneity (only when ``effect.het_sd > 0``), state effects,
    year effects, the AR(1) errors (state-major), the i.i.d. errors (only when
    ``sigma_iid > 0``).

    Returns
    -------
    pandas.DataFrame
        ``unit`` (1..n_states), ``time``, ``cohort`` (law year, 0 untreated), ``d``, the
        outcome ``y``, ``pop`` (the state's size), and the truth ``y0_y``, ``te_y``.

    Raises
    ------
    OptionError
        For a knob out of range or one this panel ignores set away from its default,
        before anything is drawn.
    """
    dgp.validate()
    validate_design(dgp, assignment, timing, effect)
    check_assignment(dgp, assignment)
    years = dgp.years
    n, t_n = int(dgp.n_states), years.size
    pop = dgp.population()
    log_pop = np.log(pop)
    n_treated = dgp.n_treated(assignment)
    if not 1 <= n_treated < n:
        raise OptionError(f"assignment.n_pilots={n_treated} must lie between 1 and {n - 1}")

    # --- placebo laws ----------------------------------------------------------------------
    score = (log_pop - log_pop.mean()) / (log_pop.std() or 1.0)
    strength = assignment.strength if assignment.kind == "selected" else 0.0
    treated = pick_pilots(score, n_treated, strength, rng)
    cohort = np.zeros(n, dtype=np.int64)
    cohort[treated] = rng.integers(dgp.law_first, dgp.law_last + 1, size=treated.size)

    # --- effect --------------------------------------------------------------------------
    t_grid = np.broadcast_to(years[None, :], (n, t_n))
    c_grid = np.broadcast_to(cohort[:, None], (n, t_n))
    is_treated = cohort > 0
    k_eff = np.where(is_treated[:, None], t_grid - c_grid + timing.anticipation, -1)
    tau_i = (effect.het_sd * rng.standard_normal(n) if effect.het_sd > 0 else np.zeros(n))
    te = np.where(is_treated[:, None] & (k_eff >= 0), effect.path(k_eff) + tau_i[:, None], 0.0)

    # --- untreated outcome ----------------------------------------------------------------
    alpha = dgp.unit_sd * rng.standard_normal(n)
    lam = dgp.year_sd * rng.standard_normal(t_n)
    u = _ar1(rng, (n, t_n), dgp.rho, dgp.sigma)
    if dgp.sigma_iid > 0:
        u = u + dgp.sigma_iid * rng.standard_normal((n, t_n))
    if dgp.sigma_size:
        u = u * np.exp(-0.5 * dgp.sigma_size * (log_pop - log_pop.mean()))[:, None]
    y0 = alpha[:, None] + lam[None, :] + u

    return pd.DataFrame({
        UNIT: np.repeat(np.arange(1, n + 1), t_n),
        TIME: t_grid.ravel(),
        COHORT: c_grid.ravel(),
        D: treatment_from_cohort(c_grid, t_grid).ravel(),
        OUTCOME: (y0 + te).ravel(),
        "pop": np.repeat(pop, t_n),
        f"y0_{OUTCOME}": y0.ravel(),
        f"te_{OUTCOME}": te.ravel(),
    })


SIMULATOR = Simulator(
    kind="states",
    dgp=StatesDGP,
    draw=draw,
    outcomes=(OUTCOME,),
    summary=("50 states x 1979-1999 with an AR(1) outcome and placebo laws in random years "
             "1985-1995 (Bertrand, Duflo and Mullainathan 2004); optional US-population "
             "state sizes (MacKinnon and Webb 2017)"),
)
