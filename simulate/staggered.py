"""A staggered-adoption firm panel: Baker, Larcker and Wang's (2022) six simulations.

Baker, A. C., Larcker, D. F. and Wang, C. C. Y. (2022), "How much should we trust
staggered difference-in-differences estimates?", *Journal of Financial Economics* 144(2),
370-395, Section 3.1 (Figures 1, 2 and 6). The authors' replication code
(github.com/andrewchbaker/JFE_DID, ``Code/1b. TWFE + binary DiD.R``, function ``run_sim``)
fixes every parameter but the outcome's moments:

- firm-year ROA 1980-2015 = firm effect + year effect + residual; each firm's state of
  incorporation is drawn uniformly from the 50 states (``sample(state.abb, n, replace =
  TRUE)``), and treatment is assigned to states in a random order;
- simulations 1-2: the first 25 states are treated from 1998, the other 25 never;
  simulations 3-6: states 1-17 are treated from 1989, 18-35 from 1998, 36-50 from 2007
  (every firm is eventually treated);
- effects, as multiples of the standard deviation of ROA ``sd_roa``:

  ====  ============================  ===============================================
  sim   design                        effect at event time ``k = t - g >= 0``
  ====  ============================  ===============================================
  1     one date, constant            0.5
  2     one date, dynamic             0.05 (k + 1)
  3     staggered, constant, equal    0.5 for every cohort
  4     staggered, constant, unequal  0.5 / 0.3 / 0.1 (cohorts 1989 / 1998 / 2007)
  5     staggered, dynamic, equal     0.03 (k + 1)
  6     staggered, dynamic, unequal   (0.05 / 0.03 / 0.01) (k + 1)
  ====  ============================  ===============================================

(The JFE numbering: two non-staggered simulations, four staggered ones.) The paper draws
the firm and year effects and the residuals with replacement from their empirical
distributions in Compustat (a regression of ROA on firm and year fixed effects over the
Compustat universe); that microdata cannot ship. Here they are normal, with the standard
deviations of the working-paper version of the same simulations (Baker, Larcker and Wang
2021, SSRN 3794018, code github.com/andrewchbaker/DiD_Codes, ``Final Code/Simulation.R``:
``unit_fe = rnorm(1000, 0, 0.5)``, ``year_fe = rnorm(36, 0, 0.5)``,
``error = rnorm(., 0, 0.5)``, 1000 firms), and ``sd_roa`` is the population standard
deviation of the untreated outcome, ``sqrt(unit_sd^2 + year_sd^2 + noise_sd^2)``. None of
the paper's conclusions depend on these moments: TWFE's bias is a property of the
treatment-effect surface and the cohort shares (Goodman-Bacon 2021), which are the
paper's.

``simulation=0`` is a free design on the same panel (used by ``experiment=roth2022``):
treated cohorts ``cohorts`` taking ``cohort_shares`` of the states, the effect from the
shared ``effect`` knobs, and a linear differential trend ``trend_slope`` in the treated
units' untreated outcome (zero in each cohort's last untreated year ``g - 1``): the
violation of parallel trends Roth (2022) calibrates a pre-test's power against.

Every draw carries its truth: ``y0_roa`` (untreated outcome, trend included) and
``te_roa`` (effect).
"""

from dataclasses import dataclass, field
from typing import List

import numpy as np
import pandas as pd

from estimators.panel import COHORT, D, TIME, UNIT, OptionError, treatment_from_cohort

from .design import KNOB_DEFAULTS, Assignment, DesignSupport, Effect, Timing, validate_design
from .registry import Simulator

#: BLW's cohorts (first treated years) and the cumulative share of the 50 states in each:
#: sims 1-2 states 1-25 from 1998; sims 3-6 states 1-17 / 18-35 / 36-50 (``run_sim``)
BLW_COHORTS = {1: (1998,), 2: (1998,), 3: (1989, 1998, 2007), 4: (1989, 1998, 2007),
               5: (1989, 1998, 2007), 6: (1989, 1998, 2007)}
BLW_STATE_CUTS = {1: (25,), 2: (25,), 3: (17, 35, 50), 4: (17, 35, 50), 5: (17, 35, 50),
                  6: (17, 35, 50)}
#: per-cohort effect (multiple of sd_roa) and whether it is per year of exposure (dynamic:
#: ``delta_base * (fyear - group + 1)``)
BLW_EFFECTS = {1: ((0.5,), False), 2: ((0.05,), True), 3: ((0.5, 0.5, 0.5), False),
               4: ((0.5, 0.3, 0.1), False), 5: ((0.03, 0.03, 0.03), True),
               6: ((0.05, 0.03, 0.01), True)}
