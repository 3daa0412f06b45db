"""Who is treated, when, and by how much: the knobs shared by every simulator.

These are plain (mutable, OmegaConf-compatible) dataclasses so that the experiments layer
can use them directly as Hydra schemas; the simulators treat them as read-only.
Each knob's comment names the assumption it breaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Protocol, Sequence, Union

import numpy as np

from estimators.panel import OptionError, check_choice

ASSIGNMENTS = ("actual", "random", "selected")
TIMINGS = ("common", "market_open")
OPEN_RULES = ("year_opened", "first_full_half")
DYNAMICS = ("constant", "ramp", "growing")

#: a pilot's recorded treatment date: a market opening (year, month, day), or a bare first
#: treated year where only that is known (a cohort fitted to a panel)
Date = Union[tuple[int, int, int], int]


@dataclass
class Assignment:
    """Which units are pilots."""

    kind: str = "actual"      # actual pilots; random pilots; pilots selected on observables
    n_pilots: int = 6         # number of pilots drawn (random / selected)
    # selected: P(pilot) grows with exp(strength * standardised baseline log GDP per capita);
    # breaks "as good as random" assignment -- harmful when outcomes trend with that variable
    strength: float = 2.0

    def validate(self, n_units: int) -> None:
        check_choice("assignment.kind", self.kind, ASSIGNMENTS)
        if self.kind != "actual" and not 1 <= self.n_pilots < n_units:
            raise OptionError(
                f"assignment.n_pilots={self.n_pilots} must lie between 1 and {n_units - 1}"
            )


@dataclass
class Timing:
    """When treatment starts."""

    kind: str = "common"      # common date for all pilots, or each pilot's market opening
    year: int = 2011          # common date (2011 notice in seed 002, 2012 in seed 000)
    # market_open: how an opening date maps to a first treated year. year_opened: the
    # calendar year of the first trade; first_full_half: the next year when the market
    # opened after 30 June
    open_rule: str = "year_opened"
    # effect starts this many years before the recorded date; breaks "no anticipation"
    anticipation: int = 0

    def validate(self) -> None:
        check_choice("timing.kind", self.kind, TIMINGS)
        check_choice("timing.open_rule", self.open_rule, OPEN_RULES)
        if self.anticipation < 0:
            raise OptionError(f"timing.anticipation={self.anticipation} must be >= 0")


@dataclass
class Effect:
    """How large the effect is, how it evolves with exposure, and for whom."""

    att: float = -0.3         # effect on the log outcome at full strength (Table 4: -0.29..-0.33)
    # constant: same every treated year; ramp: grows linearly to att over ramp_years;
    # growing: att + slope * years since treatment. Dynamics bias TWFE under staggering.
    dynamics: str = "constant"
    ramp_years: int = 3
    slope: float = -0.02
    # unit-level heterogeneity: SD of the unit effect around att
    het_sd: float = 0.0
    # effect changes by this much per SD of baseline log GDP per capita; with selection on
    # GDP, the ATT differs from the average effect
    het_pgdp: float = 0.0
    # effect changes by this much per year of later adoption (cohort heterogeneity; city
    # panel). Biases TWFE under staggered adoption
    het_cohort: float = 0.0

    def validate(self) -> None:
        for name in ("att", "slope", "het_sd", "het_pgdp", "het_cohort"):
            value = getattr(self, name)
            if not np.isfinite(value):
                raise OptionError(f"effect.{name}={value} must be a finite number")
        check_choice("effect.dynamics", self.dynamics, DYNAMICS)
        if self.ramp_years < 1:
            raise OptionError(f"effect.ramp_years={self.ramp_years} must be >= 1")
        if self.het_sd < 0:
            raise OptionError(f"effect.het_sd={self.het_sd} must be >= 0")

    def path(self, k: np.ndarray) -> np.ndarray:
        """Effect multiplier profile at event time ``k`` (0 = first treated period), before
        unit heterogeneity; zero before treatment."""
        k = np.asarray(k, dtype=float)
        if self.dynamics == "constant":
            base = np.full_like(k, self.att)
        elif self.dynamics == "ramp":
            base = self.att * np.minimum(1.0, (k + 1) / self.ramp_years)
        else:
            base = self.att + self.slope * k
        return np.where(k >= 0, base, 0.0)


def pick_pilots(scores: np.ndarray, n: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` distinct units with probabilities proportional to ``exp(strength*score)``
    sequentially without replacement (Gumbel top-k trick). ``strength = 0`` is uniform."""
    gumbel = rng.gumbel(size=scores.shape[0])
    return np.sort(np.argsort(-(strength * scores + gumbel))[:n])


def first_treated_year(date: Date, timing: Timing) -> int:
    """The first treated year ``timing`` gives a pilot recorded at ``date``.

    ``timing.kind="common"``: ``timing.year`` whatever the date. ``"market_open"``: the
    opening year, or the next one under ``open_rule="first_full_half"`` when the market
    opened after 30 June. A bare year has no month, so it is its own first year.
    """
    if timing.kind == "common":
        return int(timing.year)
    if isinstance(date, (int, np.integer)):
        return int(date)
    y, m, d = date
    return y + 1 if (timing.open_rule == "first_full_half" and (m, d) > (6, 30)) else y


