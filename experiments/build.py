"""Turn a composed config into simulator and estimator objects (plain functions: no running Hydra app needed)."""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from estimators.panel import OptionError, check_choice
from simulate.city import CityDGP, draw_city
from simulate.design import Assignment, Effect, Timing
from simulate.province import ProvinceDGP, draw_province

from .schema import REGISTRY

#: estimator kind -> class (from the one registry in schema.py); labels in outputs are the
#: config keys, kinds pick the class
ESTIMATORS: dict[str, type] = {kind: cls for kind, (cls, _) in REGISTRY.items()}
EXACT = {"auto": "auto", "true": True, "false": False}
DATA_KINDS = ("province", "city", "file", "calibrated")
#: data-config keys that describe how the data is used, not the simulator's parameters
CONFIG_ONLY_DATA_KEYS = ("kind", "from", "source", "outcomes", "controls", "score_covariates",
                         "channels")
SIMULATED = ("province", "city", "calibrated")


def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _fields(cls: type, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    allowed = set(getattr(cls, "__dataclass_fields__", {}))
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise OptionError(f"{where}.{unknown[0]} is not an option; accepted: {sorted(allowed)}")
    return dict(values)


def build_estimator(label: str, spec: Mapping[str, Any], outcome: str) -> Any:
    """One estimator object for ``outcome`` from its config entry ``estimator.<label>``."""
    spec = dict(_plain(spec))
    kind = spec.pop("kind", None)
    check_choice(f"estimator.{label}.kind", kind, tuple(ESTIMATORS))
    cls = ESTIMATORS[kind]
    for key in ("controls", "covariates", "mediators", "lags", "quantiles"):
        if isinstance(spec.get(key), list):  # (event_study's lags is a number)
            spec[key] = tuple(spec[key])
    if isinstance(spec.get("baseline"), str) and spec["baseline"].isdigit():
        spec["baseline"] = int(spec["baseline"])  # a baseline year given on the command line
    if "base" in spec:  # a wrapper: build the estimator it wraps
        spec["base"] = build_estimator(f"{label}.base", spec["base"], outcome)
        if "exact" in spec:
            check_choice(f"estimator.{label}.exact", str(spec["exact"]).lower(), tuple(EXACT))
            spec["exact"] = EXACT[str(spec["exact"]).lower()]
        kwargs = _fields(cls, spec, f"estimator.{label}")
        return cls(label=label, **kwargs)
    kwargs = _fields(cls, spec, f"estimator.{label}")
    return cls(outcome=outcome, label=label, **kwargs)


def build_estimators(cfg: DictConfig, outcomes: list[str]) -> dict[tuple[str, str], Any]:
    """(outcome, label) -> estimator, for every configured estimator and outcome."""
    if not cfg.estimator:
        raise OptionError("no estimator configured; choose some, e.g. estimator=[twfe,event_study]")
    # a simulator has a fixed set of outcomes; a file's columns are checked when it is read
    known = list(cfg.data.get("outcomes", [])) if cfg.data.kind in SIMULATED else []
    for outcome in outcomes:
        if known and outcome not in known:
            raise OptionError(f"experiment.outcomes lists {outcome!r}, which data={cfg.data.kind} "
                              f"does not have; its outcomes: {known}")
    return {
        (outcome, label): build_estimator(label, spec, outcome)
        for outcome in outcomes
        for label, spec in cfg.estimator.items()
    }


def _dataclass(cls: type, node: Any, where: str, drop: tuple[str, ...] = ()) -> Any:
    values = {k: v for k, v in dict(_plain(node)).items() if k not in drop}
    return cls(**_fields(cls, values, where))


def build_draw(cfg: DictConfig) -> Callable[[np.random.Generator], pd.DataFrame]:
    """A picklable function ``rng -> panel`` for the configured design."""
    kind = cfg.data.kind
    check_choice("data.kind", kind, DATA_KINDS)
    if kind not in SIMULATED:
        raise OptionError(f"data={kind} is a file, not a simulator: Monte Carlo experiments need "
                          "data=province or data=city (or a calibrated config)")
    from simulate.calibrated import CalibratedDGP

    dgp_cls = {"province": ProvinceDGP, "city": CityDGP, "calibrated": CalibratedDGP}[kind]
    dgp = _dataclass(dgp_cls, cfg.data, "data", drop=CONFIG_ONLY_DATA_KEYS)
    assignment = _dataclass(Assignment, cfg.assignment, "assignment")
    timing = _dataclass(Timing, cfg.timing, "timing")
    effect = _dataclass(Effect, cfg.effect, "effect")
    # validate now: a bad value should stop the run before any worker starts
    dgp.validate()
    effect.validate()
    timing.validate()
    if effect.het_cohort != 0 and kind != "city":
        raise OptionError("effect.het_cohort is used by the city panel (data=city) only")
    if kind != "province":
        check_choice("assignment.kind", assignment.kind, ("actual", "random", "selected"))
        drawer = _draw_city if kind == "city" else _draw_calibrated
        return functools.partial(drawer, dgp, assignment, timing, effect)
    assignment.validate(30)
    from simulate.mediators import Channel, validate_channels

    channels = tuple(Channel(**dict(c)) for c in _plain(cfg.data.get("channels", [])))
    validate_channels(channels, dgp.years.size)
    return functools.partial(_draw_province, dgp, assignment, timing, effect, channels)


def _draw_province(dgp: ProvinceDGP, assignment: Assignment, timing: Timing, effect: Effect,
                   *args: Any) -> pd.DataFrame:
    # (channels, rng) or (rng,): the rng always comes last, as functools.partial appends it
    rng = args[-1]
    channels = args[0] if len(args) == 2 else ()
    return draw_province(rng, dgp, assignment, timing, effect, channels)


def _draw_city(dgp: CityDGP, assignment: Assignment, timing: Timing, effect: Effect,
               rng: np.random.Generator) -> pd.DataFrame:
    return draw_city(rng, dgp, assignment, timing, effect)


def file_spec(cfg: DictConfig) -> Any:
    """The :class:`~experiments.realdata.FileSpec` of a ``data=file`` config."""
    from .realdata import FileSpec

    if OmegaConf.is_missing(cfg.data, "path"):
        raise OptionError("data.path is not set: data=file needs data.path=PATH (.csv, .parquet or .dta)")
    values = {k: v for k, v in dict(_plain(cfg.data)).items()
              if k not in ("kind", "score_covariates")}
    values["treated_units"] = tuple(values.get("treated_units") or ())
    values["outcomes"] = tuple(cfg.experiment.outcomes)
    values["controls"] = tuple(values.get("controls") or ())
    return FileSpec(**_fields(FileSpec, values, "data"))


def load_or_draw(cfg: DictConfig) -> tuple[pd.DataFrame, list[str]]:
    """The panel a single-panel experiment works on: the user's file, or replicate 0 of
    the simulated design."""
    from .montecarlo import replicate_seed
    from .realdata import load_panel

    if cfg.data.kind == "file":
        return load_panel(file_spec(cfg))
    draw = build_draw(cfg)
    return draw(np.random.default_rng(replicate_seed(int(cfg.seed), 0))), []


def _draw_calibrated(dgp: Any, assignment: Assignment, timing: Timing, effect: Effect,
                     rng: np.random.Generator) -> pd.DataFrame:
    from simulate.calibrated import draw_calibrated

    return draw_calibrated(rng, dgp, assignment, timing, effect)


def resolve_calibrated(cfg: DictConfig) -> DictConfig:
    """Fill a ``data=calibrated`` config from its source file (user overrides win)."""
    if cfg.data.get("kind") != "calibrated":
        return cfg
    from .calibrate import load_calibration

    if OmegaConf.is_missing(cfg.data, "from"):
        raise OptionError("data=calibrated needs data.from=PATH to a calibrated.yaml written by "
                          "`didlab data=file ... experiment=calibrate`")
    source = cfg.data["from"]
    loaded = load_calibration(source)
    mine = {k: v for k, v in OmegaConf.to_container(cfg.data).items() if k not in ("kind", "from")}
    merged = OmegaConf.merge(OmegaConf.create(loaded), OmegaConf.create(mine))
    merged["from"] = source
    out = cfg.copy()
    OmegaConf.set_struct(out, False)
    out.data = merged
    OmegaConf.set_struct(out, True)
    return out
