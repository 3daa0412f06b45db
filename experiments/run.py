"""``run(cfg)``: what the ``didlab`` command does, callable without Hydra's decorator.

A dispatcher: it validates the whole config (every cell's simulator, every estimator's
``check()``, the experiment's own options) before anything is written, fits every
estimator once on the panel (:mod:`experiments.single`), and hands that to the runner of
the experiment's kind (:data:`RUNNERS`), which adds its tables, figures and report
sections. ``report.md`` is written last: its presence marks a complete run.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
from omegaconf import DictConfig, OmegaConf

from estimators.panel import EstimationError, OptionError, check_choice

from . import CONF_DIR, report  # noqa: F401  (CONF_DIR: callers import it from here too)
from .files import write_text


#: experiment kind -> (module in experiments/, function); each function takes
#: (cfg, draw: SingleDraw, out) and returns (written, report sections)
RUNNERS: dict[str, tuple[str, str]] = {
    "single": ("single", "run_single"),
    "estimate": ("estimate_run", "run_estimate"),
    "montecarlo": ("montecarlo_run", "run_montecarlo"),
    "placebo": ("placebo_run", "run_placebo"),
    "spec_curve": ("spec_curve", "run_spec_curve"),
    "sensitivity": ("sensitivity_run", "run_sensitivity"),
    "calibrate": ("calibrate_run", "run_calibrate"),
    "dossier": ("dossier", "run_dossier"),
}
EXPERIMENT_KINDS = tuple(RUNNERS)
#: experiments that need a file (the others run on a simulator, or on either)
FILE_ONLY = ("calibrate",)
SIMULATOR_ONLY = ("montecarlo",)


def normalize_overrides(overrides: list[str]) -> list[str]:
    """Spell overrides the way Hydra must see them.

    ``experiment.grid={effect:[zero]}`` names a grid axis the experiment's own grid may not
    have; Hydra merges a dict override into the existing dict and refuses a new key, so the
    override is passed as ``++experiment.grid=...`` (add or override). The grid it gives
    then replaces the experiment's grid in :func:`experiments.montecarlo_run.cells`.
    """
    return [f"++{o}" if o.startswith("experiment.grid=") else o for o in overrides]


def compose(overrides: list[str]) -> DictConfig:
    """Compose the didlab config with overrides (inside or outside a running Hydra app).

    The result records where it came from in ``origin`` (the overrides and each group's
    chosen option), so that a grid can compose its cells from the same overrides.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from .schema import register

    register()
    overrides = normalize_overrides(list(overrides))
    if GlobalHydra.instance().is_initialized():
        cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=overrides,
                                return_hydra_config=True)
    choices = {k: v for k, v in OmegaConf.to_container(cfg.hydra.runtime.choices).items()
               if not k.startswith("hydra") and v is not None}
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    cfg.origin = {"overrides": list(overrides), "choices": choices}
    OmegaConf.set_struct(cfg, True)
    return prune_estimators(cfg)


def prune_estimators(cfg: DictConfig) -> DictConfig:
    """Drop an experiment's settings for estimators the run does not select.

    An experiment config may tune estimators it lists (``estimator.ri_twfe.n_perm: 199``);
    when ``estimator=[...]`` on the command line leaves one out, its settings remain as an
    entry without a ``kind`` (no estimator option file provided it). Such an entry is
    dropped -- unless the user's own overrides set it, which is then a typo or a forgotten
    selection, refused in one line.
    """
    if "estimator" not in cfg or not cfg.estimator:
        return cfg
    orphans = [label for label, spec in cfg.estimator.items()
               if not isinstance(spec, DictConfig) or spec.get("kind") is None]
    if not orphans:
        return cfg
    overrides = list(cfg.origin.overrides) if "origin" in cfg else []
    named = {o.lstrip("+~").split("=", 1)[0].split(".")[1] for o in overrides
             if o.lstrip("+~").startswith("estimator.") and "." in o.split("=", 1)[0]}
    selected = [label for label in cfg.estimator if label not in orphans]
    for label in orphans:
        if label in named:
            from estimators.panel import OptionError

            raise OptionError(
                f"estimator.{label} sets options of an estimator that is not selected; "
                f"selected: {', '.join(selected) or 'none'} (add it: estimator=[...,{label}])")
    OmegaConf.set_struct(cfg, False)
    for label in orphans:
        del cfg.estimator[label]
    OmegaConf.set_struct(cfg, True)
    return cfg


