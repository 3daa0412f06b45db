"""``run(cfg)``: what the ``didlab`` command does, callable without Hydra's decorator."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from estimators.panel import OptionError, check_choice

from . import report
from .build import build_draw, build_estimators, load_or_draw, resolve_calibrated
from .montecarlo import (Backend, Design, _accepts_rng, design_key, diagnose, estimator_seed,
                         fit_one, replicate_seed,
                         run_designs)

EXPERIMENT_KINDS = ("single", "montecarlo", "placebo", "estimate", "spec_curve", "calibrate",
                    "sensitivity")
AXES = ("data", "assignment", "timing", "effect")
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose(overrides: list[str]) -> DictConfig:
    """Compose the didlab config with overrides (inside or outside a running Hydra app)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from .schema import register

    register()
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def _choices(cfg: DictConfig) -> dict[str, str]:
    """Which option of each axis group the config came from (Hydra's runtime choices)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        ch = HydraConfig.get().runtime.choices
        return {a: str(ch.get(a)) for a in AXES if ch.get(a) is not None}
    except (ValueError, ImportError):
        return {a: "custom" for a in AXES}


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except (ValueError, ImportError):
        return False


def cells(cfg: DictConfig) -> list[tuple[DictConfig, dict[str, str]]]:
    """The design cells of a run: the config itself, or its ``experiment.grid`` crossed
    (grid axes replace whole groups; a multirun sweep defines its own cells instead)."""
    base = _choices(cfg)
    grid = OmegaConf.to_container(cfg.experiment.grid) if cfg.experiment.grid else {}
    if not grid or _in_multirun():
        return [(cfg, base)]
    for group in grid:
        if not isinstance(grid[group], list) or not grid[group]:
            raise OptionError(f"experiment.grid.{group} must be a non-empty list of options")
    for group in grid:
        check_choice("experiment.grid key", group, AXES)
    nodes = {(g, o): compose([f"{g}={o}"])[g] for g, opts in grid.items() for o in opts}
    out = []
    for combo in itertools.product(*[[(g, o) for o in opts] for g, opts in grid.items()]):
        c = cfg.copy()
        OmegaConf.set_struct(c, False)
        axes = dict(base)
        for g, o in combo:
            c[g] = nodes[(g, o)]
            axes[g] = o
        OmegaConf.set_struct(c, True)
        out.append((c, axes))
    return out


def cell_name(axes: Mapping[str, str], varying: set[str] | None = None) -> str:
    """``group=option`` pairs of the axes that vary across the run's cells."""
    keys = [k for k in axes if varying is None or k in varying]
    return ",".join(f"{k}={axes[k]}" for k in keys) or "default"


def _hash_payload(cfg: DictConfig) -> dict[str, Any]:
    from importlib import metadata

    c = OmegaConf.to_container(cfg, resolve=True)
    return {
        "data": c["data"], "assignment": c["assignment"], "timing": c["timing"],
        "effect": c["effect"], "estimator": c["estimator"], "seed": c["seed"],
        "outcomes": c["experiment"]["outcomes"], "chunk_size": c["experiment"]["chunk_size"],
        "didlab": metadata.version("didlab"),
    }