SIMULATIONS = (0, 1, 2, 3, 4, 5, 6)
#: shared effect knobs a free design (simulation=0) reads
_EFFECT_KNOBS = ("effect.att", "effect.dynamics", "effect.ramp_years", "effect.slope",
                 "effect.het_sd", "effect.het_cohort")


@dataclass
class StaggeredDGP:
    """Parameters of the staggered firm panel (``data=staggered``)."""

    # Baker-Larcker-Wang simulation 1-6 (cohorts and effects fixed by the paper); 0 = a
    # free design from cohorts / cohort_shares / trend_slope and the effect knobs
    simulation: int = 6
    n_units: int = 1000          # firms (working-paper version: 1000)
    n_states: int = 50           # states of incorporation; treatment is assigned by state
    first_year: int = 1980       # Compustat 1980-2015 (JFE Section 3.1)
    last_year: int = 2015
    unit_sd: float = 0.5         # SD of firm effects (working-paper version: 0.5)
    year_sd: float = 0.5         # SD of year effects (0.5)
    noise_sd: float = 0.5        # SD of the iid firm-year residual (0.5)
    # simulation=0 only: first treated years and the share of states in each (the rest
    # never treated); e.g. cohorts [2005], cohort_shares [0.5]
    cohorts: List[int] = field(default_factory=lambda: [1998])
    cohort_shares: List[float] = field(default_factory=lambda: [0.5])
    # simulation=0 only: treated units' untreated outcome gains trend_slope per year
    # relative to the others, zero in the year before their cohort (breaks parallel trends)
    trend_slope: float = 0.0

    @property
    def years(self) -> np.ndarray:
        """The panel's years."""
        return np.arange(self.first_year, self.last_year + 1)

    @property
    def sd_roa(self) -> float:
        """Population SD of the untreated outcome: the unit of BLW's effects."""
        return float(np.sqrt(self.unit_sd**2 + self.year_sd**2 + self.noise_sd**2))

    def plan(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(cohort years, cumulative number of states up to each cohort)."""
        if self.simulation:
            cohorts = BLW_COHORTS[self.simulation]
            cuts = tuple(int(round(c * self.n_states / 50)) for c in BLW_STATE_CUTS[self.simulation])
        else:
            cohorts = tuple(int(c) for c in self.cohorts)
            cuts = tuple(int(round(c * self.n_states))
                         for c in np.cumsum(np.asarray(self.cohort_shares, dtype=float)))
        return cohorts, cuts

    def validate(self) -> None:
        """Raise :class:`~estimators.panel.OptionError` naming the first bad key."""
        if self.simulation not in SIMULATIONS:
            raise OptionError(f"data.simulation={self.simulation!r} must be one of "
                              f"{list(SIMULATIONS)} (Baker-Larcker-Wang 1-6; 0 = free design)")
        if self.n_states < 2:
            raise OptionError(f"data.n_states={self.n_states} must be >= 2")
        if self.n_units < self.n_states:
            raise OptionError(f"data.n_units={self.n_units} must be >= data.n_states="
                              f"{self.n_states}")
        if self.last_year < self.first_year + 2:
            raise OptionError(f"data.last_year={self.last_year} must be at least two years "
                              f"after data.first_year={self.first_year}")
        for name in ("unit_sd", "year_sd", "noise_sd"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise OptionError(f"data.{name}={value} must be a finite number >= 0")
        if not np.isfinite(self.trend_slope):
            raise OptionError(f"data.trend_slope={self.trend_slope} must be a finite number")
        if self.simulation:
            if self.trend_slope != 0:
                raise OptionError(f"data.trend_slope={self.trend_slope} needs data.simulation=0: "
                                  "Baker-Larcker-Wang's simulations hold parallel trends")
        else:
            if len(self.cohorts) != len(self.cohort_shares) or not self.cohorts:
                raise OptionError(f"data.cohorts={list(self.cohorts)} and data.cohort_shares="
                                  f"{list(self.cohort_shares)} must be non-empty and of equal "
                                  "length")
            shares = np.asarray(self.cohort_shares, dtype=float)
            if (shares <= 0).any() or shares.sum() > 1 + 1e-12:
                raise OptionError(f"data.cohort_shares={list(self.cohort_shares)} must be "
                                  "positive and sum to at most 1")
            if len(set(self.cohorts)) != len(self.cohorts):
                raise OptionError(f"data.cohorts={list(self.cohorts)} repeats a year")
        cohorts, cuts = self.plan()
        for g in cohorts:
            if not self.first_year < g <= self.last_year:
                raise OptionError(f"cohort {g} leaves no pre- or post-treatment year inside "
                                  f"data.first_year-data.last_year ({self.first_year}-"
                                  f"{self.last_year})")
        if np.any(np.diff((0, *cuts)) < 1):
            raise OptionError(f"data.n_states={self.n_states} leaves a cohort without a state")

    def design_support(self) -> DesignSupport:
        """The shared knobs this panel reads: none of assignment and timing (states are
        ordered at random and the cohorts are data.* keys); the effect knobs only under
        ``simulation=0`` (BLW's simulations fix the effect)."""
        why = ("data=staggered assigns states to cohorts in a random order (data.simulation "
               "or data.cohorts / data.cohort_shares)")
        ignores = {k: why for k in KNOB_DEFAULTS if k.split(".")[0] in ("assignment", "timing")}
        if self.simulation:
            fixed = (f"data.simulation={self.simulation} fixes the effect (Baker, Larcker and "
                     "Wang 2022); use data.simulation=0 for the effect knobs")
            ignores.update({k: fixed for k in KNOB_DEFAULTS if k.startswith("effect.")})
        else:
            ignores.update({k: "the effect varies by exposure, cohort and unit only"
                            for k in KNOB_DEFAULTS
                            if k.startswith("effect.") and k not in _EFFECT_KNOBS})
        name = (f"data=staggered with data.simulation={self.simulation}")
        return DesignSupport(name, self.n_units, ignores)


def draw(dgp: StaggeredDGP, assignment: Assignment, timing: Timing, effect: Effect,
         rng: np.random.Generator) -> pd.DataFrame:
    """Draw one panel.

    Random numbers, in this order: each firm's state (uniform over ``n_states``), the
    states' random order, firm effects, year effects, residuals (firm-major), then under
    ``simulation=0`` with ``effect.het_sd > 0`` one unit effect per firm.

    Returns the canonical panel (``unit``, ``time``, ``cohort``, ``d``) with outcome
    ``roa``, the firm's ``state`` (cluster on it, as the paper does) and truth columns
    ``y0_roa``, ``te_roa``.
    """
    dgp.validate()
    validate_design(dgp, assignment, timing, effect)
    years = dgp.years
    n, t_n = dgp.n_units, years.size
    cohorts, cuts = dgp.plan()

    state = rng.integers(0, dgp.n_states, size=n)
    rank = np.empty(dgp.n_states, dtype=np.int64)
    rank[rng.permutation(dgp.n_states)] = np.arange(dgp.n_states)  # state -> its place
    # the state's place picks its cohort: places [cuts[j-1], cuts[j]) get cohorts[j]
    slot = np.searchsorted(np.asarray(cuts), rank[state], side="right")
    cohort_of = np.r_[np.asarray(cohorts, dtype=np.int64), 0]
    cohort = cohort_of[slot]

    alpha = dgp.unit_sd * rng.standard_normal(n)
    lam = dgp.year_sd * rng.standard_normal(t_n)
    eps = dgp.noise_sd * rng.standard_normal((n, t_n))

    t_grid = np.broadcast_to(years[None, :], (n, t_n))
    c_grid = np.broadcast_to(cohort[:, None], (n, t_n))
    treated = cohort[:, None] > 0
    k = np.where(treated, t_grid - c_grid, -1)          # event time; -1 for never treated
    if dgp.simulation:
        levels, dynamic = BLW_EFFECTS[dgp.simulation]
        level = np.r_[np.asarray(levels, dtype=float), 0.0][slot][:, None] * dgp.sd_roa
        te = np.where(k >= 0, level * ((k + 1) if dynamic else 1.0), 0.0)
    else:
        first = min(cohorts)
        shift = effect.het_cohort * np.where(cohort > 0, cohort - first, 0)
        if effect.het_sd > 0:
            shift = shift + effect.het_sd * rng.standard_normal(n)
        te = np.where(k >= 0, effect.path(k) + shift[:, None], 0.0)
    y0 = alpha[:, None] + lam[None, :] + eps
    if dgp.trend_slope:
        # zero at g - 1 (the event study's reference period), linear in calendar time
        y0 = y0 + dgp.trend_slope * np.where(treated, k + 1, 0)
    d = treatment_from_cohort(c_grid, t_grid)
    return pd.DataFrame({
        UNIT: np.repeat(np.arange(1, n + 1), t_n),
        TIME: t_grid.ravel(),
        COHORT: c_grid.ravel(),
        D: d.ravel(),
        "roa": (y0 + te).ravel(),
        "state": np.repeat(state + 1, t_n),
        "y0_roa": y0.ravel(),
        "te_roa": te.ravel(),
    })


SIMULATOR = Simulator(
    kind="staggered",
    dgp=StaggeredDGP,
    draw=draw,
    outcomes=("roa",),
    summary=("Firm panel 1980-2015 with treatment by state of incorporation: Baker, "
             "Larcker and Wang's (2022, JFE) six staggered-adoption simulations "
             "(data.simulation=1..6), or a free design with a differential trend "
             "(data.simulation=0)"),
)
