"""``experiment=sensitivity``: honest confidence sets, breakdown values and pre-trend power
for every configured event-time estimator on one panel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from estimators.panel import DidlabError, OptionError, check_choice
from estimators.sensitivity import (METHODS, breakdown, detectable_slope, event_inputs,
                                    honest_intervals, pretest_power)

from . import report
from .build import build_estimator

EVENT_KINDS = ("event_study", "sun_abraham", "callaway_santanna", "imputation")


def check_options(sc: DictConfig) -> None:
    """Reject bad sensitivity options before anything is estimated or written."""
    for key, restriction in (("smoothness_method", "smoothness"), ("rm_method", "relative_magnitudes")):
        check_choice(f"experiment.sensitivity.{key}", str(sc[key]).lower(), METHODS[restriction])
    if not 0 < float(sc.alpha) < 1:
        raise OptionError(f"experiment.sensitivity.alpha={sc.alpha} must lie in (0, 1)")
    for key in ("m_grid", "mbar_grid"):
        if any(float(v) < 0 for v in sc[key]):
            raise OptionError(f"experiment.sensitivity.{key}={list(sc[key])} must be >= 0")
    if str(sc.target) != "average" and not str(sc.target).lstrip("-").isdigit():
        raise OptionError(f"experiment.sensitivity.target={sc.target!r}: use 'average' or an event time 0, 1, ...")


def run_sensitivity(cfg: DictConfig, panel: pd.DataFrame, out: Path) -> tuple[dict[str, Any], list[str]]:
    sc = cfg.experiment.sensitivity
    target: Any = sc.target if sc.target == "average" else int(sc.target)
    sets, summary = [], []
    for outcome in cfg.experiment.outcomes:
        for label, spec in cfg.estimator.items():
            if spec.kind not in EVENT_KINDS:
                continue
            est = build_estimator(label, spec, outcome).fit(panel)
            try:
                event_inputs(est)
            except DidlabError as exc:
                summary.append({"outcome": outcome, "estimator": label, "note": str(exc)})
                continue
            for restriction, grid, method in (
                    ("smoothness", list(sc.m_grid) or None, str(sc.smoothness_method)),
                    ("relative_magnitudes", list(sc.mbar_grid) or None, str(sc.rm_method))):
                try:
                    tab = honest_intervals(est, restriction, grid=grid, target=target,
                                           alpha=float(sc.alpha), method=method)
                    b = breakdown(est, restriction, target=target, alpha=float(sc.alpha),
                                  method=method)
                except DidlabError as exc:
                    summary.append({"outcome": outcome, "estimator": label, "note": str(exc)})
                    continue
                sets.append(tab.assign(outcome=outcome, estimator=label))
                summary.append({"outcome": outcome, "estimator": label, "restriction": restriction,
                                "method": tab["method"].iloc[-1], "breakdown": b})
            try:
                s80 = detectable_slope(est, 0.8, float(sc.alpha))
                s50 = detectable_slope(est, 0.5, float(sc.alpha))
                pw = pretest_power(est, s50, float(sc.alpha), rng=np.random.default_rng(int(cfg.seed)),
                                   target=target)
                summary.append({"outcome": outcome, "estimator": label, "restriction": "pre-trend power",
                                "slope_50pct_power": s50, "slope_80pct_power": s80,
                                "bias_given_pass_at_slope50": pw["bias_given_pass"],
                                "bias_unconditional_at_slope50": pw["bias_unconditional"]})
            except DidlabError as exc:
                summary.append({"outcome": outcome, "estimator": label, "note": str(exc)})
    if not sets:
        raise DidlabError("experiment=sensitivity needs an event-time estimator with pre-periods, "
                          f"e.g. estimator=[event_study]; kinds: {list(EVENT_KINDS)}")
    table = pd.concat(sets, ignore_index=True)
    summ = pd.DataFrame(summary)
    table.to_csv(out / "honest_sets.csv", index=False)
    summ.to_csv(out / "sensitivity_summary.csv", index=False)
    sections = ["## Sensitivity to parallel-trend violations\n\nRambachan and Roth (2023) "
                f"honest sets for the {'average post-period effect' if target == 'average' else f'effect at event time {target}'}. "
                "Methods (column `method`): FLCI = optimal fixed-length interval "
                "(Armstrong-Kolesar); C-LF = Andrews-Roth-Pakes conditional test with the "
                "least-favourable hybrid (HonestDiD's default for relative magnitudes); "
                "Conditional = the conditional test alone; Bonferroni = a conservative bound. "
                "`breakdown` is the smallest M (or Mbar) whose set includes zero.\n\n"
                + report.markdown_table(summ) + "\n\n"
                + report.markdown_table(table) + "\n"]
    written: dict[str, Any] = {"honest_sets": table, "summary": summ}
    if cfg.experiment.figures:
        p = report.sensitivity_figure(table, out / "figures" / "sensitivity.png")
        written["figure"] = p
        sections.append(f"![sensitivity](figures/{p.name})\n")
    with pd.option_context("display.width", 180, "display.float_format", "{:.4f}".format):
        print("\nSensitivity (breakdown values and pre-trend power)\n" + summ.to_string(index=False))
    return written, sections