def single_draw(cfg: DictConfig) -> tuple[pd.DataFrame, pd.DataFrame, list, pd.DataFrame]:
    """Draw replicate 0 of the configured design and fit every estimator on it.

    Returns the headline table, the event-time terms (with their truths), any
    Goodman-Bacon decompositions as (outcome, label, Estimate), and the panel. With
    ``data=file`` the panel is the user's and there is no truth.
    """
    panel, notes = load_or_draw(cfg)
    for n in notes:
        print(f"data: {n}")
    outcomes = list(cfg.experiment.outcomes)
    estimators = build_estimators(cfg, outcomes)
    rows, ev = [], []
    bacon = []
    for (outcome, label), est in estimators.items():
        rng = (np.random.default_rng(estimator_seed(int(cfg.seed), 0, label))
               if _accepts_rng(est) else None)
        rows.extend(fit_one(est, panel, rng, "single", 0, outcome, label))
        if type(est).__name__ == "BaconDecomposition" and not rows[-1]["error"]:
            bacon.append((outcome, label, est.fit(panel)))
        if type(est).__name__ in ("QuantileDID", "ChangesInChanges") and not rows[-1]["error"]:
            fitted = est.fit(panel, rng=np.random.default_rng(0))
            t = fitted.terms.assign(outcome=outcome, estimator=label)
            if hasattr(est, "estimand") and f"y0_{outcome}" in panel:
                truth = est.estimand(panel)
                t["truth"] = [truth.get(n, np.nan) for n in t["term"]]
            bacon.append(("quantile", label, t))
        if type(est).__name__ == "Heterogeneity" and not rows[-1]["error"]:
            bacon.append(("heterogeneity", label, est.fit(panel).terms.assign(
                outcome=outcome, estimator=label)))
        if hasattr(est, "match") and not rows[-1]["error"] and outcome == outcomes[0]:
            bacon.append(("psm", label, est.match(panel, rng=np.random.default_rng(0))))
        if rows[-1]["error"] or "event_time" not in _terms_columns(est):
            continue
        fitted = est.fit(panel)
        t = fitted.terms.dropna(subset=["event_time"]).copy()
        if t.empty:
            continue
        truth = (est.estimand(panel) if hasattr(est, "estimand") and f"te_{outcome}" in panel
                 else {})
        t["truth"] = [truth.get(f"ev{int(e):+d}", np.nan) for e in t["event_time"]]
        t["outcome"], t["estimator"] = outcome, label
        ref = getattr(est, "ref", None)
        if ref is not None and not (t["event_time"] == ref).any():
            t = pd.concat([t, pd.DataFrame({
                "term": [f"ev{ref:+d}"], "estimate": [0.0], "conf_low": [0.0], "conf_high": [0.0],
                "event_time": [float(ref)], "truth": [0.0], "outcome": [outcome],
                "estimator": [label]})], ignore_index=True)
        ev.append(t[["outcome", "estimator", "term", "event_time", "estimate", "conf_low",
                     "conf_high", "truth"]])
    table = pd.DataFrame(rows)
    if cfg.data.kind == "file":
        table["truth"] = np.nan  # real data: no truth
    return table, (pd.concat(ev, ignore_index=True) if ev else pd.DataFrame()), bacon, panel


def _terms_columns(est: Any) -> set[str]:
    """Which kinds of detail an estimator reports (event-time estimators report
    ``event_time``), without fitting it."""
    kinds = {"EventStudy", "SunAbraham", "CallawaySantAnna", "Imputation"}
    return {"event_time"} if type(est).__name__ in kinds else set()


SINGLE_COLUMNS = ["outcome", "estimator", "term", "truth", "estimate", "std_error", "conf_low",
                  "conf_high", "p_value", "pretrend_p", "n_obs", "error"]


def _print_table(title: str, frame: pd.DataFrame) -> None:
    with pd.option_context("display.width", 160, "display.max_columns", 30,
                           "display.max_rows", 200, "display.float_format", "{:.4f}".format):
        print(f"\n{title}\n{frame.to_string(index=False)}")


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
    cfg = resolve_calibrated(cfg)
    kind = cfg.experiment.kind
    check_experiment(cfg)
    out = Path(output_dir) if output_dir is not None else _hydra_output_dir()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("report.md", "FAILED"):
        (out / stale).unlink(missing_ok=True)
    try:
        result = _run(cfg, out, kind)
    except BaseException as exc:
        (out / "FAILED").write_text(f"{type(exc).__name__}: {exc}\n")
        raise
    return result


def check_experiment(cfg: DictConfig) -> None:
    """Experiment options read only mid-run, checked before any output is written."""
    check_choice("experiment.kind", cfg.experiment.kind, EXPERIMENT_KINDS)
    if cfg.experiment.kind == "sensitivity":
        from .sensitivity_run import check_options

        check_options(cfg.experiment.sensitivity)


def _hydra_output_dir() -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        raise OptionError("run(cfg) outside a Hydra app needs output_dir=...") from None


