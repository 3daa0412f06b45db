"""``experiment=dossier``: every robustness check of didlab on one panel, one HTML report.

The dossier runs the other one-panel experiments as a library -- their runners write their
own tables and figures into sub-folders of the run -- and adds what none of them does
alone: the inference methods for few treated clusters on every estimator that offers
them, a Monte Carlo on the simulator fitted to the panel (or on the configured simulator),
and a verdict written from the numbers. Parts:

========== ===========================================================================
part       what it calls
========== ===========================================================================
headline   the fits of :mod:`experiments.single` (made once, before the parts)
placebo    :func:`experiments.placebo_run.run_placebo`
spec_curve :func:`experiments.spec_curve.run_spec_curve`
sensitivity :func:`experiments.sensitivity_run.run_sensitivity` (the configured labels)
calibrate  :func:`experiments.calibrate_run.run_calibrate` (files only)
montecarlo :func:`experiments.montecarlo.run_designs` on two cells: no effect (size) and
           the estimated effect (coverage, power)
========== ===========================================================================

Independent parts run in parallel through joblib on the configured backend; each runs
sequentially inside its worker with one BLAS thread, and every random number comes from
the run's seed, so the numbers do not depend on the number of workers. A part that fails
is reported in its own section with the reason; the run fails only when neither a
headline fit nor any part produced anything.

Everything the HTML shows is in ``dossier.json``: tables in pandas' ``split`` layout
(``columns`` and ``data``), the verdict's numbers by name, figures by file. The HTML is
rendered by a jinja2 template (``experiments/templates/dossier.html.j2``) with tables from
pandas' Styler and the runners' PNG figures embedded as data URIs, so the file opens
offline in any browser.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
import math
import os
import string
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from estimators import catalog
from estimators.panel import (COHORT, D, TIME, UNIT, DidlabError, EstimationError, OptionError,
                              check_choice, validate_panel)

from . import report
from .files import write_text

PARTS = ("placebo", "spec_curve", "sensitivity", "calibrate", "montecarlo")
TEMPLATES = Path(__file__).resolve().parent / "templates"
#: Monte Carlo cells: no effect (rejections are sizes), and the estimated effect
NULL_CELL, EFFECT_CELL = "no effect", "estimated effect"


# --- options --------------------------------------------------------------------------------

def check_options(cfg: DictConfig) -> None:
    """Reject bad dossier options before the run folder exists (the parts' own options are
    checked by their runners' checks, for the parts that are on)."""
    ds = cfg.experiment.dossier
    parts = list(ds.parts)
    for p in parts:
        check_choice("experiment.dossier.parts entry", p, PARTS)
    if not 0 < float(ds.alpha) < 1:
        raise OptionError(f"experiment.dossier.alpha={ds.alpha} must lie strictly between 0 and 1")
    if not 0 < float(ds.spec_share) <= 1:
        raise OptionError(f"experiment.dossier.spec_share={ds.spec_share} must lie in (0, 1]")
    if any(int(s) == 0 for s in ds.date_shifts):
        raise OptionError(f"experiment.dossier.date_shifts={list(ds.date_shifts)}: 0 is the "
                          "data's own date, which the curve always has; give non-zero shifts")
    # (mc_exclude may name estimators not configured: leaving out what is absent is harmless)
    for label in ds.sensitivity_estimators:
        if label not in cfg.estimator:
            raise OptionError(f"experiment.dossier.sensitivity_estimators lists {label!r}, "
                              f"which is not a configured estimator; configured: "
                              f"{list(cfg.estimator)}")
    estimators = _configured(cfg)
    for method, opts in _inference_options(cfg).items():
        reasons = [why for est in estimators
                   if (why := _variant_refusal(est, opts)) is not None]
        if len(reasons) == len(estimators):
            raise OptionError(f"experiment.dossier.inference.{method}={opts}: no configured "
                              f"estimator accepts it ({reasons[0] if reasons else 'none configured'})")
    if "placebo" in parts:
        from .placebo_run import check_options as check_placebo

        check_placebo(cfg)
    if "sensitivity" in parts:
        from .sensitivity_run import check_options as check_sensitivity

        check_sensitivity(cfg.experiment.sensitivity)
    if "spec_curve" in parts:
        from .spec_curve import specifications

        specifications(cfg)


def _configured(cfg: DictConfig) -> list[Any]:
    from .build import build_estimators

    outcomes = list(cfg.experiment.outcomes)[:1]
    return list(build_estimators(cfg, outcomes).values()) if outcomes else []


def _inference_options(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    node = cfg.experiment.dossier.inference
    methods = OmegaConf.to_container(node, resolve=True) if node else {}
    # a method set to null is dropped (Hydra merges a mapping given on the command line
    # into the configured one, so `experiment.dossier.inference.wild=null` is how to drop one)
    methods = {m: opts for m, opts in methods.items() if opts is not None}
    for method, opts in methods.items():
        if not isinstance(opts, dict) or not opts:
            raise OptionError(f"experiment.dossier.inference.{method}={opts!r} must be a "
                              "mapping of inference options, e.g. {se: cr2, dist: "
                              "satterthwaite}, or null to drop the method")
    return methods


def _variant_refusal(estimator: Any, opts: Mapping[str, Any]) -> str | None:
    """Why ``estimator`` cannot take the inference options ``opts`` (None: it can). The
    estimator's own fields and ``check()`` decide; nothing here names estimator classes."""
    names = {f.name for f in dataclasses.fields(estimator)}
    missing = sorted(set(opts) - names)
    if missing:
        return f"{catalog.kind_of(estimator)} has no option {missing[0]!r}"
    try:
        dataclasses.replace(estimator, **opts).check()
    except OptionError as exc:
        return str(exc).splitlines()[0]
    return None


# --- the parts ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """One unit of parallel work: a part, or one cell of the Monte Carlo."""

    name: str
    part: str
    fn: Callable[..., Any]
    args: tuple
    cost: float = 1.0   # a guess of its length: longer tasks are dispatched first


@dataclass
class Outcome:
    """What a task gave: ``value`` when it ran, the reason when it failed or was skipped."""

    name: str
    part: str
    status: str            # ok | failed | skipped
    seconds: float = 0.0
    value: Any = None
    reason: str = ""
    log: str = ""


def _call(task: Task) -> Outcome:
    """Run one task quietly (its printed tables go to its log) with one BLAS thread, so its
    numbers are those of any other worker; a failure becomes an Outcome with the reason."""
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    buf = io.StringIO()
    try:
        with threadpool_limits(limits=1), contextlib.redirect_stdout(buf):
            value = task.fn(*task.args)
    except Exception as exc:  # noqa: BLE001 - any failure of a part is reported, not fatal
        first = (str(exc).splitlines() or [""])[0]
        return Outcome(task.name, task.part, "failed", time.perf_counter() - t0,
                       reason=f"{type(exc).__name__}: {first}",
                       log=buf.getvalue() + "\n" + traceback.format_exc())
    return Outcome(task.name, task.part, "ok", time.perf_counter() - t0, value, log=buf.getvalue())


def quiet(cfg: DictConfig) -> DictConfig:
    """The config a part runs with inside a worker: sequential, no progress bar, and every
    interpolation resolved here (a worker process has not registered didlab's resolvers)."""
    c = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    OmegaConf.update(c, "backend.kind", "sequential")
    OmegaConf.update(c, "experiment.progress", False)
    return c


def part_placebo(cfg: DictConfig, draw: Any, folder: Path) -> dict[str, Any]:
    from .placebo_run import run_placebo

    return run_placebo(cfg, draw, folder)[0]


def part_spec_curve(cfg: DictConfig, draw: Any, folder: Path) -> dict[str, Any]:
    from .spec_curve import run_spec_curve

    return run_spec_curve(cfg, draw, folder)[0]


def part_sensitivity(cfg: DictConfig, draw: Any, folder: Path) -> dict[str, Any]:
    from .sensitivity_run import run_sensitivity

    return run_sensitivity(cfg, draw, folder)[0]


def part_calibrate(cfg: DictConfig, draw: Any, folder: Path) -> dict[str, Any]:
    from .calibrate_run import run_calibrate

    return run_calibrate(cfg, draw, folder)[0]


def part_montecarlo(design: Any, n_reps: int, seed: int, store: str, key: str,
                    chunk_size: int) -> pd.DataFrame:
    from .montecarlo import Backend, run_designs

    return run_designs([design], n_reps, seed, store=store, keys=[key], chunk_size=chunk_size,
                       backend=Backend(kind="sequential"))


def spec_config(cfg: DictConfig, panel: pd.DataFrame) -> DictConfig:
    """The specification curve's config: with no treatment years given and one cohort, the
    data's date and ``experiment.dossier.date_shifts`` periods later (inside the panel)."""
    if list(cfg.experiment.spec.treatment_year):
        return cfg
    cohorts = sorted(int(c) for c in np.unique(panel[COHORT]) if c > 0)
    if len(cohorts) != 1:
        return cfg  # staggered: a common date would be another design, not another date
    periods = np.sort(panel[TIME].unique())
    pos = int(np.searchsorted(periods, cohorts[0]))
    years = [int(periods[pos + s]) for s in (0, *cfg.experiment.dossier.date_shifts)
             if 0 < pos + int(s) < len(periods)]
    c = cfg.copy()
    OmegaConf.update(c, "experiment.spec.treatment_year", sorted(set(years)))
    return c


def inference_fits(cfg: DictConfig, draw: Any) -> list[Any]:
    """Every headline estimator again under each configured inference method it accepts,
    fitted on the panel (seeded like the headline fits). Returns :class:`Fit` objects
    labelled ``label[method]``."""
    from .montecarlo import estimator_seed, fit_rows, needs_rng
    from .single import Fit

    fits = []
    for f in draw.fits.values():
        if f.estimate is None:
            continue
        for method, opts in _inference_options(cfg).items():
            if _variant_refusal(f.estimator, opts) is not None:
                continue
            label = f"{f.label}[{method}]"
            est = dataclasses.replace(f.estimator, label=label, **opts)
            seed = estimator_seed(int(cfg.seed), 0, label) if needs_rng(est) else None
            rng = np.random.default_rng(seed) if seed is not None else None
            fitted, rows, truth = fit_rows(est, draw.panel, rng, "single", 0, f.outcome, label)
            fits.append(Fit(f.outcome, label, est, fitted, truth, rows[0]["error"], seed))
    return fits


def is_att(fit: Any) -> bool:
    """Whether a fit's headline is an average effect on the treated (the estimand the verdict
    compares across estimators): its headline term is an ATT or it aggregates the
    estimator's event-time effects (dCDH's average total effect), and it is not a
    decomposition of another estimator's coefficient (Goodman-Bacon repeats TWFE's)."""
    caps = catalog.capabilities(fit.estimator)
    return (fit.estimate is not None
            and (str(fit.estimate.term).startswith("ATT") or caps.event_time)
            and not (caps.comparisons or caps.decomposition or caps.quantiles
                     or caps.subgroups))


def mc_cells(cfg: DictConfig, draw: Any, fits: Sequence[Any], folder: Path
             ) -> tuple[list[tuple[str, Any, str]], dict[str, Any]]:
    """The Monte Carlo's designs: ``[(cell, Design, store key)]`` and what they are.

    A file is replaced by the simulator fitted to it (:func:`experiments.calibrate.calibrate`,
    first outcome); simulated data keep their own simulator. Two cells: no effect, and a
    constant effect of the median ATT estimate (``experiment.dossier.mc_effect`` overrides;
    simulated data keep the configured effect). The estimators are the headline fits that
    succeeded on the panel, with their inference variants.
    """
    from simulate.design import Assignment, Effect, Timing

    from .build import build_draw, resolve_calibrated
    from .montecarlo import Design, design_key
    from .montecarlo_run import hash_payload

    outcome = list(cfg.experiment.outcomes)[0]
    exclude = set(cfg.experiment.dossier.mc_exclude)
    estimators = {(f.outcome, f.label): f.estimator for f in fits
                  if f.outcome == outcome and f.estimate is not None
                  and f.label.split("[")[0] not in exclude
                  and not catalog.capabilities(f.estimator).comparisons}
    if not estimators:
        raise EstimationError(f"no estimator succeeded on {outcome}: nothing to simulate")
    atts = [f.estimate.estimate for f in fits if f.outcome == outcome and is_att(f)]
    mc_effect = cfg.experiment.dossier.mc_effect
    base = cfg.copy()
    OmegaConf.set_struct(base, False)
    info: dict[str, Any] = {"outcome": outcome}
    if draw.is_file:
        from .calibrate import calibrate, save_calibration

        controls = list(cfg.data.controls)
        dgp = calibrate(draw.panel, outcome, controls)
        path = save_calibration(dgp, folder / "calibrated.yaml", str(cfg.data.path), controls)
        base.data = OmegaConf.create({"kind": "calibrated", "from": str(path)})
        base.timing = OmegaConf.structured(Timing(kind="market_open"))  # the data's dates
        base.assignment = OmegaConf.structured(Assignment(kind="actual"))
        base = resolve_calibrated(base)
        effect = float(mc_effect) if mc_effect is not None else (
            float(np.median(atts)) if atts else 0.0)
        base.effect = OmegaConf.structured(Effect(att=effect))
        info["simulator"] = "calibrated to the panel"
    else:
        if mc_effect is not None:
            base.effect.att = float(mc_effect)
        info["simulator"] = f"data={cfg.data.kind} (the configured simulator)"
    info["effect"] = float(base.effect.att)
    info["excluded"] = ", ".join(sorted(exclude)) or "none"
    cells = []
    for cell, att in ((NULL_CELL, 0.0), (EFFECT_CELL, float(base.effect.att))):
        if cell == EFFECT_CELL and att == 0.0:
            continue  # the same design twice
        c = base.copy()
        c.effect.att = att
        payload = hash_payload(c)
        # the calibration's file name changes with every run; its parameters fix the draws
        payload["data"] = {k: v for k, v in payload["data"].items() if k not in ("from", "source")}
        payload["dossier"] = sorted(repr(e) for e in estimators.values())
        cells.append((cell, Design(build_draw(c), estimators, cell=cell, axes={"cell": cell}),
                      design_key(payload)))
    return cells, info


def execute(tasks: Sequence[Task], backend: Any, progress: "Progress") -> list[Outcome]:
    """Run tasks on the backend (joblib; longest first), reporting each as it ends."""
    from joblib import Parallel, delayed, parallel_config

    from .montecarlo import dask_client

    ordered = sorted(tasks, key=lambda t: -t.cost)
    done: list[Outcome] = []
    progress.start(ordered, backend)
    if backend.kind == "sequential" or len(ordered) <= 1:
        for t in ordered:
            done.append(progress.finished(_call(t)))
        return done
    calls = (delayed(_call)(t) for t in ordered)
    if backend.kind == "dask":
        with dask_client(backend), parallel_config(backend="dask"):
            for o in Parallel(return_as="generator_unordered")(calls):
                done.append(progress.finished(o))
        return done
    par = Parallel(n_jobs=backend.n_jobs, backend="loky", batch_size=1,
                   return_as="generator_unordered")
    for o in par(calls):
        done.append(progress.finished(o))
    return done


class Progress:
    """Progress lines on stderr (a bar too on a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.t0 = time.perf_counter()
        self.pending: list[str] = []

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        tqdm.write(f"[dossier {time.perf_counter() - self.t0:6.1f} s] {text}", file=sys.stderr)

    def start(self, tasks: Sequence[Task], backend: Any) -> None:
        from tqdm.auto import tqdm

        self.pending = [t.name for t in tasks]
        workers = 1 if backend.kind == "sequential" else (
            backend.n_workers if backend.kind == "dask" else _n_workers(backend.n_jobs))
        self.line(f"running {len(tasks)} parts on {workers} worker(s) ({backend.kind}): "
                  + ", ".join(self.pending))
        self.bar = tqdm(total=len(tasks), unit="part", leave=False, file=sys.stderr,
                        disable=not (self.enabled and sys.stderr.isatty()))

    def finished(self, o: Outcome) -> Outcome:
        self.pending = [p for p in self.pending if p != o.name]
        state = "done" if o.status == "ok" else f"FAILED ({o.reason})"
        left = f"; still running: {', '.join(self.pending)}" if self.pending else ""
        self.line(f"{o.name}: {state} in {o.seconds:.1f} s{left}")
        if self.bar is not None:
            self.bar.update()
            if not self.pending:
                self.bar.close()
        return o


def _n_workers(n_jobs: int) -> int:
    cores = os.cpu_count() or 1
    return max(1, min(cores, n_jobs) if n_jobs > 0 else cores + 1 + n_jobs)


# --- the runner -----------------------------------------------------------------------------

def run_dossier(cfg: DictConfig, draw: Any, out: Path) -> tuple[dict[str, Any], list[str]]:
    """Run every part on the fitted panel, write ``dossier.html`` and ``dossier.json``."""
    from .montecarlo import Backend
    from .run import isatty  # noqa: F401  (progress lines are written whatever the stream)

    check_options(cfg)
    t0 = time.perf_counter()
    ds = cfg.experiment.dossier
    parts = list(ds.parts)
    progress = Progress(bool(cfg.experiment.progress))
    progress.line("fitting the inference variants on the panel")
    variants = inference_fits(cfg, draw)
    backend = Backend.of(cfg.backend)
    q = quiet(cfg)
    folders = {p: out / p for p in PARTS}
    for p in parts:
        folders[p].mkdir(parents=True, exist_ok=True)
    tasks: list[Task] = []
    outcomes: list[Outcome] = []
    if "placebo" in parts:
        tasks.append(Task("placebo", "placebo", part_placebo, (q, draw, folders["placebo"]), 2))
    if "spec_curve" in parts:
        tasks.append(Task("spec_curve", "spec_curve", part_spec_curve,
                          (spec_config(q, draw.panel), draw, folders["spec_curve"]), 3))
    if "sensitivity" in parts:
        labels = set(ds.sensitivity_estimators)
        sub = dataclasses.replace(draw, fits={k: f for k, f in draw.fits.items()
                                              if not labels or f.label in labels})
        tasks.append(Task("sensitivity", "sensitivity", part_sensitivity,
                          (q, sub, folders["sensitivity"]), 2))
    if "calibrate" in parts:
        if draw.is_file:
            tasks.append(Task("calibrate", "calibrate", part_calibrate,
                              (q, draw, folders["calibrate"]), 4))
        else:
            outcomes.append(Outcome("calibrate", "calibrate", "skipped", reason=(
                f"data={cfg.data.kind} is already a simulator: the Monte Carlo runs on it "
                "directly (calibration fits a simulator to a file)")))
    mc_info: dict[str, Any] = {}
    if "montecarlo" in parts:
        try:
            cells, mc_info = mc_cells(cfg, draw, [*draw.fits.values(), *variants],
                                      folders["montecarlo"])
            for cell, design, key in cells:
                tasks.append(Task(f"montecarlo: {cell}", "montecarlo", part_montecarlo,
                                  (design, int(cfg.experiment.n_reps), int(cfg.seed),
                                   str(cfg.experiment.store), key,
                                   int(cfg.experiment.chunk_size)), 10))
        except DidlabError as exc:
            outcomes.append(Outcome("montecarlo", "montecarlo", "failed",
                                    reason=f"{type(exc).__name__}: {str(exc).splitlines()[0]}"))
    for p in PARTS:
        if p not in parts:
            outcomes.append(Outcome(p, p, "skipped",
                                    reason="not in experiment.dossier.parts"))
    outcomes += execute(tasks, backend, progress)
    for o in outcomes:  # each part's printed tables and any traceback, for the record
        if o.log.strip():
            write_text(folders[o.part] / f"log{'_' + _slug(o.name) if o.name != o.part else ''}.txt",
                       o.log)
    progress.line("writing dossier.html and dossier.json")
    dossier = build(cfg, draw, variants, outcomes, mc_info, out)
    dossier["run"]["seconds"] = time.perf_counter() - t0
    html = render(dossier, out)
    write_text(out / "dossier.json", to_json(dossier))
    write_text(out / "dossier.html", html)
    progress.line(f"done: {out / 'dossier.html'}")
    useful = any(f.estimate is not None for f in draw.fits.values()) or any(
        o.status == "ok" for o in outcomes)
    if not useful:
        first = next((o for o in outcomes if o.status == "failed"), None)
        raise EstimationError("the dossier has nothing to show: no estimator fitted the panel"
                              + (f" and every part failed ({first.name}: {first.reason})"
                                 if first else ""))
    counts = pd.Series([v["status"] for v in dossier["verdict"]]).value_counts().to_dict()
    section = ("## Dossier\n\nThe full report is `dossier.html` (open it in a browser; every "
               "number is also in `dossier.json`). Verdict lines: "
               + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".\n\n"
               + "\n".join(f"- **{v['topic']}** ({v['outcome'] or 'all'}): {v['status']} — "
                           + v["text"].format(**{k: fmt(x) for k, x in v["numbers"].items()})
                           for v in dossier["verdict"]) + "\n")
    print(f"\nDossier: {out / 'dossier.html'}")
    return {"dossier": out / "dossier.html", "dossier_json": out / "dossier.json",
            "summary": dossier}, [section]


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_")


# --- numbers --------------------------------------------------------------------------------

def fmt(v: Any) -> str:
    """How every number is shown, in the HTML and the markdown alike (the test reads the
    HTML back through this function): four significant digits, scientific below 0.001."""
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if math.isnan(x):
            return ""
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if x == 0:
            return "0"
        if x == round(x) and abs(x) < 1e9:
            return str(int(round(x)))
        return format(x, ".3g" if abs(x) < 1e-3 or abs(x) >= 1e5 else ".4g")
    return str(v)


def _plain(v: Any) -> Any:
    """A JSON value: numpy scalars to Python, NaN and infinities to null, paths to text."""
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if v is pd.NA or v is pd.NaT:
        return None
    return v


def table(frame: pd.DataFrame) -> dict[str, Any]:
    """A table as JSON: pandas' ``split`` layout without the index."""
    frame = frame.reset_index(drop=True)
    return {"columns": [str(c) for c in frame.columns],
            "data": [[_plain(v) for v in row] for row in frame.itertuples(index=False)]}


def frame_of(t: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(t["data"], columns=t["columns"])


def to_json(dossier: Mapping[str, Any]) -> str:
    return json.dumps(_plain(dossier), indent=1, allow_nan=False) + "\n"


# --- the dossier's content --------------------------------------------------------------------

def build(cfg: DictConfig, draw: Any, variants: Sequence[Any], outcomes: Sequence[Outcome],
          mc_info: Mapping[str, Any], out: Path) -> dict[str, Any]:
    """Every table, figure and verdict line of the dossier, as plain data."""
    alpha = float(cfg.experiment.dossier.alpha)
    by_part: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_part.setdefault(o.part, []).append(o)
    tables: dict[str, dict[str, Any]] = {}
    figures: dict[str, dict[str, str]] = {}
    figs = out / "figures"

    def add(key: str, frame: pd.DataFrame | None) -> None:
        if frame is not None and len(frame):
            tables[key] = table(frame)

    def figure(key: str, path: Path | None, caption: str) -> None:
        if cfg.experiment.figures and path is not None and Path(path).exists():
            figures[key] = {"path": str(Path(path).relative_to(out)), "caption": caption}

    glance, notes = panel_glance(cfg, draw)
    for k, v in glance.items():
        add(k, v)
    head, failed = headline_tables(draw, variants)
    add("headline", head)
    add("headline_failed", failed)
    add("estimators", estimator_table(draw))
    inference = inference_table(draw, variants)
    add("inference", inference)
    add("other_estimands", other_estimands(draw))
    if cfg.experiment.figures:
        atts = head[head["att"]] if len(head) else head
        if len(atts):
            forest = atts.assign(term=atts["estimator"], estimator="every ATT estimator")
            figure("headline", report.forest_figure(
                forest, "term", figs / "dossier_headline.png",
                f"ATT estimates on the panel ({report.level(alpha)} CIs of each estimator)"),
                "ATT estimates with their confidence intervals, one panel per outcome.")
        ev = draw.event_terms()
        if len(ev):
            figure("event_study", report.event_study_figure(
                ev, figs / "dossier_event_study.png", "Event-time effects of every event-time "
                "estimator"), "Event-time effects (reference period -1).")
    bacon, bacon_sum = bacon_tables(draw)
    add("bacon", bacon)
    add("bacon_summary", bacon_sum)
    if cfg.experiment.figures:
        for f in draw.succeeded(comparisons=True):
            if f.estimate.diagnostics.get("n_comparisons", 2) < 2:
                continue  # one 2x2 comparison: the table says it all
            figure(f"bacon_{f.outcome}", report.bacon_figure(
                f.estimate.terms, f.estimate.estimate, figs / f"dossier_bacon_{f.outcome}.png",
                f"Goodman-Bacon decomposition of TWFE on {f.outcome}"),
                f"Each 2x2 comparison's estimate against its weight ({f.outcome}).")
        for f in draw.succeeded(matching=True):
            for stem in (f"psm_overlap_{f.label}", f"psm_love_{f.label}"):
                figure(stem, figs / f"{stem}.png", f"{f.label}: "
                       + ("propensity-score overlap." if "overlap" in stem else
                          "covariate balance before and after matching."))

    placebo = _value(by_part, "placebo")
    if placebo:
        add("placebo_timing", _cols(placebo.get("timing"), [
            "outcome", "estimator", "term", "estimate", "std_error", "conf_low", "conf_high",
            "p_value"]))
        add("placebo_ri", _cols(placebo.get("randomization"), [
            "outcome", "estimator", "estimate", "actual_statistic", "ri_p_value", "ri_p_mcse",
            "n_assignments", "exact", "conventional_p_value"]))
        add("placebo_loo", _cols(placebo.get("leave_one_out"), [
            "outcome", "estimator", "term", "estimate", "std_error", "p_value", "full_estimate"]))
        add("placebo_skipped", placebo.get("skipped"))
        for p in placebo.get("figures", []):
            figure(p.stem, p, {"placebo_timing": "Fake treatment dates on pre-treatment years.",
                               "placebo_distribution": "The actual statistic among random "
                               "assignments of the pilot role.",
                               "leave_one_out": "Dropping one treated unit at a time."}
                   .get(p.stem, p.stem))
    spec = _value(by_part, "spec_curve")
    if spec:
        curve = spec["spec_curve"]
        add("spec_summary", spec_agreement(curve, ["outcome"], alpha))
        choices = [c for c in ("treatment_year", "controls", "estimator", "sample", "cluster",
                               "time_effects") if c in curve and curve[c].nunique() > 1]
        add("spec_by_choice", pd.concat([
            spec_agreement(curve, ["outcome", c], alpha).rename(columns={c: "value"})
            .assign(choice=c) for c in choices], ignore_index=True)[
                ["outcome", "choice", "value", "n_specifications", "n_failed", "median_estimate",
                 "min_estimate", "max_estimate", "share_same_sign", "share_significant_same_sign"]]
            if choices else None)
        add("spec_table", curve.drop(columns=[c for c in ("error",) if c in curve]))
        figure("spec_curve", spec.get("figure"), "Every specification's estimate, sorted, with "
               "the choices it made below.")
    sens = _value(by_part, "sensitivity")
    if sens:
        summ = sens["summary"]
        add("sensitivity_breakdown", _cols(summ[summ.get("breakdown", pd.Series(
            index=summ.index, dtype=float)).notna()] if "breakdown" in summ else None,
            ["outcome", "estimator", "restriction", "method", "breakdown"]))
        add("pretrend_power", _cols(summ[summ["restriction"] == "pre-trend power"]
                                    if "restriction" in summ else None,
                                    ["outcome", "estimator", "slope_50pct_power",
                                     "slope_80pct_power", "bias_given_pass_at_slope50",
                                     "bias_unconditional_at_slope50"]))
        add("sensitivity_notes", _cols(summ[summ["note"].notna()] if "note" in summ else None,
                                       ["outcome", "estimator", "note"]))
        add("honest_sets", sens["honest_sets"])
        figure("sensitivity", sens.get("figure"), "Honest confidence sets against the bound on "
               "the violation of parallel trends.")
    cal = _value(by_part, "calibrate")
    if cal:
        dgp = cal["dgp"]
        params = {"rho": dgp.rho, "sigma": dgp.sigma, "unit_sd": dgp.unit_sd,
                  "treated_shift": dgp.treated_shift, "selection": dgp.selection,
                  **{f"beta_{k}": v for k, v in dgp.beta.items()}}
        add("calibration_params", pd.DataFrame({"parameter": list(params),
                                                "value": list(params.values())}))
        add("calibration_moments", cal["moments"])
        add("bdm", _cols(cal["placebo"], ["estimator", "n_draws", "n_failed", "rejection",
                                          "rejection_mcse", "mean_estimate", "se_sd_ratio"]))
    mc, mc_fail = mc_diagnosands(by_part.get("montecarlo", []))
    if mc is not None:
        add("montecarlo", mc)
        add("mc_failures", mc_fail)
        if cfg.experiment.figures:
            figure("montecarlo", mc_figure(mc, figs / "dossier_montecarlo.png", alpha),
                   "Size (no effect) and coverage (the estimated effect) of every estimator, "
                   "with +-2 Monte Carlo standard errors.")

    parts = pd.DataFrame([{"part": o.name, "status": o.status, "seconds": o.seconds,
                           "reason": o.reason} for o in sorted(outcomes, key=lambda o: o.name)])
    dossier: dict[str, Any] = {
        "title": f"didlab dossier: {_data_name(cfg)}",
        "data": _data_name(cfg),
        "alpha": alpha,
        "outcomes": list(cfg.experiment.outcomes),
        "notes": notes,
        "tables": tables,
        "figures": figures,
        "parts": {o.name: {"part": o.part, "status": o.status, "seconds": o.seconds,
                           "reason": o.reason} for o in outcomes},
        "montecarlo": dict(mc_info, n_reps=int(cfg.experiment.n_reps)),
        "run": {"seed": int(cfg.seed), "backend": cfg.backend.kind,
                "n_jobs": int(cfg.backend.n_jobs), "cpu_count": os.cpu_count(),
                "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "versions": report.package_versions()},
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    tables["parts"] = table(parts)
    dossier["verdict"] = verdict(dossier)
    dossier["bottom_line"] = bottom_line(dossier["verdict"])
    return dossier


def bottom_line(lines: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per outcome (and for the design): how many checks survive, and which do not."""
    out = []
    for outcome in dict.fromkeys(v["outcome"] for v in lines):
        mine = [v for v in lines if v["outcome"] == outcome and v["status"] != "info"]
        out.append({"outcome": outcome, "checks": len(mine),
                    "survives": sum(v["status"] == "survives" for v in mine),
                    **{s: [v["topic"] for v in mine if v["status"] == s]
                       for s in ("caution", "fails", "not run")}})
    return out


def _value(by_part: Mapping[str, list[Outcome]], part: str) -> Any:
    got = [o for o in by_part.get(part, []) if o.status == "ok"]
    return got[0].value if got else None


def _cols(frame: pd.DataFrame | None, cols: Sequence[str]) -> pd.DataFrame | None:
    if frame is None or not len(frame):
        return None
    return frame[[c for c in cols if c in frame]]


def _data_name(cfg: DictConfig) -> str:
    if cfg.data.kind == "file":
        return Path(str(cfg.data.path)).name
    return f"simulated {cfg.data.kind} panel (seed {cfg.seed})"


def panel_glance(cfg: DictConfig, draw: Any) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The panel at a glance: shape, cohorts, treated shares, missing values and the
    pre-treatment gap between treated and never-treated units."""
    panel = draw.panel
    outcomes = list(cfg.experiment.outcomes)
    controls = [c for c in cfg.data.get("controls", []) if c in panel]
    info = validate_panel(panel, outcomes)
    notes: list[str] = []
    if draw.is_file:
        from .build import load_or_draw
        from .realdata import read_table

        _, notes = load_or_draw(cfg)
        raw = read_table(str(cfg.data.path), cfg.data.get("format"))
        source = raw
    else:
        source = panel
    shape = pd.DataFrame([
        ("observations", info.n_obs), ("units", info.n_units), ("periods", info.n_periods),
        ("first period", info.first_period), ("last period", info.last_period),
        ("balanced", bool(info.balanced)), ("treated units", info.n_treated_units),
        ("never-treated units", info.n_never_treated),
        ("treated share of units", info.n_treated_units / info.n_units),
        ("treated share of observations (d = 1)", float(panel[D].mean())),
        ("cohorts", ", ".join(str(c) for c in info.cohorts)),
    ], columns=["quantity", "value"])
    cohort_u = panel.groupby(UNIT)[COHORT].first()
    cohorts = (cohort_u[cohort_u > 0].value_counts().sort_index()
               .rename_axis("cohort").reset_index(name="units"))
    cohorts["share_of_units"] = cohorts["units"] / info.n_units
    periods = np.sort(panel[TIME].unique())
    cohorts["post_periods"] = [int((periods >= c).sum()) for c in cohorts["cohort"]]
    missing = source.isna().sum()
    missing = pd.DataFrame({"column": missing.index.astype(str), "missing": missing.to_numpy(),
                            "share": missing.to_numpy() / max(len(source), 1)})
    missing = missing[missing["missing"] > 0]
    if not len(missing):
        missing = pd.DataFrame({"column": ["(every column)"], "missing": [0], "share": [0.0]})
    first = min(info.cohorts) if info.cohorts else None
    pre = panel[panel[TIME] < first] if first is not None else panel
    treated = pre.groupby(UNIT)[COHORT].transform("first") > 0
    rows = []
    for col in [*outcomes, *controls]:
        a, b = pre.loc[treated, col], pre.loc[~treated, col]
        sd = math.sqrt((a.var() + b.var()) / 2) if len(a) > 1 and len(b) > 1 else float("nan")
        rows.append({"variable": col, "role": "outcome" if col in outcomes else "control",
                     "mean_treated": a.mean(), "mean_never_treated": b.mean(),
                     "normalized_difference": (a.mean() - b.mean()) / sd if sd else float("nan")})
    return {"panel": shape, "cohorts": cohorts, "missing": missing,
            "pre_balance": pd.DataFrame(rows)}, list(notes)


def headline_tables(draw: Any, variants: Sequence[Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per fit with its inference; the fits that failed, with the reason."""
    rows, failed = [], []
    for f in draw.fits.values():
        if f.estimate is None:
            failed.append({"outcome": f.outcome, "estimator": f.label, "reason": f.error})
            continue
        e = f.estimate
        row = {"outcome": f.outcome, "estimator": f.label, "term": e.term,
               "estimate": e.estimate, "std_error": e.std_error, "conf_low": e.conf_low,
               "conf_high": e.conf_high, "p_value": e.p_value,
               "pretrend_p": e.diagnostics.get("pretrend_p", np.nan), "n_obs": e.n_obs,
               "inference": e.inference, "att": is_att(f)}
        if not draw.is_file:
            row["truth"] = f.truth.get(e.term, np.nan)
        rows.append(row)
    return pd.DataFrame(rows), pd.DataFrame(failed)


def estimator_table(draw: Any) -> pd.DataFrame:
    seen = {}
    for f in draw.fits.values():
        if f.label not in seen:
            e = catalog.entry_of(f.estimator)
            seen[f.label] = {"estimator": f.label, "kind": e.kind, "what it is": e.summary}
    return pd.DataFrame(list(seen.values()))


def inference_table(draw: Any, variants: Sequence[Any]) -> pd.DataFrame:
    """Each estimator with inference variants: its own inference first, then each method."""
    rows = []
    bases = {(v.outcome, v.label.split("[")[0]) for v in variants}
    for f in [*draw.fits.values(), *variants]:
        base = f.label.split("[")[0]
        if (f.outcome, base) not in bases:
            continue
        method = f.label[len(base) + 1:-1] if "[" in f.label else "as configured"
        e = f.estimate
        rows.append({"outcome": f.outcome, "estimator": base, "method": method,
                     "estimate": e.estimate if e else np.nan,
                     "std_error": e.std_error if e else np.nan,
                     "conf_low": e.conf_low if e else np.nan,
                     "conf_high": e.conf_high if e else np.nan,
                     "p_value": e.p_value if e else np.nan,
                     "inference": e.inference if e else f.error})
    frame = pd.DataFrame(rows)
    if len(frame):
        order = {m: i for i, m in enumerate(dict.fromkeys(frame["method"]))}
        frame = frame.sort_values(["outcome", "estimator", "method"],
                                  key=lambda s: s.map(order) if s.name == "method" else s,
                                  kind="stable")
    return frame


def other_estimands(draw: Any) -> pd.DataFrame:
    """The terms of fits whose headline is not an ATT (mediation's indirect effects, ...)."""
    frames = []
    for f in draw.fits.values():
        caps = f.capabilities
        if (f.estimate is None or is_att(f) or caps.comparisons or caps.quantiles
                or caps.subgroups):
            continue
        t = f.estimate.terms
        cols = [c for c in ("term", "estimate", "std_error", "conf_low", "conf_high", "p_value")
                if c in t]
        frames.append(t[cols].assign(outcome=f.outcome, estimator=f.label))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    return out[["outcome", "estimator", *[c for c in out if c not in ("outcome", "estimator")]]]


def bacon_tables(draw: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Goodman-Bacon weights by comparison type, and how much of TWFE rests on comparisons
    with already-treated units as controls."""
    types, summary = [], []
    for f in draw.succeeded(comparisons=True):
        t = f.estimate.terms
        by_type = t[t["level"] == "type"][["term", "weight", "estimate"]]
        types.append(by_type.assign(outcome=f.outcome)[["outcome", "term", "weight", "estimate"]])
        forbidden = float(f.estimate.diagnostics.get("weight_forbidden_comparisons", 0.0))
        pairs = t[t["level"] == "pair"]
        late = pairs["type"].astype(str).str.contains("earlier as control")
        contribution = float((pairs.loc[late, "weight"] * pairs.loc[late, "estimate"]).sum())
        summary.append({"outcome": f.outcome, "twfe": f.estimate.estimate,
                        "weight_already_treated_controls": forbidden,
                        "contribution_already_treated_controls": contribution,
                        "n_comparisons": int(f.estimate.diagnostics.get("n_comparisons", len(pairs)))})
    return (pd.concat(types, ignore_index=True) if types else pd.DataFrame(),
            pd.DataFrame(summary))


def spec_agreement(curve: pd.DataFrame, by: list[str], alpha: float) -> pd.DataFrame:
    """Per group of specifications: how many, their spread, and the share that have the
    sign of the outcome's median over every specification (significant at ``alpha`` or
    not)."""
    rows = []
    fine = curve[curve["error"].astype(str) == ""]
    signs = np.sign(fine.groupby("outcome")["estimate"].median())
    for key, g in curve.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        ok = g[g["error"].astype(str) == ""]
        med = float(ok["estimate"].median()) if len(ok) else float("nan")
        sign = float(signs.get(dict(zip(by, key))["outcome"], 0.0))
        same = np.sign(ok["estimate"]) == sign
        rows.append({**dict(zip(by, key)), "n_specifications": len(g),
                     "n_failed": int(len(g) - len(ok)), "median_estimate": med,
                     "min_estimate": float(ok["estimate"].min()) if len(ok) else float("nan"),
                     "max_estimate": float(ok["estimate"].max()) if len(ok) else float("nan"),
                     "share_same_sign": float(same.mean()) if len(ok) else float("nan"),
                     "share_significant_same_sign": float((same & (ok["p_value"] < alpha)).mean())
                     if len(ok) else float("nan")})
    return pd.DataFrame(rows)


def mc_diagnosands(outcomes: Sequence[Outcome]) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """Bias, coverage, size and power of every estimator in each Monte Carlo cell, and the
    estimators that fail in more than 2% of a cell's panels (with the usual reason)."""
    from .montecarlo import diagnose
    from .montecarlo_run import binomial_band, failure_table

    order = (NULL_CELL, EFFECT_CELL)
    # in the cells' order, whichever finished first: the table does not depend on workers
    results = sorted((o.value for o in outcomes if o.status == "ok"),
                     key=lambda r: order.index(r["cell"].iloc[0]) if len(r) else 0)
    if not results:
        return None, pd.DataFrame()
    res = pd.concat(results, ignore_index=True)
    diag = diagnose(res[res["role"] == "headline"], by=("cell", "outcome", "estimator", "term"))
    diag = diag[diag["n_draws"] > 0].copy()
    n_ok = diag["n_draws"].astype(int)
    bands = [binomial_band(a if np.isfinite(a) else 0.05, n) for a, n in zip(diag["alpha"], n_ok)]
    diag["size_band_low"] = [b[0] for b in bands]
    diag["size_band_high"] = [b[1] for b in bands]
    cols = ["cell", "estimator", "term", "n_draws", "n_failed", "mean_truth", "bias", "bias_mcse",
            "rmse", "se_sd_ratio", "coverage", "coverage_mcse", "rejection", "rejection_mcse",
            "rejection_is", "size_band_low", "size_band_high", "alpha"]
    return (diag[[c for c in cols if c in diag]].reset_index(drop=True),
            failure_table(res, []).drop(columns=["outcome"], errors="ignore"))


def mc_figure(diag: pd.DataFrame, path: Path, alpha: float) -> Path:
    """Size under no effect and coverage under the estimated effect, one row per estimator,
    +-2 Monte Carlo SE, nominal levels dashed."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    labels = list(dict.fromkeys(diag["estimator"]))
    panels = [(NULL_CELL, "rejection", f"size: rejection at {alpha:g} with no effect", alpha),
              (EFFECT_CELL, "coverage", f"coverage of the {report.level(alpha)} CI, "
                                        "estimated effect", 1 - alpha),
              (EFFECT_CELL, "rejection", "power at the estimated effect", None)]
    panels = [p for p in panels if (diag["cell"] == p[0]).any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.5,
                                                      0.32 * len(labels) + 1.4),
                             squeeze=False, sharey=True)
    y = np.arange(len(labels))
    for ax, (cell, col, title, ref) in zip(axes[0], panels):
        g = diag[diag["cell"] == cell].set_index("estimator").reindex(labels)
        ax.errorbar(g[col], y, xerr=2 * g[f"{col}_mcse"], fmt="o", ms=4, capsize=2,
                    color=sns.color_palette("deep")[0])
        if ref is not None:
            ax.axvline(ref, color="black", lw=0.8, ls="--")
        ax.set_title(title, fontsize=9)
        ax.set_xlim(-0.02, 1.02)
    axes[0][0].set_yticks(y)
    axes[0][0].set_yticklabels(labels, fontsize=8)
    axes[0][0].invert_yaxis()
    fig.tight_layout()
    return report.save_figure(fig, path)


# --- the verdict ------------------------------------------------------------------------------

def verdict(dossier: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Lines written from the numbers: which conclusion survives which choice.

    Each line has a topic, the outcome it is about (None: the design), a status
    (``survives``, ``caution``, ``fails``, ``not run``), a sentence with ``{name}``
    placeholders and the numbers that fill them. The rules are stated in the report.
    """
    t = {k: frame_of(v) for k, v in dossier["tables"].items()}
    alpha = float(dossier["alpha"])
    parts = dossier["parts"]
    lines: list[dict[str, Any]] = []

    def line(topic: str, outcome: str | None, status: str, text: str, **numbers: Any) -> None:
        lines.append({"topic": topic, "outcome": outcome, "status": status, "text": text,
                      "numbers": {k: _plain(v) for k, v in numbers.items()}})

    def missing(topic: str, part: str) -> None:
        """One line for a part that did not run (once, not per outcome)."""
        if any(v["topic"] == topic and v["status"] == "not run" for v in lines):
            return
        reasons = [p["reason"] for p in parts.values() if p["part"] == part and p["reason"]]
        line(topic, None, "not run", "this part did not run: " + "; ".join(reasons).replace(
            "{", "(").replace("}", ")"))

    head = t.get("headline", pd.DataFrame())
    for outcome in dossier["outcomes"]:
        h = head[(head["outcome"] == outcome) & head["att"].astype(bool)] if len(head) else head
        if not len(h):
            line("Estimators", outcome, "not run", "no ATT estimator fitted this outcome")
            continue
        sign = float(np.sign(np.median(h["estimate"])))
        direction = "negative" if sign < 0 else "positive"
        same = int((np.sign(h["estimate"]) == sign).sum())
        sig = int(((np.sign(h["estimate"]) == sign) & (h["p_value"] < alpha)).sum())
        status = ("survives" if sig == len(h) else "caution" if same == len(h) else "fails")
        line("Estimators", outcome, status,
             f"{{same}} of {{n}} ATT estimators give a {direction} effect, from {{low}} to "
             f"{{high}}; {{sig}} of them are significant at {{alpha}}",
             same=same, n=len(h), low=float(h["estimate"].min()), high=float(h["estimate"].max()),
             sig=sig, alpha=alpha)
        inf = t.get("inference")
        if inf is not None:
            g = inf[(inf["outcome"] == outcome) & (inf["method"] != "as configured")]
            g = g[g["p_value"].notna()]
            if len(g):
                worst = g.loc[g["p_value"].idxmax()]
                ok = bool((g["p_value"] < alpha).all() and (np.sign(g["estimate"]) == sign).all())
                line("Inference for few treated clusters", outcome,
                     "survives" if ok else "fails",
                     f"over {{k}} estimators re-tested with {', '.join(dict.fromkeys(g['method']))}"
                     f", the largest p-value is {{p}} ({worst['estimator']} with "
                     f"{worst['method']})", k=len(g), p=float(worst["p_value"]))
        _placebo_lines(t, outcome, sign, alpha, line, parts, missing)
        _spec_lines(t, outcome, sign, float(dossier["config"]["experiment"]["dossier"]
                                           ["spec_share"]), line, parts, missing)
        _trend_lines(t, outcome, h, alpha, line, parts, missing)
    _bacon_line(t, line)
    _mc_lines(t, dossier, alpha, line, parts, missing)
    return lines


def _placebo_lines(t: Mapping[str, pd.DataFrame], outcome: str, sign: float, alpha: float,
                   line: Callable[..., None], parts: Mapping[str, Any], missing: Callable[[str, str], None]) -> None:
    if parts.get("placebo", {}).get("status") != "ok":
        missing("Placebo tests", "placebo")
        return
    tim = t.get("placebo_timing")
    if tim is not None and (tim["outcome"] == outcome).any():
        g = tim[tim["outcome"] == outcome]
        low = g.loc[g["p_value"].idxmin()]
        rejects = int((g["p_value"] < alpha).sum())
        line("Treatment date: fake earlier dates", outcome,
             "survives" if rejects == 0 else "fails",
             f"{{rejects}} of {{n}} fake dates on pre-treatment years give an effect "
             f"significant at {{alpha}}; the smallest p-value is {{p}} ({low['estimator']}, "
             f"{low['term']}, estimate {{est}})",
             rejects=rejects, n=len(g), alpha=alpha, p=float(low["p_value"]),
             est=float(low["estimate"]))
    ri = t.get("placebo_ri")
    if ri is not None and (ri["outcome"] == outcome).any():
        g = ri[ri["outcome"] == outcome]
        worst = g.loc[g["ri_p_value"].idxmax()]
        ok = bool((g["ri_p_value"] < alpha).all())
        line("Choice of pilots: fake pilots", outcome, "survives" if ok else "fails",
             f"randomization p-value {{p}} ({worst['estimator']}, {{n}} random assignments "
             f"of the pilot role); the conventional p-value was {{p0}}",
             p=float(worst["ri_p_value"]), n=int(worst["n_assignments"]),
             p0=float(worst["conventional_p_value"]))
    loo = t.get("placebo_loo")
    if loo is not None and (loo["outcome"] == outcome).any():
        g = loo[loo["outcome"] == outcome]
        same = np.sign(g["estimate"]) == sign
        sig = same & (g["p_value"] < alpha)
        weakest = g.loc[(g["estimate"] * sign).idxmin()]
        status = "survives" if sig.all() else "caution" if same.all() else "fails"
        line("Choice of pilots: leave one out", outcome, status,
             f"dropping one treated unit at a time ({{n}} fits), {{sig}} keep a significant "
             f"effect of the same sign; estimates from {{low}} to {{high}}, the weakest: "
             f"{weakest['term']} ({weakest['estimator']})",
             n=len(g), sig=int(sig.sum()), low=float(g["estimate"].min()),
             high=float(g["estimate"].max()))


def _spec_lines(t: Mapping[str, pd.DataFrame], outcome: str, sign: float, share: float, line: Callable[..., None],
                parts: Mapping[str, Any], missing: Callable[[str, str], None]) -> None:
    if parts.get("spec_curve", {}).get("status") != "ok":
        missing("Specification curve", "spec_curve")
        return
    s = t.get("spec_summary")
    if s is None or not (s["outcome"] == outcome).any():
        return
    r = s[s["outcome"] == outcome].iloc[0]
    status = ("survives" if r["share_significant_same_sign"] >= share else
              "caution" if r["share_same_sign"] >= share else "fails")
    line("Specification curve", outcome, status,
         "{sig}% of the {n} specifications are significant with the median's sign ({same}% "
         "have its sign); estimates from {low} to {high}, median {med}",
         sig=100 * float(r["share_significant_same_sign"]), n=int(r["n_specifications"]),
         same=100 * float(r["share_same_sign"]), low=float(r["min_estimate"]),
         high=float(r["max_estimate"]), med=float(r["median_estimate"]))
    b = t.get("spec_by_choice")
    if b is not None:
        g = b[(b["outcome"] == outcome) & (b["choice"] == "treatment_year")]
        if len(g):
            worst = g.loc[g["share_significant_same_sign"].idxmin()]
            status = ("survives" if g["share_significant_same_sign"].min() >= share else
                      "caution" if g["share_same_sign"].min() >= share else "fails")
            line("Treatment date: later dates", outcome, status,
                 f"with the treatment dated {', '.join(str(v) for v in g['value'])}, the "
                 f"least favourable date ({worst['value']}) has {{sig}}% of its specifications "
                 "significant with the same sign, median {med}",
                 sig=100 * float(worst["share_significant_same_sign"]),
                 med=float(worst["median_estimate"]))


def _trend_lines(t: Mapping[str, pd.DataFrame], outcome: str, h: pd.DataFrame, alpha: float,
                 line: Callable[..., None], parts: Mapping[str, Any], missing: Callable[[str, str], None]) -> None:
    pre = h[h["pretrend_p"].notna()]
    if len(pre):
        rej = int((pre["pretrend_p"] < alpha).sum())
        low = pre.loc[pre["pretrend_p"].idxmin()]
        line("Parallel trends: pre-test", outcome, "survives" if rej == 0 else "caution",
             f"{{rej}} of {{n}} pre-trend tests reject at {{alpha}}; the smallest p-value is "
             f"{{p}} ({low['estimator']})", rej=rej, n=len(pre), alpha=alpha,
             p=float(low["pretrend_p"]))
    if parts.get("sensitivity", {}).get("status") != "ok":
        missing("Parallel trends: honest sets", "sensitivity")
        return
    b = t.get("sensitivity_breakdown")
    if b is not None and (b["outcome"] == outcome).any():
        for _, r in b[b["outcome"] == outcome].iterrows():
            if r["restriction"] == "relative_magnitudes":
                status = ("survives" if r["breakdown"] >= 1 else
                          "caution" if r["breakdown"] > 0 else "fails")
                line("Parallel trends: relative magnitudes", outcome, status,
                     f"{r['estimator']}: the {r['method']} set excludes zero while post-period "
                     "violations stay below {m} times the largest pre-period one (breakdown "
                     "Mbar; 1 means as large as the worst pre-period change)",
                     m=float(r["breakdown"]))
            elif r["breakdown"] > 0:
                line("Parallel trends: smoothness", outcome, "survives",
                     f"{r['estimator']}: the {r['method']} set excludes zero while the trend's "
                     "slope changes by less than {m} per period (breakdown M)",
                     m=float(r["breakdown"]))
            else:
                line("Parallel trends: smoothness", outcome, "fails",
                     f"{r['estimator']}: the {r['method']} set includes zero already at M = "
                     "{m}: a linear trend continued from the pre-periods could explain the "
                     "effect", m=float(r["breakdown"]))
    pw = t.get("pretrend_power")
    if pw is not None and (pw["outcome"] == outcome).any():
        for _, r in pw[pw["outcome"] == outcome].iterrows():
            line("Parallel trends: pre-test power", outcome, "info",
                 f"{r['estimator']}: a linear pre-trend of slope {{s80}} per period is "
                 "detected with 80% power ({s50} with 50%); at the 50% slope, passing the "
                 "pre-test leaves a bias of {bias}",
                 s80=float(r["slope_80pct_power"]), s50=float(r["slope_50pct_power"]),
                 bias=float(r["bias_given_pass_at_slope50"]))


def _bacon_line(t: Mapping[str, pd.DataFrame], line: Callable[..., None]) -> None:
    s = t.get("bacon_summary")
    if s is None:
        return
    for _, r in s.iterrows():
        w = float(r["weight_already_treated_controls"])
        line("TWFE: comparisons with already-treated units", r["outcome"],
             "survives" if w < 0.1 else "caution",
             "{w} of the TWFE weight ({n} 2x2 comparisons) uses already-treated units as "
             "controls, contributing {c} to its estimate of {b}",
             w=w, n=int(r["n_comparisons"]), c=float(r["contribution_already_treated_controls"]),
             b=float(r["twfe"]))


def _mc_lines(t: Mapping[str, pd.DataFrame], dossier: Mapping[str, Any], alpha: float, line: Callable[..., None],
              parts: Mapping[str, Any], missing: Callable[[str, str], None]) -> None:
    mc = t.get("montecarlo")
    if mc is None:
        missing("Design: calibrated Monte Carlo", "montecarlo")
    else:
        info = dossier["montecarlo"]
        null = mc[mc["cell"] == NULL_CELL]
        if len(null):
            over = null[null["rejection"] > null["size_band_high"]]
            worst = null.loc[null["rejection"].idxmax()]
            best = null.loc[(null["rejection"] - alpha).abs().idxmin()]
            line("Design: size in the simulator", info.get("outcome"),
                 "survives" if not len(over) else "caution",
                 f"with no effect, {{k}} of {{n}} estimators reject more often than the 99% "
                 f"band around {{alpha}} allows ({', '.join(over['estimator']) or 'none'}); "
                 f"largest rate {{worst}} ({worst['estimator']}), closest to nominal {{best}} "
                 f"({best['estimator']}); {{reps}} draws each",
                 k=len(over), n=len(null), alpha=alpha, worst=float(worst["rejection"]),
                 best=float(best["rejection"]), reps=int(info.get("n_reps", 0)))
        eff = mc[(mc["cell"] == EFFECT_CELL) & mc["coverage"].notna()]
        if len(eff):
            low = eff.loc[eff["coverage"].idxmin()]
            bias = eff.loc[eff["bias"].abs().idxmax()]
            line("Design: coverage in the simulator", info.get("outcome"),
                 "survives" if low["coverage"] >= 1 - alpha - 2 * low["coverage_mcse"]
                 else "caution",
                 f"at an effect of {{eff}}, the lowest coverage of a {{level}}% interval is "
                 f"{{cov}} ({low['estimator']}, Monte Carlo SE {{se}}); the largest bias is "
                 f"{{bias}} ({bias['estimator']})",
                 eff=float(info.get("effect", np.nan)), level=100 * (1 - alpha),
                 cov=float(low["coverage"]), se=float(low["coverage_mcse"]),
                 bias=float(bias["bias"]))
            power = eff[eff["rejection_is"] == "power"]
            if len(power):
                weak = power.loc[power["rejection"].idxmin()]
                line("Design: power in the simulator", info.get("outcome"),
                     "survives" if weak["rejection"] >= 0.8 else "caution",
                     f"an effect of {{eff}} is detected in at least {{pow}}% of the panels "
                     f"(lowest: {weak['estimator']}; 80% is the usual target)",
                     eff=float(info.get("effect", np.nan)), pow=100 * float(weak["rejection"]))
        fails = t.get("mc_failures")
        if fails is not None and len(fails):
            worst = fails.loc[fails["failure_rate"].idxmax()]
            line("Design: estimators that fail", info.get("outcome"), "caution",
                 f"{{k}} estimator(s) fail in more than 2% of simulated panels; worst "
                 f"{worst['estimator']} ({{rate}}%: {worst['most_frequent_reason']})",
                 k=int(fails["estimator"].nunique()), rate=100 * float(worst["failure_rate"]))
    bdm = t.get("bdm")
    if bdm is not None:
        worst = bdm.loc[bdm["rejection"].idxmax()]
        from .montecarlo_run import binomial_band

        high = binomial_band(alpha, int(worst["n_draws"]))[1]
        line("Design: placebo on the real outcomes", None,
             "survives" if worst["rejection"] <= high else "caution",
             f"fake pilots among never-treated units (true effect zero): the highest "
             f"rejection rate is {{r}} ({worst['estimator']}, {{n}} draws; the 99% band "
             f"reaches {{high}})", r=float(worst["rejection"]), n=int(worst["n_draws"]),
             high=high)
    elif parts.get("calibrate", {}).get("status") == "failed":
        missing("Design: placebo on the real outcomes", "calibrate")


# --- rendering --------------------------------------------------------------------------------

#: sections of the report: (anchor, title, tables, figures) in order
SECTIONS = (
    ("panel", "The panel at a glance", ("panel", "cohorts", "missing", "pre_balance"), ()),
    ("headline", "Headline estimates", ("headline", "headline_failed", "estimators"),
     ("headline", "event_study", "psm_")),
    ("inference", "Inference for few treated clusters", ("inference",), ()),
    ("other", "Other estimands (mediation)", ("other_estimands",), ()),
    ("bacon", "Goodman-Bacon weights", ("bacon_summary", "bacon"), ("bacon_",)),
    ("placebo", "Placebo tests", ("placebo_timing", "placebo_ri", "placebo_loo",
                                  "placebo_skipped"),
     ("placebo_timing", "placebo_distribution", "leave_one_out")),
    ("spec_curve", "Specification curve", ("spec_summary", "spec_by_choice", "spec_table"),
     ("spec_curve",)),
    ("sensitivity", "Sensitivity to parallel-trend violations",
     ("sensitivity_breakdown", "pretrend_power", "sensitivity_notes", "honest_sets"),
     ("sensitivity",)),
    ("calibrate", "The simulator fitted to the panel",
     ("calibration_params", "calibration_moments", "bdm"), ()),
    ("montecarlo", "Monte Carlo on this design", ("montecarlo", "mc_failures"), ("montecarlo",)),
    ("run", "How this dossier was made", ("parts",), ()),
)
#: the parts whose failure a section reports
SECTION_PARTS = {"placebo": "placebo", "spec_curve": "spec_curve", "sensitivity": "sensitivity",
                 "calibrate": "calibrate", "montecarlo": "montecarlo"}
#: long tables shown folded
FOLDED = ("spec_table", "honest_sets", "bacon", "estimators")
P_COLUMNS = ("p_value", "ri_p_value", "conventional_p_value", "pretrend_p")


def styled(key: str, t: Mapping[str, Any], alpha: float) -> str:
    """One table as HTML by pandas' Styler: numbers through :func:`fmt`, p-values below
    ``alpha`` in bold, the table named by ``data-table``."""
    frame = frame_of(t)
    sty = (frame.style.format(fmt, escape="html").hide(axis="index")
           .set_table_attributes(f'class="dtable" data-table="{key}"'))
    numeric = [c for c in frame if c not in ("inference", "reason", "note", "what it is",
                                              "most_frequent_reason")]
    sty = sty.set_properties(subset=numeric, **{"white-space": "nowrap"})
    ps = [c for c in P_COLUMNS if c in frame]
    if ps:
        sty = sty.map(lambda v: "font-weight: 700" if isinstance(v, (int, float))
                      and v is not None and np.isfinite(v) and v < alpha else "", subset=ps)
    return sty.to_html()


def segments(text: str, numbers: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """A verdict sentence as (kind, text, name) pieces: literal text and named numbers."""
    out = []
    for literal, name, _, _ in string.Formatter().parse(text):
        if literal:
            out.append(("text", literal, ""))
        if name is not None:
            out.append(("num", fmt(numbers[name]), name))
    return out


def render(dossier: Mapping[str, Any], out: Path) -> str:
    """The dossier as one self-contained HTML page (jinja2 template)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True,
                      lstrip_blocks=True)
    alpha = float(dossier["alpha"])
    tables = {k: styled(k, v, alpha) for k, v in dossier["tables"].items()}
    images = {}
    for key, f in dossier["figures"].items():
        data = (out / f["path"]).read_bytes()
        images[key] = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    lines = [dict(v, index=i, segments=segments(v["text"], v["numbers"]))
             for i, v in enumerate(dossier["verdict"])]
    groups = [(outcome, [v for v in lines if v["outcome"] == outcome])
              for outcome in dict.fromkeys(v["outcome"] for v in lines)]
    sections = []
    for anchor, title, tkeys, fkeys in SECTIONS:
        figs = [k for k in dossier["figures"] if any(k == p or (p.endswith("_") and
                                                               k.startswith(p)) for p in fkeys)]
        part = SECTION_PARTS.get(anchor)
        status = [p for p in dossier["parts"].values() if p["part"] == part] if part else []
        sections.append({"anchor": anchor, "title": title,
                         "tables": [k for k in tkeys if k in tables], "figures": figs,
                         "status": status})
    counts = {s: sum(v["status"] == s for v in dossier["verdict"])
              for s in ("survives", "caution", "fails", "not run", "info")}
    return env.get_template("dossier.html.j2").render(
        d=dossier, tables=tables, images=images, groups=groups, sections=sections,
        counts=counts, folded=FOLDED, captions=CAPTIONS, fmt=fmt,
        config=OmegaConf.to_yaml(OmegaConf.create(dossier["config"])))


#: each table's title and what it shows (the template prints both above the table)
CAPTIONS = {
    "panel": ("Shape", "The panel as the estimators see it."),
    "cohorts": ("Cohorts", "Treated cohorts (first treated period), their size, and the "
                "periods from the first treated one to the panel's end."),
    "missing": ("Missing values", "Missing values in the data as read (the estimators use "
                "complete rows only)."),
    "pre_balance": ("Before treatment", "Means before the first treatment, treated against "
                    "never-treated units; the normalized difference divides the gap by the "
                    "pooled SD (above 0.25 in absolute value is a large imbalance)."),
    "headline": ("Every estimator", "Each configured estimator fitted once on the panel; att "
                 "marks those whose headline is an average effect on the treated (compared "
                 "in the verdict); pretrend_p is the estimator's own pre-trend test."),
    "headline_failed": ("Estimators that failed", "Estimators that could not be fitted on "
                        "this panel, and why."),
    "estimators": ("The estimators", "What each estimator is (from the catalogue)."),
    "inference": ("Alternative inference", "The same estimates under the inference methods "
                  "of experiment.dossier.inference, for every estimator whose options accept "
                  "them."),
    "other_estimands": ("Terms", "Terms of estimators whose headline is not an ATT (the "
                        "mediation analysis: total effect c, paths a and b, direct effect c', "
                        "indirect effect a*b per mediator)."),
    "bacon_summary": ("Already-treated controls", "How much of the TWFE coefficient rests on "
                      "2x2 comparisons that use already-treated units as controls (biased "
                      "when effects change over time)."),
    "bacon": ("Comparison types", "The TWFE coefficient as a weighted average of 2x2 "
              "comparisons, by type."),
    "placebo_timing": ("Fake earlier dates", "Treatment dates moved back by 1, 2, ... "
                       "periods, on pre-treatment periods only: every effect should be "
                       "zero."),
    "placebo_ri": ("Fake pilots", "Randomization inference: the pilot role permuted among "
                   "units (cohort sizes kept); ri_p_value counts the actual assignment, "
                   "ri_p_mcse is its Monte Carlo SE."),
    "placebo_loo": ("Leave one pilot out", "One treated unit left out at a time (term names "
                    "the unit left out)."),
    "placebo_skipped": ("Not applicable", "Placebo tests that do not apply to this panel."),
    "spec_summary": ("Agreement", "Agreement across every specification, per outcome: the "
                     "shares have the sign of the median."),
    "spec_by_choice": ("By choice", "Agreement by each choice that varies (treatment date, "
                       "controls, estimator, ...)."),
    "spec_table": ("Every specification", "Each specification's choices and estimate."),
    "sensitivity_breakdown": ("Breakdown values", "The largest violation of parallel trends "
                              "under which the honest set still excludes zero (smoothness: "
                              "M, change of slope per period; relative magnitudes: Mbar, "
                              "multiple of the largest pre-period change)."),
    "pretrend_power": ("Pre-trend power", "Power of the pre-test against linear trends (Roth "
                       "2022), and the bias of the estimate among draws that pass it."),
    "sensitivity_notes": ("Not used", "Event-time estimators the sensitivity analysis could "
                          "not use, and why."),
    "honest_sets": ("Honest sets", "Honest confidence sets (Rambachan and Roth 2023) along "
                    "the bound."),
    "calibration_params": ("Parameters", "Parameters of the simulator fitted to the panel "
                           "(calibrate/calibrated.yaml)."),
    "calibration_moments": ("Moments", "Moments of the data and of one simulated panel."),
    "bdm": ("Placebo on the real outcomes", "Bertrand-Duflo-Mullainathan: the real outcomes "
            "of never-treated units, random fake pilots with the data's cohort sizes; every "
            "rejection is false."),
    "montecarlo": ("Diagnosands", "Every estimator (and inference variant) on panels drawn "
                   "from the simulator: with no effect, rejection is the size; at the "
                   "estimated effect it is the power. size_band_low/high is the 99% binomial "
                   "band around the nominal level."),
    "mc_failures": ("Failed fits", "Estimators that fail in more than 2% of a cell's "
                    "simulated panels, with the most frequent reason."),
    "parts": ("Parts", "Each part of the dossier: status, wall time and, when it did not "
              "run, why."),
}
