"""The registry of simulators beyond the two carbon-pilot panels.

``data=province`` and ``data=city`` (and ``data=calibrated``, fitted to a user's file) are
wired by hand in :mod:`experiments.build` and :mod:`experiments.schema`: they carry extras
(mediator channels, a calibration file) that no other simulator has. Every other
data-generating process -- the methods literature's designs: a 50-state panel with
serially correlated outcomes, a staggered-adoption firm panel -- registers here once, and
the config schema, ``data=<kind>`` and the Monte Carlo engine find it through this list.

A simulator module provides

- a DGP dataclass whose fields are its ``data.*`` knobs (plain types, defaults set), with
  ``validate()`` (raise :class:`~estimators.panel.OptionError` naming the key, its value and
  what is accepted) and ``design_support()`` (the shared ``assignment`` / ``timing`` /
  ``effect`` knobs it reads: :func:`simulate.design.validate_design` refuses the others when
  set away from their defaults);
- a module-level, picklable ``draw(dgp, assignment, timing, effect, rng) -> panel`` that
  returns the canonical panel (``unit``, ``time``, ``cohort``, ``d``, outcomes, and truth
  columns ``y0_<outcome>`` / ``te_<outcome>``) and takes every random number from ``rng``;
- ``SIMULATOR = Simulator(kind=..., dgp=..., draw=..., outcomes=..., summary=...)``.

A knob that makes untreated trends differ between treated and control units must be
listed in ``experiments.montecarlo_run.TREND_KEYS``, so that reports do not call a
pre-test's rejections false where the design breaks parallel trends on purpose.

Adding one: write the module, add its import path to :data:`MODULES`, and add
``conf/data/<kind>.yaml`` with ``defaults: [/schema/data/<kind>@_here_, _self_]``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List

import pandas as pd

#: simulator modules, each defining ``SIMULATOR``; a module that does not exist (yet) is
#: skipped, one that fails to import raises
MODULES: tuple[str, ...] = (
    "simulate.states",
    "simulate.staggered",
)


@dataclass(frozen=True)
class Simulator:
    """One registered data-generating process.

    Attributes
    ----------
    kind
        The ``data=<kind>`` name.
    dgp
        The DGP dataclass: its fields are the ``data.*`` knobs.
    draw
        ``draw(dgp, assignment, timing, effect, rng) -> panel`` (module level: picklable).
    outcomes
        The outcome columns a draw carries (``experiment.outcomes`` picks among them).
    controls
        Covariate columns, for estimators with controls or propensity scores.
    summary
        One line: what the panel is and where its parameters come from.
    """

    kind: str
    dgp: type
    draw: Callable[..., pd.DataFrame]
    outcomes: tuple[str, ...]
    controls: tuple[str, ...] = ()
    summary: str = ""

    def schema(self) -> type:
        """The Hydra schema of ``data=<kind>``: the DGP's fields plus the keys every data
        config has (``kind``, ``outcomes``, ``controls``, ``score_covariates``,
        ``labels``)."""
        outcomes, controls = list(self.outcomes), list(self.controls)
        extra: list[tuple[str, Any, Any]] = [
            ("kind", str, field(default=self.kind)),
            ("outcomes", List[str], field(default_factory=lambda: list(outcomes))),
            ("controls", List[str], field(default_factory=lambda: list(controls))),
            ("score_covariates", List[str], field(default_factory=lambda: list(controls))),
            ("labels", Dict[str, str], field(default_factory=dict)),
        ]
        taken = {f.name for f in dataclasses.fields(self.dgp)}
        clash = taken & {name for name, _, _ in extra}
        if clash:
            raise TypeError(f"{self.dgp.__name__} fields {sorted(clash)} clash with data "
                            "config keys")
        return dataclasses.make_dataclass(f"{self.dgp.__name__}Data", extra, bases=(self.dgp,))


_CACHE: dict[str, Simulator] | None = None


def simulators() -> dict[str, Simulator]:
    """kind -> :class:`Simulator`, for every module of :data:`MODULES` that exists."""
    global _CACHE
    if _CACHE is None:
        found: dict[str, Simulator] = {}
        for name in MODULES:
            if importlib.util.find_spec(name) is None:
                continue
            sim = importlib.import_module(name).SIMULATOR
            if sim.kind in found or sim.kind in ("province", "city", "calibrated", "file"):
                raise TypeError(f"simulator kind {sim.kind!r} ({name}) is already taken")
            found[sim.kind] = sim
        _CACHE = found
    return _CACHE


def kinds() -> tuple[str, ...]:
    """The registered ``data=`` kinds."""
    return tuple(simulators())


def get(kind: str) -> Simulator:
    """The simulator registered as ``kind`` (KeyError if none)."""
    return simulators()[kind]