def _run(cfg: DictConfig, out: Path, kind: str) -> dict[str, Any]:
    figures = out / "figures"
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    written: dict[str, Any] = {"config": out / "config.yaml"}
    sections: list[str] = [f"# didlab — {cfg.experiment.name}\n"]

    if kind == "montecarlo" and cfg.data.kind == "file":
        raise OptionError("a Monte Carlo experiment needs simulated data (data=province or "
                          "data=city); with data=file use experiment=estimate, placebo or spec_curve")
    table, ev, bacon, panel = single_draw(cfg)
    shown = table[table["role"] == "headline"][SINGLE_COLUMNS]
    if cfg.data.kind == "file":
        shown = shown.drop(columns=["truth"])
        title = f"Estimates on {cfg.data.path}"
        intro = "`pretrend_p` is the joint pre-period Wald test where the estimator has one."
    else:
        title = f"One draw of the design (seed {cfg.seed}); truth = the draw's true effect"
        intro = ("`truth` is the draw's exact ATT (mean unit-period effect over treated "
                 "observations); `pretrend_p` is the event study's joint pre-period Wald test.")
    _print_table(title, shown)
    sections.append(f"## {title}\n\n{intro}\n\n" + report.markdown_table(shown) + "\n")
    if len(ev) and cfg.experiment.figures:
        p = report.event_study_figure(ev, figures / "event_study.png",
                                      f"Event-time effects, one draw (seed {cfg.seed}), with the true path")
        written["event_study_figure"] = p
        sections.append("![event study](figures/event_study.png)\n")
    quantile_tables = [f for kind_, _, f in bacon if kind_ == "quantile"]
    if quantile_tables:
        qt = pd.concat(quantile_tables, ignore_index=True)
        cols = [c for c in ("outcome", "estimator", "quantile", "estimate", "std_error", "truth") if c in qt]
        sections.append("### Effects across quantiles\n\nQuantile DID answers a conditional "
                        "question (quantiles of y given unit and year); changes-in-changes gives "
                        "quantile effects on the treated.\n\n" + report.markdown_table(qt[cols]) + "\n")
        if cfg.experiment.figures:
            p = report.quantile_figure(qt, figures / "quantile_effects.png")
            sections.append(f"![quantiles](figures/{p.name})\n")
    for outcome, label, fitted in bacon:
        if outcome == "quantile":
            continue
        if outcome == "heterogeneity":
            cols = ["outcome", "term", "estimate", "std_error", "p_value", "p_holm"]
            sections.append(f"### Effects by subgroup ({label})\n\n"
                            + report.markdown_table(fitted[cols]) + "\n")
            if cfg.experiment.figures:
                p = report.forest_figure(fitted, "term", figures / f"heterogeneity_{label}.png",
                                         "Effects by subgroup (95% CIs)")
                sections.append(f"![heterogeneity](figures/{p.name})\n")
            continue
        if outcome == "psm":
            bal = fitted.balance[["covariate", "smd_before", "smd_after", "vr_before", "vr_after"]]
            sections.append(f"### Matching balance ({label})\n\n" + report.markdown_table(bal) + "\n")
            if cfg.experiment.figures:
                for p in report.psm_figures(fitted, label, figures):
                    sections.append(f"![{p.stem}](figures/{p.name})\n")
            continue
        types = fitted.terms[fitted.terms["level"] == "type"][["term", "weight", "estimate"]]
        sections.append(f"### Goodman-Bacon decomposition ({label}, {outcome})\n\n"
                        + report.markdown_table(types) + "\n")
        if cfg.experiment.figures:
            p = report.bacon_figure(fitted.terms, fitted.estimate, figures / f"bacon_{outcome}.png",
                                    f"Goodman-Bacon decomposition of TWFE on {outcome}")
            sections.append(f"![bacon](figures/{p.name})\n")

    if kind == "single":
        _write_table(table, out / "results")
        written["results"] = out / "results.parquet"
    elif kind == "estimate":
        _write_table(table, out / "results")
        reg = report.regression_table(cfg, panel)
        (out / "regression_table.md").write_text(reg["markdown"])
        (out / "regression_table.tex").write_text(reg["latex"])
        print("\n" + reg["markdown"])
        sections.append("## Regression table\n\n" + reg["markdown"] + "\n")
        written.update(regression_table=out / "regression_table.md", results=out / "results.parquet")
    elif kind in SINGLE_PANEL_RUNNERS:
        _write_table(table, out / "results")
        runner = _single_panel_runner(kind)
        extra_written, extra_sections = runner(cfg, panel, out)
        written.update(extra_written)
        sections.extend(extra_sections)
    else:
        backend = Backend(**OmegaConf.to_container(cfg.backend, resolve=True))
        backend.validate()
        runs = cells(cfg)
        varying = {a for a in AXES if len({ax.get(a) for _, ax in runs}) > 1}
        designs, keys = [], []
        for c, axes in runs:
            outcomes = list(c.experiment.outcomes)
            designs.append(Design(build_draw(c), build_estimators(c, outcomes),
                                  cell=cell_name(axes, varying if len(runs) > 1 else set()),
                                  axes=axes))
            keys.append(design_key(_hash_payload(c)))
        results = run_designs(designs, int(cfg.experiment.n_reps), int(cfg.seed),
                              store=cfg.experiment.store, keys=keys,
                              chunk_size=int(cfg.experiment.chunk_size), backend=backend,
                              progress=bool(cfg.experiment.progress) and _isatty())
        axes_frame = pd.DataFrame([{"cell": d.cell, **d.axes} for d in designs])
        results = results.merge(axes_frame, on="cell", how="left")
        diag = diagnose(results, by=("cell", *[a for a in AXES if a in axes_frame], "outcome",
                                     "estimator", "term"))
        roles = results.drop_duplicates(["estimator", "term"]).set_index(["estimator", "term"])["role"]
        diag["role"] = [roles.get((e, t), "headline") for e, t in zip(diag["estimator"], diag["term"])]
        _write_table(results, out / "results")
        diag.to_csv(out / "diagnosands.csv", index=False)
        written.update(results=out / "results.parquet", diagnosands=out / "diagnosands.csv")
        head = diag[diag["role"] == "headline"]
        shown_axes = sorted(varying, key=AXES.index) if len(runs) > 1 else []
        cols = [c for c in (*shown_axes, "outcome", "estimator", "term", "n_draws", "n_failed",
                            "mean_truth", "bias", "bias_mcse", "rmse", "se_sd_ratio",
                            "coverage", "rejection", "rejection_is", "ci_width",
                            "pretrend_reject") if c in head]
        _print_table(f"Diagnosands over {cfg.experiment.n_reps} draws per cell "
                     "(MC standard errors in diagnosands.csv)", head[cols])
        sections.append(
            f"## Monte Carlo: {cfg.experiment.n_reps} draws per cell, seed {cfg.seed}\n\n"
            "Bias is against each draw's exact ATT; coverage is of the 95% CI; rejection is "
            "at 5% (size when the effect is zero, power otherwise); `_mcse` columns in "
            "`diagnosands.csv` give Monte Carlo standard errors.\n\n"
            + report.markdown_table(head[cols]) + "\n")
        if cfg.experiment.figures:
            outcome0 = list(cfg.experiment.outcomes)[0]
            paths = report.diagnosand_figures(diag, [a for a in AXES if a in axes_frame],
                                              figures, outcome=outcome0)
            written["diagnosand_figures"] = paths
            for p in paths:
                sections.append(f"![{p.stem}](figures/{p.name})\n")
        written["diagnosands_table"] = diag
    sections.append("## Configuration\n\n```yaml\n" + OmegaConf.to_yaml(cfg, resolve=True) + "```\n")
    versions = report.package_versions()
    sections.append("## Package versions\n\n" + "\n".join(f"- {k} {v}" for k, v in versions.items()) + "\n")
    tmp = out / ".report.md.tmp"
    tmp.write_text("\n".join(sections))
    os.replace(tmp, out / "report.md")  # written last: its presence marks a complete run
    written["report"] = out / "report.md"
    written["table"] = table
    print(f"\nOutputs written to {out}")
    return written


