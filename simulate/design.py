"""Who is treated, when, and by how much: the knobs shared by every simulator.

These are plain (mutable, OmegaConf-compatible) dataclasses so that the experiments layer
can use them directly as Hydra schemas; the simulators treat them as read-only.
Each knob's comment names the assumption it breaks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from estimators.panel import OptionError, check_choice

ASSIGNMENTS = ("actual", "random", "selected")
TIMINGS = ("common", "market_open")
OPEN_RULES = ("year_opened", "first_full_half")
DYNAMICS = ("constant", "ramp", "growing")


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
