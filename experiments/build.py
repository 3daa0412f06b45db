"""Turn a composed config into simulator and estimator objects (plain functions: no running Hydra app needed)."""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from estimators import catalog
from estimators.panel import OptionError, check_choice
from simulate.city import CityDGP, draw_city
from simulate.design import Assignment, Effect, Timing, validate_design
from simulate.province import ProvinceDGP, draw_province, validate_redraw
from simulate import registry

EXACT = {"auto": "auto", "true": True, "false": False}
#: the methods literature's simulators (simulate/registry.py) come after the carbon panels
DATA_KINDS = ("province", "city", "file", "calibrated", *registry.kinds())
#: data-config keys that describe how the data is used, not the simulator's parameters
CONFIG_ONLY_DATA_KEYS = ("kind", "from", "source", "outcomes", "controls", "score_covariates",
                         "channels", "labels")
SIMULATED = ("province", "city", "calibrated", *registry.kinds())


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


_WARNED: set[tuple[str, str]] = set()


def estimator_options(entry: catalog.Entry, spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Constructor keywords of ``entry``'s class from a config node: unknown keys are
    refused, sequences become tuples, old option names are mapped with a warning."""
    values = dict(spec)
    renamed = catalog.renamed_options(entry.cls)
    for old, new in renamed.items():
        value = values.pop(old, None)
        if value is None:
            continue
        if (where, old) not in _WARNED:  # once per key and process, however often it is built
            _WARNED.add((where, old))
            warnings.warn(f"{where}.{old} is deprecated and will be removed in the next "
                          f"release; use {where}.{new}", FutureWarning, stacklevel=2)
        values[old] = value  # the class maps it (and converts old value conventions)
        if old not in getattr(entry.cls, "__renamed_converted__", ()):
            # the schema always fills the new key with its default: the old key, which the
            # user did set, wins
            values.pop(new, None)
    declared = {o.name: o for o in entry.options()}
    allowed = set(declared) | set(renamed)
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise OptionError(f"{where}.{unknown[0]} is not an option of {entry.kind}; accepted: "
                          f"{sorted(declared)}")
    for key, value in list(values.items()):
        opt = declared.get(key)
        if isinstance(value, list) and (opt is None or catalog.is_sequence_type(opt.type)
                                        or opt.type is Any):
            values[key] = tuple(value)
    return values


def build_estimator(label: str, spec: Mapping[str, Any], outcome: str) -> Any:
    """One checked estimator object for ``outcome`` from its config entry
    ``estimator.<label>``: the class comes from the catalogue, every option is validated
    (``check()``) before anything runs."""
    spec = dict(_plain(spec))
    kind = spec.pop("kind", None)
    check_choice(f"estimator.{label}.kind", kind, tuple(catalog.kinds()))
    entry = catalog.entry(kind)
    where = f"estimator.{label}"
    with warnings.catch_warnings():
        # the config path names the key itself (FutureWarning above); the class's own
        # DeprecationWarning would repeat it
        warnings.simplefilter("ignore", DeprecationWarning)
        values = estimator_options(entry, spec, where)
        if entry.capabilities.wraps:  # a wrapper: build the estimator it wraps
            values["base"] = build_estimator(f"{label}.base", values["base"], outcome)
            est = entry.cls(label=label, **values)
        else:
            est = entry.cls(outcome=outcome, label=label, **values)
    try:
        est.check()
    except OptionError as exc:
        raise OptionError(f"{where}: {exc}") from None
    return est


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

    registered = registry.simulators().get(kind)
    dgp_cls = (registered.dgp if registered else
               {"province": ProvinceDGP, "city": CityDGP, "calibrated": CalibratedDGP}[kind])
    dgp = _dataclass(dgp_cls, cfg.data, "data", drop=CONFIG_ONLY_DATA_KEYS)
    assignment = _dataclass(Assignment, cfg.assignment, "assignment")
    timing = _dataclass(Timing, cfg.timing, "timing")
    effect = _dataclass(Effect, cfg.effect, "effect")
    # validate now: a bad value should stop the run before any worker starts; a knob this
    # simulator does not honour is refused, not ignored
    dgp.validate()
    validate_design(dgp, assignment, timing, effect)
    if registered is not None:
        return functools.partial(registered.draw, dgp, assignment, timing, effect)
    if kind != "province":
        drawer = _draw_city if kind == "city" else _draw_calibrated
        return functools.partial(drawer, dgp, assignment, timing, effect)
    from simulate.mediators import Channel, validate_channels

    channels = tuple(Channel(**dict(c)) for c in _plain(cfg.data.get("channels", [])))
    validate_channels(channels, dgp.years.size)
    validate_redraw(dgp, channels)
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
              if k not in ("kind", "score_covariates", "labels")}
    values["treated_units"] = tuple(values.get("treated_units") or ())
    values["outcomes"] = tuple(cfg.experiment.outcomes)
    values["controls"] = tuple(values.get("controls") or ())
    # a treatment that switches off reaches the estimators only when every configured one
    # accepts it (de Chaisemartin-D'Haultfoeuille); otherwise the file is refused up front
    kinds = [spec.get("kind", label) for label, spec in cfg.estimator.items()]
    values["allow_switching"] = bool(kinds) and all(
        catalog.entry(k).capabilities.switching for k in kinds)
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


# --- batched draws (the Monte Carlo engine's fast path, experiments/montecarlo.py) ----------

def _draw_province_batch(dgp: ProvinceDGP, assignment: Assignment, timing: Timing,
                         effect: Effect, *args: Any) -> Any:
    """:func:`_draw_province` for a list of generators (the last argument): a
    :class:`~estimators.batch.PanelBatch` whose replicate ``b`` is ``_draw_province(...,
    rngs[b])`` bit for bit."""
    from simulate.province import draw_province_batch

    rngs = args[-1]
    channels = args[0] if len(args) == 2 else ()
    return draw_province_batch(rngs, dgp, assignment, timing, effect, channels)


# the engine finds a draw's batched counterpart here (montecarlo.batch_draw_of)
_draw_province.draw_batch = _draw_province_batch  # type: ignore[attr-defined]
