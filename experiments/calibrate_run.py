"""``experiment=calibrate``: fit the simulator to a user's panel, compare its moments with
the data's, and run the Bertrand-Duflo-Mullainathan placebo on the real outcomes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from estimators.panel import OptionError

from . import report
from .build import build_estimators
from .montecarlo import Backend, design_key, diagnose, replicate_seed, run_designs
from .montecarlo_run import hash_payload, inference_verdict
from .run import isatty
from .single import SingleDraw, print_table


def run_calibrate(cfg: DictConfig, draw: SingleDraw, out: Path) -> tuple[dict, list[str]]:
    """Fit the simulator to the panel, save it, compare moments, run the BDM placebo."""
    panel = draw.panel
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
    report.write_csv(moments, out / "calibration_moments.csv")
    params = pd.DataFrame([{"rho": dgp.rho, "sigma": dgp.sigma, "unit_sd": dgp.unit_sd,
                            "treated_shift": dgp.treated_shift, "selection": dgp.selection,
                            **{f"beta_{k}": v for k, v in dgp.beta.items()}}])
    # the Bertrand-Duflo-Mullainathan placebo on the real outcomes: size (no effect), and
    # coverage of an injected effect when experiment.bdm.effect is set
    bdm = cfg.experiment.bdm
    estimators = build_estimators(cfg, [outcome])
    effects = [0.0] + ([float(bdm.effect)] if float(bdm.effect) != 0.0 else [])
    selection = None if bdm.selection is None else str(bdm.selection)
    designs = [placebo_design(panel, outcome, estimators, effect=e, selection=selection,
                              strength=float(bdm.strength),
                              cell="bdm_placebo" if e == 0 else f"bdm_effect={e:g}")
               for e in effects]
    backend = Backend.of(cfg.backend)
    base_key = {"bdm": str(cfg.data.path), "mtime": Path(str(cfg.data.path)).stat().st_mtime,
                "selection": selection, "strength": float(bdm.strength), **hash_payload(cfg)}
    keys = [design_key({**base_key, "effect": e}) for e in effects]
    results = run_designs(designs, int(cfg.experiment.n_reps), int(cfg.seed),
                          store=cfg.experiment.store, keys=keys,
                          chunk_size=int(cfg.experiment.chunk_size), backend=backend,
                          progress=bool(cfg.experiment.progress) and isatty())
    results["effect"] = results["cell"].map({d.cell: d.axes["effect"] for d in designs})
    full = diagnose(results, by=("cell", "effect", "outcome", "estimator", "term"))
    roles = results.drop_duplicates(["estimator", "term"]).set_index(["estimator", "term"])["role"]
    full["role"] = [roles.get((e, t), "headline") for e, t in zip(full["estimator"], full["term"])]
    diag = full[(full["role"] == "headline") & (full["cell"] == "bdm_placebo")]
    report.write_table(results, out / "placebo_results")
    report.write_csv(full, out / "placebo_diagnosands.csv")
    cols = ["estimator", "term", "n_draws", "n_failed", "rejection", "rejection_mcse", "mean_estimate",
            "se_sd_ratio"]
    # every event-study horizon under the null: a pre-period or post-period term that
    # rejects too often is as misleading as a headline that does
    horizons = full[(full["cell"] == "bdm_placebo") & full["term"].astype(str).str.fullmatch(
        r"ev[+-]\d+")]
    horizon_table = (horizons.assign(event_time=horizons["term"].str.slice(2).astype(int))
                     .pivot_table(index="event_time", columns="estimator", values="rejection")
                     .reset_index() if len(horizons) else pd.DataFrame())
    verdict = inference_verdict(full, ["effect"])
    print_table("Calibrated parameters (saved to calibrated.yaml)", params)
    print_table("Real vs simulated moments", moments)
    print_table(f"Semi-synthetic placebo (BDM): fake pilots among never-treated units, "
                 f"{cfg.experiment.n_reps} draws; rejection = size at 5%", diag[cols])
    print(f"\nRun the Monte Carlo on panels like yours:\n  didlab experiment=robustness "
          f"data=calibrated data.from={path}")
    sections = [
        "## Calibration\n\nParameters fitted to the panel (all in `calibrated.yaml`):\n\n"
        + report.markdown_table(params) + "\n\nReal against simulated moments:\n\n"
        + report.markdown_table(moments) + "\n",
        "## Semi-synthetic placebo (Bertrand, Duflo and Mullainathan 2004)\n\nThe real outcomes "
        "of the never-treated units, with the data's cohort sizes given to "
        + ("random units among them" if selection is None else
           f"units among them drawn with probability rising in their first-period {selection} "
           f"(strength {float(bdm.strength):g})")
        + "; every rejection is a false positive.\n\n" + report.markdown_table(diag[cols]) + "\n",
        f"Use the calibration: `didlab experiment=robustness data=calibrated data.from={path}`\n",
    ]
    if len(horizon_table):
        report.write_csv(horizon_table, out / "placebo_by_horizon.csv")
        sections.append("### False rejections at every event-time horizon\n\nRejection rate "
                        "of each event-time term on the placebo draws (nominal: each "
                        "estimator's alpha):\n\n" + report.markdown_table(horizon_table) + "\n")
    if len(verdict) > 1 or (len(verdict) and len(effects) > 1):
        report.write_csv(verdict, out / "inference_verdict.csv")
        sections.append("### Which inference to trust on this panel\n\nSize on the placebo "
                        "draws" + (f", coverage of the injected effect {effects[-1]:g}"
                                   if len(effects) > 1 else "")
                        + ", against the 99% binomial band:\n\n"
                        + report.markdown_table(verdict) + "\n")
    return {"calibration": path, "moments": moments, "placebo": diag, "dgp": dgp,
            "placebo_full": full, "horizons": horizon_table, "verdict": verdict}, sections
