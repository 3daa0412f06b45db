"""``experiment=placebo``: the three placebo tests on one panel, with tables and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from estimators.panel import DidlabError, OptionError
from estimators.placebo import LeaveOneOut, RandomizationInference, TimingPlacebo
from estimators.twfe import TWFE

from . import report
from .build import EXACT, build_estimator
from .montecarlo import estimator_seed


def check_options(cfg: DictConfig) -> None:
    """Reject bad placebo options before anything is estimated or written."""
    pc = cfg.experiment.placebo
    if EXACT.get(str(pc.exact).lower()) is None:
        raise OptionError(f"experiment.placebo.exact={pc.exact!r} is not accepted; use one of "
                          f"{sorted(EXACT)}")
    for label in pc.base:
        if label not in cfg.estimator:
            raise OptionError(f"experiment.placebo.base lists {label!r}, which is not a configured "
                              f"estimator; configured: {list(cfg.estimator)}")
    # the tests' own options, checked once on a stand-in base: a bad value must stop the
    # run here, not be reported as "this test does not apply to the panel"
    base = TWFE("y")
    try:
        TimingPlacebo(base, shifts=tuple(pc.shifts)).check()
        RandomizationInference(base, n_perm=int(pc.n_perm), statistic=str(pc.statistic),
                               exact=EXACT[str(pc.exact).lower()],
                               max_exact=int(pc.max_exact)).check()
    except OptionError as exc:
        raise OptionError(f"experiment.placebo: {exc}") from None


def run_placebo(cfg: DictConfig, draw: Any, out: Path) -> tuple[dict[str, Any], list[str]]:
    """Run timing placebo, randomization inference and leave-one-out around every base
    estimator named in ``experiment.placebo.base``, for every outcome."""
    panel = draw.panel
    pc = cfg.experiment.placebo
    check_options(cfg)
    exact = EXACT[str(pc.exact).lower()]
    timing_rows, ri_rows, loo_rows, dists = [], [], [], []
    skipped: list[dict[str, str]] = []

    def attempt(test: str, outcome: str, label: str, work: Any) -> None:
        """Run one placebo test; one that does not apply to this panel (one treated unit
        for leave-one-out, no pre-period for a shift) is skipped with its reason."""
        try:
            work()
        except DidlabError as exc:
            skipped.append({"test": test, "outcome": outcome, "estimator": label,
                            "reason": str(exc).splitlines()[0]})

    for outcome in cfg.experiment.outcomes:
        for label in pc.base:
            base = build_estimator(label, cfg.estimator[label], outcome)

            def timing_test() -> None:
                tp = TimingPlacebo(base, shifts=tuple(int(k) for k in pc.shifts)).fit(panel)
                timing_rows.append(tp.terms.assign(outcome=outcome, estimator=label))

            def ri_test() -> None:
                ri = RandomizationInference(base, n_perm=int(pc.n_perm),
                                            statistic=str(pc.statistic), exact=exact,
                                            max_exact=int(pc.max_exact), strata=pc.strata)
                rng = np.random.default_rng(estimator_seed(int(cfg.seed), 0, f"placebo:{label}"))
                dist = ri.run(panel, rng)
                e = dist.estimate
                ri_rows.append({"outcome": outcome, "estimator": label, "estimate": e.estimate,
                                "statistic": pc.statistic, "actual_statistic": dist.actual,
                                "ri_p_value": e.p_value, "ri_p_mcse": e.diagnostics["ri_p_mcse"],
                                "share_beyond": e.diagnostics["share_beyond"],
                                "n_assignments": int(e.diagnostics["n_assignments"]),
                                "exact": bool(e.diagnostics["exact"]),
                                "conventional_p_value": e.diagnostics["base_p_value"]})
                dists.append(pd.DataFrame({"outcome": outcome, "estimator": label,
                                           "placebo_statistic": dist.placebo}))

            def loo_test() -> None:
                loo = LeaveOneOut(base, name_column="province" if "province" in panel
                                  else None).fit(panel)
                loo_rows.append(loo.terms.assign(outcome=outcome, estimator=label,
                                                 full_estimate=loo.estimate))

            attempt("timing placebo", outcome, label, timing_test)
            attempt("randomization inference", outcome, label, ri_test)
            attempt("leave one out", outcome, label, loo_test)
    if not (timing_rows or ri_rows or loo_rows):
        raise DidlabError("no placebo test applies to this panel: "
                          + "; ".join(f"{s['test']}: {s['reason']}" for s in skipped[:3]))
    written: dict[str, Any] = {}
    sections: list[str] = []
    figures: list[Path] = []
    figs = out / "figures"
    lev = report.level([cfg.estimator[b].get("alpha", 0.05) for b in pc.base])
    if timing_rows:
        timing = pd.concat(timing_rows, ignore_index=True)
        report.write_csv(timing, out / "placebo_timing.csv")
        written["timing"] = timing
        sections.append(
            "## Timing placebo\n\nFake dates moved back by each shift, on pre-treatment years "
            "only; every effect should be zero.\n\n"
            + report.markdown_table(timing[["outcome", "estimator", "term", "estimate",
                                            "std_error", "conf_low", "conf_high", "p_value",
                                            "n_obs"]]) + "\n")
        if cfg.experiment.figures:
            figures.append(report.forest_figure(
                timing, "term", figs / "placebo_timing.png",
                f"Timing placebo: fake dates on pre-treatment years ({lev} CIs)"))
    if ri_rows:
        ri_table = pd.DataFrame(ri_rows)
        distribution = pd.concat(dists, ignore_index=True)
        report.write_csv(ri_table, out / "placebo_randomization.csv")
        report.write_parquet(distribution, out / "placebo_distribution.parquet")
        written.update(randomization=ri_table, distribution=distribution)
        sections.append(
            "## Fake pilots: randomization inference\n\nThe unit -> cohort assignment is "
            "permuted (cohort sizes kept); the statistic is the "
            f"{'studentized t' if pc.statistic == 't' else 'coefficient'}; the p-value counts "
            "the actual assignment (+1) and `ri_p_mcse` is its Monte Carlo SE.\n\n"
            + report.markdown_table(ri_table) + "\n")
        if cfg.experiment.figures:
            figures.append(report.placebo_distribution_figure(
                distribution, ri_table, figs / "placebo_distribution.png"))
    if loo_rows:
        loo_table = pd.concat(loo_rows, ignore_index=True)
        report.write_csv(loo_table, out / "leave_one_out.csv")
        written["leave_one_out"] = loo_table
        sections.append("## Leave one pilot out\n\n"
                        + report.markdown_table(loo_table[["outcome", "estimator", "term",
                                                           "estimate", "std_error", "p_value",
                                                           "full_estimate"]]) + "\n")
        if cfg.experiment.figures:
            figures.append(report.forest_figure(
                loo_table, "term", figs / "leave_one_out.png",
                f"Leave one pilot out ({lev} CIs); dashed: full-sample estimate",
                reference="full_estimate"))
    if skipped:
        table = pd.DataFrame(skipped)
        written["skipped"] = table
        sections.append("## Placebo tests that do not apply to this panel\n\n"
                        + report.markdown_table(table) + "\n")
    if figures:
        written["figures"] = figures
        sections += [f"![{p.stem}](figures/{p.name})\n" for p in figures]
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        for key, title, cols in (
                ("timing", "Timing placebo", ["outcome", "estimator", "term", "estimate",
                                              "std_error", "p_value"]),
                ("randomization", "Randomization inference (fake pilots)", None),
                ("leave_one_out", "Leave one pilot out", ["outcome", "estimator", "term",
                                                          "estimate", "p_value"]),
                ("skipped", "Skipped", None)):
            if key in written:
                frame = written[key] if cols is None else written[key][cols]
                print(f"\n{title}\n" + frame.to_string(index=False))
    return written, sections