def record_origin(cfg: DictConfig) -> DictConfig:
    """Inside the Hydra app: put the job's overrides and choices into ``cfg.origin``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except (ValueError, ImportError):
        return cfg
    choices = {k: v for k, v in OmegaConf.to_container(hc.runtime.choices).items()
               if not k.startswith("hydra") and v is not None}
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    cfg.origin = {"overrides": list(hc.overrides.task), "choices": choices}
    OmegaConf.set_struct(cfg, True)
    return prune_estimators(cfg)


def in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except (ValueError, ImportError):
        return False


def validate(cfg: DictConfig) -> list[tuple[DictConfig, dict[str, str]]]:
    """Check everything a run will use before it writes anything: the experiment's options,
    every cell's simulator (or the data file's spec) and every estimator's options.

    Returns the run's cells (one for a plain run).
    """
    from .build import SIMULATED, build_draw, build_estimators, file_spec
    from .montecarlo_run import cells

    check_experiment(cfg)
    kind = cfg.experiment.kind
    if kind in SIMULATOR_ONLY and cfg.data.kind == "file":
        raise OptionError("a Monte Carlo experiment needs simulated data (data=province or "
                          "data=city); with data=file use experiment=estimate, placebo or spec_curve")
    if kind in FILE_ONLY and cfg.data.kind != "file":
        raise OptionError(f"experiment={kind} fits the simulator to a file: use data=file "
                          "(or data=example)")
    runs = cells(cfg) if kind in SIMULATOR_ONLY else [(cfg, {})]
    for c, _ in runs:
        if c.data.kind in SIMULATED:
            # one trial draw (milliseconds): a design that cannot be drawn (a treatment year
            # outside the panel's years) stops here, not after the run folder exists
            build_draw(c)(np.random.default_rng(int(c.seed)))
        else:
            file_spec(c)
        build_estimators(c, list(c.experiment.outcomes))
    return runs


def check_experiment(cfg: DictConfig) -> None:
    """Experiment options read only mid-run, checked before any output is written."""
    from .montecarlo import Backend

    check_choice("experiment.kind", cfg.experiment.kind, EXPERIMENT_KINDS)
    if not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise OptionError(f"seed={cfg.seed!r} must be an integer >= 0 (numpy seeds are "
                          "non-negative)")
    for key in ("n_reps", "chunk_size"):
        value = cfg.experiment[key]
        if value < 1:
            raise OptionError(f"experiment.{key}={value} must be >= 1")
    Backend.of(cfg.backend)
    if not str(cfg.experiment.store).strip():
        raise OptionError("experiment.store is empty: give the folder where Monte Carlo "
                          "chunks are kept (default outputs/store)")
    if cfg.experiment.kind == "sensitivity":
        from .sensitivity_run import check_options

        check_options(cfg.experiment.sensitivity)
    if cfg.experiment.kind == "placebo":
        from .placebo_run import check_options as check_placebo

        check_placebo(cfg)
    if cfg.experiment.kind == "dossier":
        from .dossier import check_options as check_dossier

        check_dossier(cfg)
    if cfg.experiment.kind == "spec_curve":
        from .spec_curve import specifications

        specifications(cfg)


def run(cfg: DictConfig, output_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run the configured experiment and write its outputs.

    Parameters
    ----------
    cfg
        A composed didlab config (``compose([...])`` or the one ``@hydra.main`` passes).
    output_dir
        Where to write; defaults to Hydra's run folder.

    Returns
    -------
    dict
        Paths of what was written and the main tables (for tests and notebooks).
    """
    from .build import resolve_calibrated

    cfg = resolve_calibrated(record_origin(cfg) if "origin" not in cfg else cfg)
    validate(cfg)  # a bad option stops here, before the output folder is touched
    out = Path(output_dir) if output_dir is not None else _hydra_output_dir()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("report.md", "FAILED"):
        (out / stale).unlink(missing_ok=True)
    try:
        result = _run(cfg, out)
    except BaseException as exc:
        try:  # say why; on a full or read-only disk even this may fail
            write_text(out / "FAILED", f"{type(exc).__name__}: {exc}\n")
        except OSError:
            pass
        raise
    return result


def _hydra_output_dir() -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        raise OptionError("run(cfg) outside a Hydra app needs output_dir=...") from None


def runner(kind: str) -> Callable[..., tuple[dict[str, Any], list[str]]]:
    """The function that runs an experiment of ``kind``."""
    check_choice("experiment.kind", kind, EXPERIMENT_KINDS)
    module, name = RUNNERS[kind]
    return getattr(importlib.import_module(f".{module}", __package__), name)


def _run(cfg: DictConfig, out: Path) -> dict[str, Any]:
    from .single import draw_sections, single_draw

    write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    report.set_labels(OmegaConf.to_container(cfg.data.labels) if "labels" in cfg.data else None)
    written: dict[str, Any] = {"config": out / "config.yaml"}
    sections: list[str] = [f"# didlab — {cfg.experiment.name}\n"]
    draw = single_draw(cfg)
    if (draw.fits and cfg.experiment.kind in ("single", "estimate")
            and all(f.estimate is None for f in draw.fits.values())):
        # nothing to report: a table of errors must not look like a complete run
        first = next(iter(draw.fits.values()))
        raise EstimationError(f"no estimator produced an estimate on this panel; "
                              f"{first.label} on {first.outcome}: {first.error}")
    more, text = draw_sections(cfg, draw, out)
    written.update(more)
    sections.extend(text)
    more, text = runner(cfg.experiment.kind)(cfg, draw, out)
    written.update(more)
    sections.extend(text)
    sections.append("## Configuration\n\n```yaml\n" + OmegaConf.to_yaml(cfg, resolve=True) + "```\n")
    versions = report.package_versions()
    sections.append("## Package versions\n\n" + "\n".join(f"- {k} {v}" for k, v in versions.items()) + "\n")
    # written last: its presence marks a complete run
    write_text(out / "report.md", "\n".join(sections))
    written["report"] = out / "report.md"
    written["table"] = draw.table
    written["draw"] = draw
    print(f"\nOutputs written to {out}")
    return written


def isatty() -> bool:
    return sys.stderr.isatty()