def assign_cohorts(
    assignment: Assignment,
    timing: Timing,
    years: np.ndarray,
    actual: np.ndarray,
    dates: Sequence[Date],
    score: np.ndarray,
    rng: np.random.Generator,
    n_pilots: int | None = None,
) -> np.ndarray:
    """Cohort (first treated year, 0 = never treated) of each unit: who is treated, from when.

    The one treatment assignment of every simulator.

    Parameters
    ----------
    assignment
        ``actual``: the units in ``actual`` are the pilots, each with its own date.
        ``random`` / ``selected``: pilots are drawn by :func:`pick_pilots` on the
        standardised ``score`` (strength 0 for random, ``assignment.strength`` for
        selected) and receive the actual pilots' dates in random order.
    timing
        Maps each date to a first treated year (:func:`first_treated_year`). The effect's
        anticipation is not applied here: cohorts are the recorded dates.
    years
        The panel's years; every treated cohort needs a pre- and a post-treatment year.
    actual
        Indices of the actual pilots, in the order of ``dates``.
    dates
        Each actual pilot's recorded date.
    score
        One value per unit (baseline log GDP per capita, say); its length is the number of
        units. Only drawn pilots use it.
    rng
        Used by ``random`` / ``selected`` only: one Gumbel draw per unit
        (:func:`pick_pilots`), then one permutation of the drawn pilots' dates, in that order.
    n_pilots
        How many pilots ``random`` / ``selected`` draw; ``None`` draws as many as there are
        actual pilots, which keeps the cohort sizes. With more pilots than dates the dates
        repeat cyclically.

    Returns
    -------
    numpy.ndarray
        The int64 cohort of each unit.

    Raises
    ------
    OptionError
        When a treated cohort leaves no pre- or post-treatment year inside ``years``.
    """
    n_units = score.shape[0]
    first = np.array([first_treated_year(d, timing) for d in dates], dtype=np.int64)
    if assignment.kind == "actual":
        pilots = np.asarray(actual, dtype=np.int64)
        pilot_cohorts = first
    else:
        strength = assignment.strength if assignment.kind == "selected" else 0.0
        # a constant score (no covariate to select on) leaves z at zero: uniform draws
        z = (score - score.mean()) / (score.std() or 1.0)
        pilots = pick_pilots(z, len(actual) if n_pilots is None else n_pilots, strength, rng)
        # permuting positions, not the dates themselves, lets n_pilots exceed the number of
        # dates; for a 1-D array rng.permutation(a) equals a[rng.permutation(a.size)], so the
        # draw is the one every simulator made before it shared this function
        pilot_cohorts = first[rng.permutation(pilots.size) % first.size]
    cohort = np.zeros(n_units, dtype=np.int64)
    cohort[pilots] = pilot_cohorts
    if (pilot_cohorts > years[-1]).any() or (pilot_cohorts <= years[0]).any():
        raise OptionError(
            f"treatment year(s) {sorted(set(pilot_cohorts.tolist()))} leave no pre- or "
            f"post-treatment period inside {years[0]}-{years[-1]}"
        )
    return cohort


# --- which knobs a simulator reads --------------------------------------------------------

#: every shared design knob, as "group.field", with its default
KNOB_DEFAULTS: dict[str, Any] = {
    f"{group}.{f.name}": f.default
    for group, cls in (("assignment", Assignment), ("timing", Timing), ("effect", Effect))
    for f in fields(cls)
}


def design_values(assignment: Assignment, timing: Timing, effect: Effect) -> dict[str, Any]:
    """The current value of every knob in :data:`KNOB_DEFAULTS`, by the same names."""
    groups = {"assignment": assignment, "timing": timing, "effect": effect}
    return {key: getattr(groups[key.split(".")[0]], key.split(".")[1]) for key in KNOB_DEFAULTS}


@dataclass(frozen=True)
class DesignSupport:
    """A simulator's declaration of the shared design knobs it reads.

    Attributes
    ----------
    simulator
        The simulator as the user names it in a config, e.g. ``"data=city"``.
    n_units
        Its number of units (bounds ``assignment.n_pilots`` where that is read).
    ignores
        Knob (a key of :data:`KNOB_DEFAULTS`) -> why the simulator does not read it, or what
        to use instead. Such a knob must keep its default: a changed value would be dropped
        without a word. Every other knob is honoured.
    """

    simulator: str
    n_units: int
    ignores: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.ignores) - set(KNOB_DEFAULTS))
        if unknown:  # a typo here would let the knob through unchecked
            raise ValueError(f"{self.simulator} declares unknown design knobs {unknown}")

    @property
    def honours(self) -> frozenset[str]:
        """The knobs the simulator reads (all but :attr:`ignores`)."""
        return frozenset(KNOB_DEFAULTS) - frozenset(self.ignores)


class SimulatorParams(Protocol):
    """A simulator's parameter dataclass (``ProvinceDGP``, ``CityDGP``, ``CalibratedDGP``)."""

    def design_support(self) -> DesignSupport: ...


def validate_design(dgp: SimulatorParams, assignment: Assignment, timing: Timing,
                    effect: Effect) -> None:
    """Check the shared design knobs against the simulator that will draw with ``dgp``.

    Checks each knob's own range (:meth:`Timing.validate`, :meth:`Effect.validate`,
    ``assignment.kind``), then refuses any knob the simulator ignores
    (:meth:`DesignSupport.ignores`) set away from its default, then the number of pilots
    where the simulator draws that many. Draws nothing.

    Raises
    ------
    OptionError
        With one line naming the first offending key, its value and what is accepted.
    """
    support = dgp.design_support()
    check_choice("assignment.kind", assignment.kind, ASSIGNMENTS)
    timing.validate()
    effect.validate()
    values = design_values(assignment, timing, effect)
    for key, why in support.ignores.items():
        if values[key] != KNOB_DEFAULTS[key]:
            raise OptionError(
                f"{key}={values[key]!r} is ignored by {support.simulator}, which accepts only "
                f"{key}={KNOB_DEFAULTS[key]!r}: {why}"
            )
    # only a simulator that draws n_pilots pilots needs them to fit among its units
    if "assignment.n_pilots" in support.honours:
        assignment.validate(support.n_units)
