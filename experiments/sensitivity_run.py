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

from estimators import catalog

from . import report
from .single import SingleDraw


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


def run_sensitivity(cfg: DictConfig, draw: SingleDraw, out: Path) -> tuple[dict[str, Any], list[str]]:
    """Honest sets, breakdown values and pre-trend power for every event-time estimator
    fitted on the panel (the fits of :mod:`experiments.single`, not new ones)."""
    sc = cfg.experiment.sensitivity
    target: Any = sc.target if sc.target == "average" else int(sc.target)
    sets, summary = [], []
    for fit in draw.fits.values():
        if not fit.capabilities.event_time:
            continue
        outcome, label, est = fit.outcome, fit.label, fit.estimate
        if est is None:
            summary.append({"outcome": outcome, "estimator": label, "note": fit.error})
            continue
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
        notes = [row["note"] for row in summary if row.get("note")]
        if notes:  # event-time fits were there: say why none gave a set (not a wrong cause)
            raise DidlabError("no honest set could be computed: " + notes[0].splitlines()[0]
                              + (f" (and {len(notes) - 1} more)" if len(notes) > 1 else ""))
        kinds = [e.kind for e in catalog.entries() if e.capabilities.event_time]
        raise DidlabError("experiment=sensitivity needs an event-time estimator with pre-periods, "
                          f"e.g. estimator=[event_study]; kinds: {kinds}")
    table = pd.concat(sets, ignore_index=True)
    summ = pd.DataFrame(summary)
    report.write_csv(table, out / "honest_sets.csv")
    report.write_csv(summ, out / "sensitivity_summary.csv")
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
        breakdowns = {(r["outcome"], r["estimator"], r["restriction"]): float(r["breakdown"])
                      for r in summary if r.get("restriction") in ("smoothness",
                                                                   "relative_magnitudes")
                      and r.get("breakdown") is not None}
        p = report.sensitivity_figure(table, out / "figures" / "sensitivity.png",
                                      alpha=float(sc.alpha), breakdowns=breakdowns)
        written["figure"] = p
        sections.append(f"![sensitivity](figures/{p.name})\n")
    with pd.option_context("display.width", 180, "display.float_format", "{:.4f}".format):
        print("\nSensitivity (breakdown values and pre-trend power)\n" + summ.to_string(index=False))
    return written, sections
