"""Dataclass schemas of every config group, registered in Hydra's ConfigStore.

Estimator schemas are not written here: :func:`estimator_schema` derives each from its
class in the catalogue (``estimators/catalog.py``), so an option is declared once, in the
estimator's dataclass. A config default that must differ from the class's is written in
the option's YAML file (``conf/estimator/*.yaml``), where a test checks it is stated.

A misspelt key or a wrong type fails when the config is composed. String choices are
validated when the config is used (OmegaConf 2.3 rejects ``typing.Literal``), with errors
that list the accepted values. Schemas are mutable dataclasses: frozen ones would block
command-line overrides.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING

from estimators import catalog
from estimators.catalog import (REQUIRED, Entry, is_optional, is_sequence_type,
                                renamed_options)
from simulate.city import CityDGP
from simulate.design import Assignment, Effect, Timing
from simulate.province import CONTROLS, ProvinceDGP


@dataclass
class ChannelConf:
    """A mediator channel of the province simulator (simulate/mediators.py)."""

    mediator: str = "lnes"
    a: float = 0.0                 # effect of treatment on the mediator
    b: Optional[float] = None      # effect of the mediator on the outcome (None: Table 4's)
    lag: int = 0                   # the outcome responds `lag` years later
    trend_sd: float = 0.0          # unobserved trend shared with the outcome (confounding)


@dataclass
class ProvinceData(ProvinceDGP):
    """The simulated province panel (seed 002's design)."""

    kind: str = "province"
    outcomes: List[str] = field(default_factory=lambda: ["lnce", "lncei"])
    controls: List[str] = field(default_factory=lambda: list(CONTROLS))
    # a short list for propensity scores: with six covariates and six pilots the logit
    # separates in most draws
    score_covariates: List[str] = field(default_factory=lambda: ["lnpgdp", "lnes"])
    # mediator channels: the policy moves these covariates, which move the outcome
    channels: List[ChannelConf] = field(default_factory=list)
    # display names of variables in figures and tables (column -> label)
    labels: Dict[str, str] = field(default_factory=dict)


@dataclass
class CityData(CityDGP):
    """The simulated city panel (seed 001's setting: 282 cities, staggered adoption)."""

    kind: str = "city"
    outcomes: List[str] = field(default_factory=lambda: ["nqpf"])
    controls: List[str] = field(default_factory=lambda: ["lnpgdp"])
    score_covariates: List[str] = field(default_factory=lambda: ["lnpgdp"])
    # display names of variables in figures and tables (column -> label)
    labels: Dict[str, str] = field(default_factory=dict)


@dataclass
class FileData:
    """A user's panel read from a CSV, Parquet or Stata file (see experiments/realdata.py)."""

    kind: str = "file"
    path: str = MISSING
    format: Optional[str] = None        # csv | parquet | dta (default: from the extension)
    unit: str = "unit"                  # file column naming the unit
    time: str = "time"                  # file column holding the year
    cohort: Optional[str] = None        # file column: first treated year (0/empty = never)
    treatment: Optional[str] = None     # or a 0/1 treatment column
    treated_units: List[str] = field(default_factory=list)  # or these units...
    treatment_year: Optional[int] = None                    # ...treated from this year
    derive: Dict[str, str] = field(default_factory=dict)    # new column -> expression
    # composite indices by the entropy-weight method: name -> {indicator: 1 or -1}
    indices: Dict[str, Dict[str, int]] = field(default_factory=dict)
    filter: Optional[str] = None        # pandas query applied after deriving
    outcomes: List[str] = field(default_factory=list)
    controls: List[str] = field(default_factory=list)
    score_covariates: List[str] = II("data.controls")
    allow_gaps: bool = False
    drop_missing: bool = False
    # display names of variables in figures and tables (column -> label)
    labels: Dict[str, str] = field(default_factory=dict)


@dataclass
class PlaceboConf:
    """What experiment=placebo runs around each base estimator."""

    base: List[str] = field(default_factory=lambda: ["twfe", "twfe_controls"])
    shifts: List[int] = field(default_factory=lambda: [1, 2, 3])
    n_perm: int = 9999
    statistic: str = "t"
    exact: str = "false"
    max_exact: int = 1_000_000
    strata: Optional[str] = None


@dataclass
class BDMConf:
    """The Bertrand-Duflo-Mullainathan placebo of experiment=calibrate (fake pilots among
    the file's never-treated units, their real outcomes)."""

    # an effect injected into the fake pilots' treated cells: 0 measures size only, any
    # other value adds a second cell whose coverage and power are measured against it
    effect: float = 0.0
    # draw the fake pilots with probability rising in this column's first-period value
    # (selection on observables, as the real pilots were chosen); null: uniform
    selection: Optional[str] = None
    strength: float = 2.0


@dataclass
class SpecConf:
    """The choices a specification curve crosses (experiment=spec_curve)."""

    outcomes: List[str] = II("experiment.outcomes")
    # named control sets
    controls: Dict[str, List[str]] = field(default_factory=lambda: {"none": []})
    # year effects, or group-by-year effects named by a unit-level column (e.g. region)
    time_effects: List[str] = field(default_factory=lambda: ["year"])
    cluster: List[str] = field(default_factory=lambda: ["unit"])
    # common treatment dates to try for the treated units (empty: the data's own dates)
    treatment_year: List[int] = field(default_factory=list)
    # named sample restrictions (pandas queries; "" keeps every row)
    samples: Dict[str, str] = field(default_factory=lambda: {"all": ""})
    estimators: List[str] = field(default_factory=lambda: ["twfe"])  # twfe | event_study
    alpha: float = 0.05            # level of every specification's test and interval


@dataclass
class SensitivityConf:
    """What experiment=sensitivity computes."""

    target: str = "average"        # average of the post effects, or an event time (0, 1, ...)
    m_grid: List[float] = field(default_factory=list)      # empty: a grid from the SEs
    mbar_grid: List[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
    alpha: float = 0.05
    # Rambachan-Roth procedures: smoothness flci | c-lf | conditional;
    # relative magnitudes c-lf | conditional | bonferroni (HonestDiD's defaults: flci, c-lf)
    smoothness_method: str = "flci"
    rm_method: str = "c-lf"


@dataclass
class DossierConf:
    """What experiment=dossier runs around the headline fits (the estimator group's list)."""

    # placebo | spec_curve | sensitivity | calibrate | montecarlo (run in parallel where
    # independent; a part left out is listed as not run)
    parts: List[str] = field(default_factory=lambda: ["placebo", "spec_curve", "sensitivity",
                                                      "calibrate", "montecarlo"])
    # labels of the event-time estimators given honest sets (empty: every event-time fit;
    # a long window makes the fixed-length intervals slow)
    sensitivity_estimators: List[str] = field(default_factory=list)
    # name -> inference options, tried on every headline estimator whose options accept
    # them (its check() decides), on the panel and in the Monte Carlo
    inference: Dict[str, Any] = field(default_factory=dict)
    # later common treatment dates tried by the specification curve, in periods after the
    # data's date (single-cohort panels; experiment.spec.treatment_year, if set, wins)
    date_shifts: List[int] = field(default_factory=lambda: [1, 2])
    # labels left out of the Monte Carlo (slow fits; they stay in every other part)
    mc_exclude: List[str] = field(default_factory=list)
    # effect injected in the Monte Carlo's second cell; null: the median ATT estimate
    # (simulated data: the configured effect)
    mc_effect: Optional[float] = None
    alpha: float = 0.05            # level of the verdict's tests
    spec_share: float = 0.9        # share of specifications that must agree to "survive"


@dataclass
class BackendConf:
    # sequential | loky (all cores on this machine) | dask (a scheduler address, or a
    # LocalCluster started for the run when address is null)
    kind: str = "loky"
    n_jobs: int = -1
    address: Optional[str] = None
    n_workers: int = 2
    threads_per_worker: int = 1


@dataclass
class ExperimentConf:
    # single: one draw, every estimator, a table and an event-study figure;
    # montecarlo: n_reps draws and the diagnosands; placebo: timing placebo, fake-pilot
    # randomization inference and leave-one-out on one panel; estimate: the configured
    # estimators on one panel with a paper-style regression table
    kind: str = "single"
    name: str = "single"
    n_reps: int = 1
    chunk_size: int = 25
    outcomes: List[str] = II("data.outcomes")  # the data's outcomes unless an experiment says
    # cells run inside one (non-multirun) job: group -> list of options of that group
    # axis group -> options, or a key inside an axis group (data.rho) -> values
    grid: Dict[str, List[Any]] = field(default_factory=dict)
    # where resumable chunks live, keyed by a hash of everything that fixes the numbers
    store: str = "outputs/store"
    progress: bool = True
    figures: bool = True
    placebo: PlaceboConf = field(default_factory=PlaceboConf)
    bdm: BDMConf = field(default_factory=BDMConf)
    spec: SpecConf = field(default_factory=SpecConf)
    sensitivity: SensitivityConf = field(default_factory=SensitivityConf)
    dossier: DossierConf = field(default_factory=DossierConf)


@dataclass
class Config:
    defaults: List[Any] = field(default_factory=lambda: [
        "_self_",
        {"data": "province"},
        {"assignment": "actual"},
        {"timing": "notice_2011"},
        {"effect": "constant"},
        {"estimator": ["twfe", "twfe_controls", "event_study"]},
        {"backend": "loky"},
        {"experiment": None},
        # settings an experiment needs only with one data option, e.g. robustness_province
        {"optional experiment_data": "${experiment}_${data}"},
    ])
    seed: int = 0
    data: Any = MISSING
    assignment: Assignment = MISSING
    timing: Timing = MISSING
    effect: Effect = MISSING
    estimator: Dict[str, Any] = field(default_factory=dict)
    backend: BackendConf = MISSING
    experiment: ExperimentConf = field(default_factory=ExperimentConf)


def _config_type(tp: Any) -> Any:
    """The OmegaConf type of an estimator option's Python type: sequences become lists,
    ``X | None`` becomes ``Optional[X]`` for primitives, anything OmegaConf cannot type
    (unions of several kinds, estimator objects) becomes ``Any``."""
    if tp in PRIMITIVES:
        return tp
    args = typing.get_args(tp)
    if is_optional(tp):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and inner[0] in PRIMITIVES:
            return Optional[inner[0]]
        if len(inner) == 1 and is_sequence_type(inner[0]):
            return Optional[_config_type(inner[0])]
        return Any
    if is_sequence_type(tp):
        return List[args[0] if args and args[0] in PRIMITIVES else Any]
    origin = typing.get_origin(tp) or tp
    if isinstance(origin, type) and issubclass(origin, Mapping):
        return Dict[str, Any]
    return Any


PRIMITIVES = (str, int, float, bool)


def estimator_schema(entry: Entry) -> type:
    """The Hydra schema of a catalogue entry, derived from its dataclass: the same option
    names, types and defaults, plus ``kind``; a required option (no class default) is
    MISSING and must be set by the option's YAML file. Old option names are accepted as
    keys (``None`` unless given) and mapped, with a warning, when the estimator is built."""
    specs: list[tuple[str, Any, Any]] = [("kind", str, field(default=entry.kind))]
    for opt in entry.options():
        tp = _config_type(opt.type)
        if opt.default is REQUIRED:
            f = field(default=MISSING)
        elif isinstance(opt.default, (list, tuple)):
            f = field(default_factory=functools.partial(list, opt.default))
        elif isinstance(opt.default, Mapping):
            f = field(default_factory=functools.partial(dict, opt.default))
        else:
            f = field(default=opt.default)
        specs.append((opt.name, tp, f))
    for old in renamed_options(entry.cls):
        specs.append((old, Any, field(default=None)))
    return make_dataclass(f"{entry.cls.__name__}Conf", specs)


def estimator_schemas() -> dict[str, type]:
    """kind -> derived schema, for every catalogue entry."""
    return {e.kind: estimator_schema(e) for e in catalog.entries()}


def register() -> None:
    """Register the schemas and the ``didlab_root`` resolver (idempotent)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("didlab_root"):
        # where the project lives, so shipped example files resolve from any working directory
        OmegaConf.register_new_resolver("didlab_root",
                                        lambda: str(Path(__file__).resolve().parent.parent))
    cs = ConfigStore.instance()
    cs.store(name="didlab_base", node=Config)
    # schemas live under schema/ so that `didlab --help` lists only real options per group;
    # each option file extends its schema with `- /schema/<group>/<name>@_here_`
    cs.store(group="schema/data", name="province", node=ProvinceData)
    cs.store(group="schema/data", name="city", node=CityData)
    cs.store(group="schema/data", name="file", node=FileData)
    from simulate import registry

    for sim in registry.simulators().values():   # the methods literature's simulators
        cs.store(group="schema/data", name=sim.kind, node=sim.schema())
    cs.store(group="schema/assignment", name="base", node=Assignment)
    cs.store(group="schema/timing", name="base", node=Timing)
    cs.store(group="schema/effect", name="base", node=Effect)
    cs.store(group="schema/backend", name="base", node=BackendConf)
    cs.store(group="schema/experiment", name="base", node=ExperimentConf)
    for kind, schema in estimator_schemas().items():
        cs.store(group="schema/estimator", name=kind, node=schema)
