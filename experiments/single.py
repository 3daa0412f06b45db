"""One panel, every configured estimator fitted once on the seeded path.

Every experiment starts here: with ``data=file`` the panel is the user's, otherwise it is
replicate 0 of the simulated design. Each estimator is fitted exactly once, with the
generator ``estimator_seed(seed, 0, label)`` where the catalogue says it needs one; the
tables, figures, the regression table and the sensitivity analysis all read the
:class:`Fit` objects kept here instead of fitting again. What is reported beyond the
headline is decided by the estimator's declared capabilities, not by its class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from estimators import catalog
from estimators.panel import COHORT, TIME
from estimators.result import Estimate

from . import report
from .build import build_estimators, load_or_draw
from .montecarlo import estimator_seed, fit_rows, needs_rng

SINGLE_COLUMNS = ["outcome", "estimator", "term", "truth", "estimate", "std_error", "conf_low",
                  "conf_high", "p_value", "pretrend_p", "n_obs", "error"]


@dataclass(frozen=True)
class Fit:
    """One estimator fitted on the panel: the estimator, its Estimate (None when the fit
    failed, with the reason in ``error``) and its truth on a simulated panel."""

    outcome: str
    label: str
    estimator: Any
    estimate: Estimate | None
    truth: dict[str, float]
    error: str
    seed: np.random.SeedSequence | None

    @property
    def capabilities(self) -> catalog.Capabilities:
        return catalog.capabilities(self.estimator)

    def rng(self) -> np.random.Generator | None:
        """A fresh generator from the same seed as the fit (for a companion computation,
        such as the matching behind a balance table, that must see the same draws)."""
        return None if self.seed is None else np.random.default_rng(self.seed)


@dataclass
class SingleDraw:
    """The panel, the headline table and every fit."""

    panel: pd.DataFrame
    table: pd.DataFrame
    fits: dict[tuple[str, str], Fit] = field(default_factory=dict)
    is_file: bool = False

    def estimate(self, outcome: str, label: str) -> Estimate | None:
        return self.fits[(outcome, label)].estimate

    def succeeded(self, **capability: bool) -> list[Fit]:
        """The successful fits whose capabilities match, e.g. ``event_time=True``."""
        return [f for f in self.fits.values() if f.estimate is not None
                and all(getattr(f.capabilities, k) == v for k, v in capability.items())]

    def _binned(self, estimator: Any, event_time: np.ndarray) -> np.ndarray:
        """Which event times are binned endpoints: the window's ends of an estimator that
        bins (``bin_endpoints``) when the panel has treated periods beyond them."""
        out = np.zeros(event_time.size, dtype=bool)
        if not getattr(estimator, "bin_endpoints", False):
            return out
        treated = self.panel[COHORT].to_numpy() > 0
        rel = (self.panel[TIME].to_numpy() - self.panel[COHORT].to_numpy())[treated]
        if rel.size == 0:
            return out
        leads, lags = getattr(estimator, "leads", None), getattr(estimator, "lags", None)
        if leads is not None and rel.min() < -leads:
            out |= event_time == -leads
        if lags is not None and rel.max() > lags:
            out |= event_time == lags
        return out

    def event_terms(self) -> pd.DataFrame:
        """Event-time terms of every event-time estimator, with their truths and the
        reference period added as a zero."""
        frames = []
        for f in self.succeeded(event_time=True):
            est = f.estimate
            if "event_time" not in est.terms:
                continue
            t = est.terms.dropna(subset=["event_time"]).copy()
            if t.empty:
                continue
            t["truth"] = [f.truth.get(f"ev{int(e):+d}", np.nan) for e in t["event_time"]]
            t["outcome"], t["estimator"], t["alpha"] = f.outcome, f.label, est.alpha
            ref = getattr(f.estimator, "ref", None)
            if ref is not None and not (t["event_time"] == ref).any():
                t = pd.concat([t, pd.DataFrame({
                    "term": [f"ev{ref:+d}"], "estimate": [0.0], "conf_low": [0.0],
                    "conf_high": [0.0], "event_time": [float(ref)],
                    "truth": [0.0 if f.truth else np.nan], "outcome": [f.outcome],
                    "estimator": [f.label], "alpha": [est.alpha]})], ignore_index=True)
            t["binned"] = self._binned(f.estimator, t["event_time"].to_numpy(float))
            frames.append(t[["outcome", "estimator", "term", "event_time", "estimate",
                             "conf_low", "conf_high", "truth", "alpha", "binned"]])
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def single_draw(cfg: DictConfig) -> SingleDraw:
    """Load the user's panel or draw replicate 0, and fit every configured estimator once."""
    panel, notes = load_or_draw(cfg)
    for n in notes:
        print(f"data: {n}")
    is_file = cfg.data.kind == "file"
    estimators = build_estimators(cfg, list(cfg.experiment.outcomes))
    rows: list[dict[str, Any]] = []
    fits: dict[tuple[str, str], Fit] = {}
    from tqdm.auto import tqdm

    from .run import isatty

    # a long fit (a bootstrap, matching on a large file) shows which estimator is running
    bar = tqdm(estimators.items(), total=len(estimators), unit="fit", leave=False,
               disable=not (bool(cfg.experiment.progress) and isatty()))
    for (outcome, label), est in bar:
        bar.set_description(f"{label} on {outcome}")
        seed = estimator_seed(int(cfg.seed), 0, label) if needs_rng(est) else None
        rng = np.random.default_rng(seed) if seed is not None else None
        fitted, fit_rows_, truth = fit_rows(est, panel, rng, "single", 0, outcome, label)
        rows.extend(fit_rows_)
        fits[(outcome, label)] = Fit(outcome, label, est, fitted, truth,
                                     fit_rows_[0]["error"], seed)
    table = pd.DataFrame(rows)
    if is_file:
        table["truth"] = np.nan  # real data: no truth
    return SingleDraw(panel, table, fits, is_file)