def _run_calibrate(cfg: DictConfig, panel: pd.DataFrame, out: Path) -> tuple[dict, list[str]]:
    """Fit the simulator to the panel, save it, compare moments, run the BDM placebo."""
    from .calibrate import calibrate, placebo_design, save_calibration
    from simulate.calibrated import draw_calibrated

    if cfg.data.kind != "file":
        raise OptionError("experiment=calibrate fits the simulator to a file: use data=file "
                          "(or data=example)")
    outcome = list(cfg.experiment.outcomes)[0]
    controls = list(cfg.data.controls)
    dgp = calibrate(panel, outcome, controls)
    path = save_calibration(dgp, out / "calibrated.yaml", str(cfg.data.path), controls)
    sim = draw_calibrated(np.random.default_rng(replicate_seed(int(cfg.seed), 0)), dgp)
    rows = []
    for col in [outcome, *controls]:
        for name, frame in (("data", panel), ("simulated", sim)):
            unit_means = frame.groupby("unit")[col].mean()
            rows.append({"variable": col, "source": name, "mean": frame[col].mean(),
                         "sd": frame[col].std(), "sd_between_units": unit_means.std(),
                         "sd_within_units": (frame[col] - frame["unit"].map(unit_means)).std()})
    moments = pd.DataFrame(rows)
    moments.to_csv(out / "calibration_moments.csv", index=False)
    params = pd.DataFrame([{"rho": dgp.rho, "sigma": dgp.sigma, "unit_sd": dgp.unit_sd,
                            "treated_shift": dgp.treated_shift, "selection": dgp.selection,
                            **{f"beta_{k}": v for k, v in dgp.beta.items()}}])
    # the Bertrand-Duflo-Mullainathan placebo on the real outcomes
    estimators = build_estimators(cfg, [outcome])
    design = placebo_design(panel, outcome, estimators)
    backend = Backend(**OmegaConf.to_container(cfg.backend, resolve=True))
    from .montecarlo import run_designs

    key = design_key({"bdm": str(cfg.data.path), "mtime": Path(str(cfg.data.path)).stat().st_mtime,
                      **_hash_payload(cfg)})
    results = run_designs([design], int(cfg.experiment.n_reps), int(cfg.seed),
                          store=cfg.experiment.store, keys=[key],
                          chunk_size=int(cfg.experiment.chunk_size), backend=backend,
                          progress=bool(cfg.experiment.progress) and _isatty())
    diag = diagnose(results[results["role"] == "headline"])
    _write_table(results, out / "placebo_results")
    diag.to_csv(out / "placebo_diagnosands.csv", index=False)
    cols = ["estimator", "term", "n_draws", "n_failed", "rejection", "rejection_mcse", "mean_estimate",
            "se_sd_ratio"]
    _print_table("Calibrated parameters (saved to calibrated.yaml)", params)
    _print_table("Real vs simulated moments", moments)
    _print_table(f"Semi-synthetic placebo (BDM): fake pilots among never-treated units, "
                 f"{cfg.experiment.n_reps} draws; rejection = size at 5%", diag[cols])
    print(f"\nRun the Monte Carlo on panels like yours:\n  didlab experiment=robustness "
          f"data=calibrated data.from={path}")
    sections = [
        "## Calibration\n\nParameters fitted to the panel (all in `calibrated.yaml`):\n\n"
        + report.markdown_table(params) + "\n\nReal against simulated moments:\n\n"
        + report.markdown_table(moments) + "\n",
        "## Semi-synthetic placebo (Bertrand, Duflo and Mullainathan 2004)\n\nThe real outcomes "
        "of the never-treated units, with the data's cohort sizes given to random units among "
        "them; every rejection is a false positive.\n\n" + report.markdown_table(diag[cols]) + "\n",
        f"Use the calibration: `didlab experiment=robustness data=calibrated data.from={path}`\n",
    ]
    return {"calibration": path, "moments": moments, "placebo": diag, "dgp": dgp}, sections


#: experiments that work on one panel: kind -> (module in experiments/, function); each
#: function takes (cfg, panel, out) and returns (written, report sections)
SINGLE_PANEL_RUNNERS = {
    "placebo": ("placebo_run", "run_placebo"),
    "spec_curve": ("spec_curve", "run_spec_curve"),
    "sensitivity": ("sensitivity_run", "run_sensitivity"),
    "calibrate": ("run", "_run_calibrate"),
}


def _single_panel_runner(kind: str) -> Any:
    import importlib

    module, name = SINGLE_PANEL_RUNNERS[kind]
    return getattr(importlib.import_module(f".{module}", __package__), name)


def _write_table(frame: pd.DataFrame, stem: Path) -> None:
    frame.to_parquet(stem.with_suffix(".parquet"), index=False)
    frame.to_csv(stem.with_suffix(".csv"), index=False)


def _isatty() -> bool:
    import sys

    return sys.stderr.isatty()
