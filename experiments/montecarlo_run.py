"""``experiment.kind=montecarlo``: the design's cells, many draws each, and the diagnosands."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from estimators.panel import OptionError

from . import report
from .build import build_draw, build_estimators
from .montecarlo import Backend, Design, code_hash, design_key, diagnose, run_designs
from .montecarlo import binomial_band as shared_band
from .single import SingleDraw, print_table

AXES = ("data", "assignment", "timing", "effect")


def choices(cfg: DictConfig) -> dict[str, str]:
    """Which option of each axis group the config came from."""
    recorded = OmegaConf.to_container(cfg.origin.choices) if "origin" in cfg else {}
    if recorded:
        return {a: str(recorded[a]) for a in AXES if recorded.get(a) is not None}
    return {a: "custom" for a in AXES}


def cells(cfg: DictConfig) -> list[tuple[DictConfig, dict[str, str]]]:
    """The design cells of a run: the config itself, or its ``experiment.grid`` crossed.

    A grid key is an axis group (``timing: [notice_2011, market_open]``: that group's
    options) or one key inside an axis group (``data.rho: [0.0, 0.8]``,
    ``assignment.n_pilots: [1, 2, 5]``: that key's values). Each cell is composed again from
    the run's own overrides with the grid's choice put in place of the user's, so a grid
    axis replaces only what it varies: ``timing.anticipation=2`` holds in every timing cell.
    A multirun sweep defines its own cells instead.
    """
    from .run import compose, in_multirun

    base = choices(cfg)
    grid = OmegaConf.to_container(cfg.experiment.grid) if cfg.experiment.grid else {}
    given = _grid_override(list(cfg.origin.overrides) if "origin" in cfg else [])
    if given is not None:
        # experiment.grid={timing:[...]} on the command line replaces the experiment's grid
        # (Hydra would merge the two dicts: 6 cells where the user asked for 2)
        grid = given
    if not grid or in_multirun():
        return [(cfg, base)]
    for key in grid:
        group, _, inner = str(key).partition(".")
        if group not in AXES:
            raise OptionError(f"experiment.grid key {key!r} is not accepted; accepted: an axis "
                              f"group ({', '.join(AXES)}) or one of its keys (e.g. data.rho, "
                              "assignment.n_pilots)")
        if inner and inner not in cfg[group]:
            raise OptionError(f"experiment.grid key {key!r}: {group}={base.get(group, group)} "
                              f"has no key {inner!r}; its keys: {', '.join(cfg[group])}")
        values = grid[key]
        if not isinstance(values, list) or not values:
            raise OptionError(f"experiment.grid.{key} must be a non-empty list of "
                              f"{'values' if inner else 'options'}")
        if inner and any(isinstance(v, (list, dict)) for v in values):
            raise OptionError(f"experiment.grid.{key} must list plain values (numbers, "
                              "strings, booleans), one per cell")
    overrides = list(cfg.origin.overrides) if "origin" in cfg else []
    out = []
    for combo in itertools.product(*[[(k, o) for o in opts] for k, opts in grid.items()]):
        varied = {k for k, _ in combo}
        # the user's choice of a varied group or key gives way to the grid's; key=value
        # overrides inside a varied group (timing.anticipation=2) are kept
        kept = [o for o in overrides
                if o.split("=", 1)[0].lstrip("+~") not in varied]
        c = compose([*kept, *[f"{k}={_override_value(o)}" for k, o in combo]])
        axes = dict(base)
        axes.update({k: _axis_value(o) for k, o in combo})
        out.append((c, axes))
    return out


def _override_value(value: Any) -> str:
    """A grid value written as a Hydra override value (``null`` for None, ``true``/
    ``false`` for booleans, strings quoted where Hydra would read them otherwise)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and not value.replace("_", "").replace("-", "").isalnum():
        return "'" + value.replace("'", "\\'") + "'"
    return str(value)


def _axis_value(value: Any) -> str:
    """A grid value as it appears in cell names and axis columns."""
    return "true" if value is True else "false" if value is False else str(value)


def axis_names(runs: list[tuple[DictConfig, dict[str, str]]]) -> list[str]:
    """The axes of a run's cells in order: the groups of :data:`AXES`, then grid keys inside
    a group (``data.rho``) in the grid's order."""
    keys: list[str] = [a for a in AXES if any(a in ax for _, ax in runs)]
    for _, ax in runs:
        keys += [k for k in ax if k not in keys]
    return keys


def _grid_override(overrides: list[str]) -> dict[str, Any] | None:
    """The value of a whole-grid override ``experiment.grid={...}``, if one was given."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for o in overrides:
        if o.split("=", 1)[0].lstrip("+~") == "experiment.grid" and "=" in o:
            parsed = OverridesParser.create().parse_overrides([o])[0]
            value = parsed.value()
            return dict(value) if isinstance(value, dict) else {}
    return None


def cell_name(axes: Mapping[str, str], varying: set[str] | None = None) -> str:
    """``group=option`` pairs of the axes that vary across the run's cells."""
    keys = [k for k in axes if varying is None or k in varying]
    return ",".join(f"{k}={axes[k]}" for k in keys) or "default"


def hash_payload(cfg: DictConfig) -> dict[str, Any]:
    """Everything that fixes a cell's numbers (the store key).

    The simulator's and estimators' configs, the seed, the outcomes and the chunking, and
    the code itself (:func:`~experiments.montecarlo.code_hash`: the version number stays
    the same from one commit to the next, the source does not). Nothing that only names
    the run (its cell label, its grid, its output folder) is part of it.
    """
    from importlib import metadata

    c = OmegaConf.to_container(cfg, resolve=True)
    return {
        "data": c["data"], "assignment": c["assignment"], "timing": c["timing"],
        "effect": c["effect"], "estimator": c["estimator"], "seed": c["seed"],
        "outcomes": c["experiment"]["outcomes"], "chunk_size": c["experiment"]["chunk_size"],
        "didlab": metadata.version("didlab"), "code": code_hash(),
    }


#: a failure rate above this share of a cell's draws is explained in the report
FAILURE_WARN = 0.02


def failure_table(results: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Per cell, outcome and estimator with a failure rate above :data:`FAILURE_WARN`:
    the rate, the count and the most frequent reason (its first words)."""
    head = results[results["role"] == "headline"]
    rows = []
    for key, g in head.groupby(["cell", *axes, "outcome", "estimator"], sort=False):
        failed = g["error"].astype(str) != ""
        if failed.mean() <= FAILURE_WARN:
            continue
        reasons = g.loc[failed, "error"].astype(str).str.slice(0, 140)
        rows.append({**dict(zip(["cell", *axes, "outcome", "estimator"], key)),
                     "failed": int(failed.sum()), "draws": len(g),
                     "failure_rate": float(failed.mean()),
                     "most_frequent_reason": reasons.value_counts().index[0]})
    cols = ["cell", *axes, "outcome", "estimator", "failed", "draws", "failure_rate",
            "most_frequent_reason"]
    table = pd.DataFrame(rows, columns=cols)
    return table.drop(columns=["cell"]) if axes else table


#: data keys that put a differential trend into a simulator's untreated outcome; with all of
#: them at zero, parallel trends hold by construction and a pre-test's rejections are false
#: (province: trend_gap, trend_pgdp; data=staggered: trend_slope). A registered simulator
#: with such a knob names it here.
TREND_KEYS = ("trend_gap", "trend_pgdp", "trend_slope")


def parallel_trends_hold(cfg: DictConfig) -> bool:
    """Whether the cell's simulator draws parallel untreated trends by construction."""
    return all(float(cfg.data.get(k, 0.0) or 0.0) == 0.0 for k in TREND_KEYS)


#: the reports' bands are 99% bands
REPORT_Z = 2.576


def binomial_band(p: float, n: int, z: float = REPORT_Z) -> tuple[float, float]:
    """The 99% band a rejection rate with true value ``p`` falls in over ``n`` draws
    (:func:`experiments.montecarlo.binomial_band` at the reports' z)."""
    return shared_band(p, n, z)


def pretest_warnings(diag: pd.DataFrame, parallel: Mapping[str, bool],
                     axes: list[str]) -> pd.DataFrame:
    """Pre-tests whose rejection rate, in cells where parallel trends hold by construction,
    lies above the 99% binomial band around their 5% level: the measured rate, its band,
    and the number of draws."""
    if "pretrend_reject" not in diag:
        return pd.DataFrame()
    rows = []
    head = diag[(diag["role"] == "headline") & diag["pretrend_reject"].notna()]
    for _, r in head.iterrows():
        if not parallel.get(r["cell"], False):
            continue
        n = int(r.get("n_draws", 0) or 0) - int(r.get("n_failed", 0) or 0)
        low, high = binomial_band(0.05, n)
        if r["pretrend_reject"] > high:
            rows.append({**{a: r[a] for a in axes if a in r}, "outcome": r["outcome"],
                         "estimator": r["estimator"], "pretest_rejection": r["pretrend_reject"],
                         "nominal": 0.05, "band_99": f"{low:.3f}-{high:.3f}", "draws": n})
    return pd.DataFrame(rows)


def blank_diagnosands(diag: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Headline rows whose bias or coverage is blank, with the reason read from the numbers
    (no truth, no standard error, every draw failed)."""
    rows = []
    head = diag[diag["role"] == "headline"]
    for _, r in head.iterrows():
        bias_blank = "bias" in r and pd.isna(r["bias"])
        cover_blank = "coverage" in r and pd.isna(r["coverage"])
        if not (bias_blank or cover_blank):
            continue
        if int(r.get("n_failed", 0) or 0) >= int(r.get("n_draws", 0) or 0):
            why = "every draw failed (see the failures table)"
        elif bias_blank:
            why = ("no true value: the estimator declares no causal estimand for this term "
                   "(e.g. a decomposition or a descriptive quantile gap), so bias, RMSE and "
                   "coverage cannot be computed")
        else:
            why = ("no standard error or interval (e.g. n_boot=0 for a bootstrap-only "
                   "estimator), so coverage and rejection are blank")
        rows.append({**{a: r[a] for a in axes if a in r}, "outcome": r["outcome"],
                     "estimator": r["estimator"], "term": r["term"], "why": why})
    return pd.DataFrame(rows)


def quantile_comparison(diag: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Quantile terms (``q0.1``, ...) of every estimator that has them, beside the true
    quantile treatment effect on the treated: one row per cell, outcome and quantile, the
    truth and each estimator's bias."""
    q = diag[diag["term"].astype(str).str.fullmatch(r"q[0-9.]+") & diag["mean_truth"].notna()]
    if q.empty or q["estimator"].nunique() < 1:
        return pd.DataFrame()
    q = q.assign(quantile=q["term"].str.slice(1).astype(float))
    keys = [*[a for a in axes if a in q], "outcome", "quantile"]
    truth = q.groupby(keys)["mean_truth"].first().rename("true_qtt")
    bias = q.pivot_table(index=keys, columns="estimator", values="bias", aggfunc="first")
    bias.columns = [f"bias_{c}" for c in bias.columns]
    return pd.concat([truth, bias], axis=1).reset_index()


def inference_verdict(diag: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Each estimator's (inference method's) size under a zero effect and coverage under a
    non-zero one, with Monte Carlo SEs, the 99% binomial band around the nominal level, a
    verdict read from the band and a rank by distance from the nominal size.

    Only headline rows whose rejection is a size (``rejection_is == "size"``) or a power
    (coverage read) enter; one row per estimator and outcome (cells other than the effect
    axis averaged would mix designs, so they stay separate rows)."""
    head = diag[diag["role"] == "headline"]
    if "rejection_is" not in head or not (head["rejection_is"] == "size").any():
        return pd.DataFrame()
    # the effect axis (the group, or a key inside it such as effect.att) separates the null
    # cells from the alternatives that the verdict reads together
    keys = [a for a in axes if a in head and a.partition(".")[0] != "effect"] + [
        "outcome", "estimator"]
    rows = []
    for key, g in head.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        rec = dict(zip(keys, key))
        alpha = float(g["alpha"].iloc[0]) if "alpha" in g else 0.05
        null = g[g["rejection_is"] == "size"]
        alt = g[g["rejection_is"] == "power"]
        if null.empty:
            continue
        n = int(null["n_draws"].iloc[0] - null["n_failed"].iloc[0])
        size = float(null["rejection"].iloc[0])
        lo, hi = binomial_band(alpha, n)
        rec.update(size=size, size_mcse=float(null["rejection_mcse"].iloc[0]),
                   size_band=f"{lo:.3f}-{hi:.3f}")
        cover = float(alt["coverage"].iloc[0]) if len(alt) else float("nan")
        if len(alt):
            m = int(alt["n_draws"].iloc[0] - alt["n_failed"].iloc[0])
            clo, chi = binomial_band(1 - alpha, m)
            rec.update(coverage=cover, coverage_mcse=float(alt["coverage_mcse"].iloc[0]),
                       coverage_band=f"{clo:.3f}-{chi:.3f}",
                       power=float(alt["rejection"].iloc[0]))
        if not np.isfinite(size):
            verdict = "no test (no p-value)"
        elif size > hi:
            verdict = f"over-rejects: {size:.1%} false rejections at a nominal {alpha:.0%}"
        elif size < lo:
            verdict = f"conservative: {size:.1%} at a nominal {alpha:.0%}"
        else:
            verdict = "trustworthy: size within the band"
        if len(alt) and np.isfinite(cover) and cover < clo and not verdict.startswith("over"):
            verdict += f"; but its interval covers only {cover:.1%}"
        rec["verdict"] = verdict
        rec["distance"] = abs(size - alpha) if np.isfinite(size) else np.inf
        rows.append(rec)
    if not rows:
        return pd.DataFrame()
    out = pd.DataFrame(rows)
    group = [k for k in keys if k != "estimator"]
    out["rank"] = out.groupby(group)["distance"].rank(method="min").astype(int)
    return out.sort_values([*group, "rank"]).drop(columns="distance").reset_index(drop=True)


def paper_section(name: str, diag: pd.DataFrame, n_reps: int
                  ) -> tuple[pd.DataFrame, str] | None:
    """For a design of the library (:mod:`experiments.designs`): the table of the paper's
    numbers beside didlab's and the report section around it; None for other runs."""
    from .designs import library, paper_comparison

    info = library().get(name)
    if info is None or not info.numbers:
        return None
    table = paper_comparison(info, diag)
    params = "\n".join(f"- {what} ({where})" for what, where in info.parameters)
    text = (f"## The paper's numbers beside didlab's\n\n**{info.paper}**. {info.demonstrates}"
            f"\n\nFidelity: {info.fidelity}.\n\n" + (f"Parameters:\n\n{params}\n\n" if params
                                                     else "")
            + f"didlab's values come from this run ({n_reps} draws per cell), with Monte Carlo "
            "standard errors; `within_mc_error` says whether the paper's number lies within "
            "2.576 MC SEs of didlab's, where the paper's data-generating process is reproduced "
            "exactly (`reproduced = number`). Where it is not (`pattern`), the paper's number "
            "is context and the design reproduces the pattern.\n\n"
            + report.markdown_table(table) + "\n")
    return table, text


def common_draws(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of draws (cell, replicate, outcome) in which every estimator succeeded."""
    head = results[results["role"] == "headline"]
    ok = head.assign(ok=head["error"].astype(str) == "").groupby(
        ["cell", "rep", "outcome"])["ok"].all()
    keep = ok[ok].index
    idx = pd.MultiIndex.from_frame(results[["cell", "rep", "outcome"]])
    return results[idx.isin(keep)]


def store_line(chunks: Mapping[str, int], store: str) -> str:
    """One sentence on what the store supplied: chunks computed now, chunks reused."""
    computed, reused = chunks["computed"], chunks["reused"]
    if not reused:
        return f"Chunks: {computed} computed and stored in `{store}`."
    return (f"Chunks: {computed} computed, {reused} of {computed + reused} reused from "
            f"`{store}` (same configuration, seed and code).")


def run_montecarlo(cfg: DictConfig, draw: SingleDraw, out: Path) -> tuple[dict[str, Any], list[str]]:
    """Run every cell's draws (resumable chunks, any backend) and write the diagnosands."""
    from .run import isatty

    backend = Backend.of(cfg.backend)  # validated
    runs = cells(cfg)
    names = axis_names(runs)
    varying = {a for a in names if len({ax.get(a) for _, ax in runs}) > 1}
    designs, keys = [], []
    for c, axes in runs:
        outcomes = list(c.experiment.outcomes)
        designs.append(Design(build_draw(c), build_estimators(c, outcomes),
                              cell=cell_name(axes, varying if len(runs) > 1 else set()),
                              axes=axes))
        keys.append(design_key(hash_payload(c)))
    results = run_designs(designs, int(cfg.experiment.n_reps), int(cfg.seed),
                          store=cfg.experiment.store, keys=keys,
                          chunk_size=int(cfg.experiment.chunk_size), backend=backend,
                          progress=bool(cfg.experiment.progress) and isatty())
    chunks = dict(results.attrs["chunks"])
    stored = store_line(chunks, str(cfg.experiment.store))
    print(stored)
    axes_frame = pd.DataFrame([{"cell": d.cell, **d.axes} for d in designs])
    results = results.merge(axes_frame, on="cell", how="left")
    diag = diagnose(results, by=("cell", *[a for a in names if a in axes_frame], "outcome",
                                 "estimator", "term"))
    roles = results.drop_duplicates(["estimator", "term"]).set_index(["estimator", "term"])["role"]
    diag["role"] = [roles.get((e, t), "headline") for e, t in zip(diag["estimator"], diag["term"])]
    report.write_table(results, out / "results")
    report.write_csv(diag, out / "diagnosands.csv")
    written: dict[str, Any] = {"results": out / "results.parquet",
                               "diagnosands": out / "diagnosands.csv", "chunks": chunks}
    head = diag[diag["role"] == "headline"]
    shown_axes = sorted(varying, key=names.index) if len(runs) > 1 else []
    cols = [c for c in (*shown_axes, "outcome", "estimator", "term", "n_draws", "n_failed",
                        "mean_truth", "bias", "bias_mcse", "rmse", "se_sd_ratio",
                        "coverage", "rejection", "rejection_is", "ci_width",
                        "pretrend_reject") if c in head]
    print_table(f"Diagnosands over {cfg.experiment.n_reps} draws per cell "
                "(MC standard errors in diagnosands.csv)", head[cols])
    alpha = head["alpha"] if "alpha" in head else [0.05]
    level = report.level(alpha)
    at = (f"{float(pd.Series(alpha).iloc[0]):g}" if level != "1 - alpha"
          else "each estimator's alpha")
    sections = [
        f"## Monte Carlo: {cfg.experiment.n_reps} draws per cell, seed {cfg.seed}\n\n"
        f"Bias is against each draw's exact ATT; coverage is of the {level} CI; rejection is "
        f"at {at} (size when the effect is zero, power otherwise); `_mcse` columns in "
        "`diagnosands.csv` give Monte Carlo standard errors.\n\n" + stored + "\n\n"
        + report.markdown_table(head[cols]) + "\n"]
    failures = failure_table(results, shown_axes)
    if len(failures):
        by = ["cell", *shown_axes]
        common = diagnose(common_draws(results), by=(*by, "outcome", "estimator", "term"))
        common = common[[r == "headline" for r in
                         (roles.get((e, t), "headline")
                          for e, t in zip(common["estimator"], common["term"]))]]
        report.write_csv(common, out / "diagnosands_common.csv")
        written.update(failures=failures, diagnosands_common=common)
        ccols = [c for c in (*shown_axes, "outcome", "estimator", "n_draws", "bias",
                             "bias_mcse", "rmse", "coverage", "rejection") if c in common]
        print_table("Warning: some estimators failed in more than "
                    f"{FAILURE_WARN:.0%} of draws", failures)
        sections.append(
            "## Warnings: failed draws\n\nThese estimators failed in more than "
            f"{FAILURE_WARN:.0%} of a cell's draws, so their diagnosands above come from a "
            "different subset of draws than the other estimators'. The most frequent reason "
            "is shown; for a separated propensity score (few treated units per cohort) the "
            "remedies are fewer score covariates, trimming, or Firth's penalised logit "
            "(`estimator.dr_did.firth=true`).\n\n" + report.markdown_table(failures) + "\n\n"
            "The same diagnosands on the draws where **every** estimator succeeded "
            "(`diagnosands_common.csv`), so that the estimators are compared on the same "
            "draws:\n\n" + report.markdown_table(common[ccols]) + "\n")
    parallel = {d.cell: parallel_trends_hold(c) for d, (c, _) in zip(designs, runs)}
    pre_warn = pretest_warnings(diag, parallel, shown_axes)
    blanks = blank_diagnosands(diag, shown_axes)
    if len(pre_warn):
        written["pretest_warnings"] = pre_warn
        print_table("Warning: pre-tests that reject too often where parallel trends hold",
                    pre_warn)
        sections.append(
            "## Warnings: pre-tests with the wrong size\n\nIn these cells the simulator draws "
            "parallel untreated trends (no differential trend), so every rejection of the "
            "pre-test is false; the rate should be 5%, and it lies above the 99% binomial "
            "band. Do not read a rejection of this pre-test as evidence against parallel "
            "trends in a design like this one (for Callaway-Sant'Anna, `pretest=sidak` is the "
            "test with the right size for small cohorts; R did's Wald test is "
            "`pretest=wald`).\n\n" + report.markdown_table(pre_warn) + "\n")
    verdict = inference_verdict(diag, shown_axes)
    if len(verdict) > 1:
        written["inference_verdict"] = verdict
        report.write_csv(verdict, out / "inference_verdict.csv")
        print_table("Which inference to trust here (size under the null, coverage under the "
                    "effect)", verdict[[c for c in (*shown_axes, "outcome", "estimator", "rank", "size",
                                                    "size_band", "coverage", "verdict")
                                        if c in verdict]])
        cell_keys = [a for a in shown_axes if a in verdict]

        def where(r: Mapping[str, Any]) -> str:   # "twfe (assignment.n_pilots=3)"
            at = ", ".join(f"{a}={r[a]}" for a in cell_keys)
            return f"{r['estimator']} ({at})" if at else str(r["estimator"])

        rows_ = verdict.to_dict("records")
        good = [where(r) for r in rows_ if r["verdict"].startswith("trustworthy")]
        lines = [f"- **Trustworthy in this design**: {', '.join(good) or 'none'}.",
                 *[f"- **Not trustworthy**: {where(r)} rejects a true null in "
                   f"{r['size']:.1%} of draws (band {r['size_band']})."
                   for r in rows_ if r["verdict"].startswith("over")]]
        sections.append(
            "## Which inference to trust in this design\n\nSize is the rejection rate of a "
            "true zero effect; coverage is how often the interval contains the injected "
            "effect. A method is trustworthy when its size lies inside the 99% binomial band "
            "around the nominal level over these draws; rank 1 is closest to nominal.\n\n"
            + "\n".join(lines) + "\n\n" + report.markdown_table(verdict) + "\n")
        if cfg.experiment.figures:
            p = report.inference_figure(verdict, out / "figures" / "inference_verdict.png",
                                        alpha=float(diag["alpha"].iloc[0]) if "alpha" in diag
                                        else 0.05)
            written["inference_figure"] = p
            sections.append(f"![inference](figures/{p.name})\n")
    qtab = quantile_comparison(diag, shown_axes)
    if len(qtab):
        written["quantile_comparison"] = qtab
        sections.append(
            "## Quantile effects against the true QTT\n\nThe true quantile treatment "
            "effect on the treated of each draw (quantiles of the treated cells' outcome with "
            "and without the effect) beside each quantile estimator's bias (blank: that "
            "estimator does not report this quantile). Changes-in-changes targets these "
            "QTTs; the conditional quantile DID of the studies targets quantiles of the "
            "error given unit and year, so its bias here measures reading it as a QTT.\n\n"
            + report.markdown_table(qtab) + "\n")
    paper = paper_section(str(cfg.experiment.name), diag, int(cfg.experiment.n_reps))
    if paper is not None:
        table, text = paper
        written["paper_comparison"] = table
        report.write_csv(table, out / "paper_comparison.csv")
        print_table("The paper's numbers beside didlab's (paper_comparison.csv)",
                    table[["what", "paper", "didlab", "didlab_mcse", "within_mc_error"]])
        sections.append(text)
    if len(blanks):
        written["blank_diagnosands"] = blanks
        sections.append("## Warnings: blank diagnosands\n\nWhy some cells of the table above "
                        "are empty:\n\n" + report.markdown_table(blanks) + "\n")
    if cfg.experiment.figures:
        outcome0 = list(cfg.experiment.outcomes)[0]
        paths = report.diagnosand_figures(diag, [a for a in names if a in axes_frame],
                                          out / "figures", outcome=outcome0)
        written["diagnosand_figures"] = paths
        sections += [f"![{p.stem}](figures/{p.name})\n" for p in paths]
    written["diagnosands_table"] = diag
    return written, sections