def draw_sections(cfg: DictConfig, draw: SingleDraw, out: Path) -> tuple[dict[str, Any], list[str]]:
    """The report sections of the fitted panel: the headline table, event-study figure,
    and each estimator's own detail (quantiles, subgroups, matching, 2x2 comparisons)."""
    figures = out / "figures"
    written: dict[str, Any] = {}
    sections: list[str] = []
    shown = draw.table[draw.table["role"] == "headline"][SINGLE_COLUMNS]
    if draw.is_file:
        shown = shown.drop(columns=["truth"])
        title = f"Estimates on {cfg.data.path}"
        intro = "`pretrend_p` is the pre-test of parallel trends where the estimator has one."
    else:
        title = f"One draw of the design (seed {cfg.seed}); truth = the draw's true effect"
        intro = ("`truth` is the draw's exact ATT (mean unit-period effect over treated "
                 "observations); `pretrend_p` is each estimator's pre-test of parallel trends "
                 "(the event study's joint Wald test; Callaway-Sant'Anna's Sidak max-|t|).")
    print_table(title, shown)
    sections.append(f"## {title}\n\n{intro}\n\n" + report.markdown_table(shown) + "\n")
    ev = draw.event_terms()
    if len(ev) and cfg.experiment.figures:
        has_truth = ev["truth"].notna().any()
        p = report.event_study_figure(
            ev, figures / "event_study.png",
            f"Event-time effects, one draw (seed {cfg.seed}), with the true path" if has_truth
            else "Event-time effects")
        written["event_study_figure"] = p
        sections.append("![event study](figures/event_study.png)\n")
    written["event_terms"] = ev

    quantile = []
    for f in draw.succeeded(quantiles=True):
        t = f.estimate.terms.assign(outcome=f.outcome, estimator=f.label, alpha=f.estimate.alpha)
        if f.truth:
            t["truth"] = [f.truth.get(n, np.nan) for n in t["term"]]
        quantile.append(t)
    if quantile:
        qt = pd.concat(quantile, ignore_index=True)
        cols = [c for c in ("outcome", "estimator", "quantile", "estimate", "std_error", "truth")
                if c in qt]
        sections.append("### Effects across quantiles\n\nQuantile DID answers a conditional "
                        "question (quantiles of y given unit and year); changes-in-changes gives "
                        "quantile effects on the treated.\n\n" + report.markdown_table(qt[cols]) + "\n")
        if cfg.experiment.figures:
            p = report.quantile_figure(qt, figures / "quantile_effects.png")
            sections.append(f"![quantiles](figures/{p.name})\n")

    for f in draw.succeeded(subgroups=True):
        t = f.estimate.terms.assign(outcome=f.outcome, estimator=f.label)
        cols = ["outcome", "term", "estimate", "std_error", "p_value", "p_holm"]
        sections.append(f"### Effects by subgroup ({f.label})\n\n"
                        + report.markdown_table(t[cols]) + "\n")
        if cfg.experiment.figures:
            d = f.estimate.diagnostics
            note = (f"equal effects across {int(d['n_groups'])} groups: F = "
                    f"{d['equality_F']:.2f}, p = {d['equality_p']:.3g}"
                    if np.isfinite(d.get("equality_p", np.nan)) else None)
            p = report.forest_figure(
                t, "term", figures / f"heterogeneity_{f.label}.png",
                f"Effects by subgroup ({report.level(f.estimate.alpha)} CIs)",
                panel_notes={(f.outcome, f.label): note} if note else None,
                # "d:developed=1" -> "developed = 1": the subgroup, not the regressor name
                term_label=lambda n: n.split(":", 1)[-1].replace("=", " = "))
            sections.append(f"![heterogeneity](figures/{p.name})\n")

    first_outcome = list(cfg.experiment.outcomes)[0]
    for f in draw.succeeded(matching=True):
        if f.outcome != first_outcome:  # the matching does not depend on the outcome
            continue
        match = f.estimator.match(draw.panel, rng=f.rng())
        bal = match.balance[["covariate", "smd_before", "smd_after", "vr_before", "vr_after"]]
        sections.append(f"### Matching balance ({f.label})\n\n" + report.markdown_table(bal) + "\n")
        if cfg.experiment.figures:
            for p in report.psm_figures(match, f.label, figures):
                sections.append(f"![{p.stem}](figures/{p.name})\n")

    for f in draw.succeeded(comparisons=True):
        terms = f.estimate.terms
        types = terms[terms["level"] == "type"][["term", "weight", "estimate"]]
        sections.append(f"### Goodman-Bacon decomposition ({f.label}, {f.outcome})\n\n"
                        + report.markdown_table(types) + "\n")
        if cfg.experiment.figures:
            p = report.bacon_figure(terms, f.estimate.estimate, figures / f"bacon_{f.outcome}.png",
                                    f"Goodman-Bacon decomposition of TWFE on {f.outcome}")
            sections.append(f"![bacon](figures/{p.name})\n")
    return written, sections


def print_table(title: str, frame: pd.DataFrame) -> None:
    with pd.option_context("display.width", 160, "display.max_columns", 30,
                           "display.max_rows", 200, "display.float_format", "{:.4f}".format):
        print(f"\n{title}\n{frame.to_string(index=False)}")


def run_single(cfg: DictConfig, draw: SingleDraw, out: Path) -> tuple[dict[str, Any], list[str]]:
    """``experiment.kind=single``: the fitted panel's table is the result."""
    report.write_table(draw.table, out / "results")
    return {"results": out / "results.parquet"}, []
