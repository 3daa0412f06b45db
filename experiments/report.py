"""Tables and figures a reader can paste into a paper, and the run's report.md."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .files import atomic, write_csv, write_parquet, write_text  # noqa: E402,F401

PACKAGES = ("didlab", "numpy", "pandas", "scipy", "statsmodels", "linearmodels", "joblib",
            "hydra-core", "omegaconf", "seaborn", "dask", "distributed")


#: display names of the simulators' variables; a config's ``data.labels`` adds or replaces
VARIABLE_LABELS: dict[str, str] = {
    "lnce": "log CO2 emissions", "lncei": "log CO2 intensity",
    "nqpf": "new quality productive forces", "clean_share": "clean-production share",
    "pm10": "PM10", "so2": "SO2", "no2": "NO2", "lnpgdp": "log GDP per capita",
    "lnes": "log energy structure", "lnpeople": "log population",
    "lnis2": "log industry share", "lnfdi": "log FDI", "lntech": "log technology",
    "green": "green innovation", "structure": "industrial structure",
}
_labels: dict[str, str] = dict(VARIABLE_LABELS)


def set_labels(extra: dict[str, str] | None) -> None:
    """Use the run's labels (``data.labels``) beside the defaults in every figure."""
    _labels.clear()
    _labels.update(VARIABLE_LABELS)
    _labels.update({str(k): str(v) for k, v in (extra or {}).items()})


def var_label(name: str) -> str:
    """A variable's display name: its label, or the column name itself."""
    return _labels.get(str(name), str(name))


def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def level(alpha: float | Sequence[float]) -> str:
    """The confidence level of ``alpha`` as a label ("95%", "90%"); several different
    levels give "1 - alpha"."""
    values = sorted({round(float(a), 10) for a in np.atleast_1d(alpha)
                     if a is not None and np.isfinite(a)})
    if len(values) != 1:
        return "1 - alpha"
    return f"{100 * (1 - values[0]):g}%"


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """A GitHub-flavoured markdown table (no tabulate dependency)."""
    def fmt(v: object) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else format(v, floatfmt)
        return str(v)

    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


def write_table(frame: pd.DataFrame, stem: Path) -> None:
    """Write a results table as Parquet and CSV, each atomically (temporary name, then
    rename), so that a killed run never leaves a truncated table under the final name."""
    write_parquet(frame, stem.with_suffix(".parquet"))
    write_csv(frame, stem.with_suffix(".csv"))


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Save atomically so that a killed run leaves no half-written PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic(path) as tmp:
            fig.savefig(tmp, dpi=130, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def event_study_figure(terms: pd.DataFrame, path: Path, title: str) -> Path:
    """Event-study coefficients with CIs and the true effect path, one panel per outcome.

    ``terms`` has columns outcome, estimator, event_time, estimate, conf_low, conf_high and
    optionally truth.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    outcomes = list(dict.fromkeys(terms["outcome"]))
    wide = terms["estimator"].nunique() > 2
    # room for every estimator's interval at every event time: many estimators over a long
    # window get a wider panel instead of overlapping bars
    span = terms["event_time"].nunique() * terms["estimator"].nunique()
    width = min(22.0, max(8.5 if wide else 5.2, 5.0 + 0.055 * span))
    fig, axes = plt.subplots(1, len(outcomes), figsize=(width * len(outcomes), 4.4),
                             squeeze=False)
    palette = sns.color_palette("deep")
    for ax, outcome in zip(axes[0], outcomes):
        sub = terms[terms["outcome"] == outcome]
        n_est = sub["estimator"].nunique()
        # the true path from the estimator covering the most event times (unbinned)
        if "truth" in sub:
            best = sub.dropna(subset=["truth"]).groupby("estimator")["event_time"].nunique()
            if len(best):
                g = sub[sub["estimator"] == best.idxmax()].sort_values("event_time")
                ax.plot(g["event_time"], g["truth"], color="black", lw=1.5, ls="--",
                        label="true effect", zorder=5)
        step = min(0.14, 0.8 / max(n_est, 1))
        for i, (label, g) in enumerate(sub.groupby("estimator", sort=False)):
            g = g.sort_values("event_time")
            x = g["event_time"].to_numpy() + step * (i - (n_est - 1) / 2)
            y = g["estimate"].to_numpy()
            colour = palette[i % len(palette)]
            ax.errorbar(x, y, yerr=[y - g["conf_low"], g["conf_high"] - y], fmt="o",
                        color=colour, capsize=2 if n_est > 4 else 3, ms=4 if n_est > 4 else 5,
                        label=f"{label} ({level(g['alpha']) if 'alpha' in g else '95%'} CI)")
            if "binned" in g and g["binned"].fillna(False).astype(bool).any():
                b = g["binned"].fillna(False).astype(bool).to_numpy()
                # a binned endpoint pools every period beyond it: hollow marker
                ax.plot(x[b], y[b], "o", ms=7, mfc="white", mec=colour, zorder=4)
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(-0.5, color="grey", lw=0.8, ls=":")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # event times are whole periods
        binned_rows = (sub["binned"].fillna(False).astype(bool) if "binned" in sub
                       else pd.Series(False, index=sub.index))
        if binned_rows.any():
            ax.plot([], [], "o", ms=7, mfc="white", mec="grey",
                    label="hollow: binned endpoint (pools the periods beyond)")
        lo_all, hi_all = sub["event_time"].min(), sub["event_time"].max()
        ends_all = sub.loc[binned_rows, "event_time"].unique()
        # relabel an endpoint tick only where no estimator has event times beyond it
        if binned_rows.any() and all(e in (lo_all, hi_all) for e in ends_all):
            ends = ends_all
            ticks = sorted(set(ax.get_xticks().round().astype(int)) | set(ends.astype(int)))
            lo, hi = sub["event_time"].min(), sub["event_time"].max()
            ticks = [t for t in ticks if lo <= t <= hi]
            ax.set_xticks(ticks)
            ax.set_xticklabels([(f"≤{t}" if t < 0 else f"≥{t}") if t in ends else str(t)
                                for t in ticks])
            for t in ends:
                ax.axvspan(t - 0.4, t + 0.4, color="grey", alpha=0.12, lw=0)
        ax.set_xlabel("periods since treatment (reference -1)")
        ax.set_ylabel(f"effect on {var_label(outcome)}")
        ax.set_title(var_label(outcome))
        if wide:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


DIAGNOSANDS = (("bias", "bias"), ("coverage", "coverage of {level} CI"),
               ("rejection", "rejection rate at {alpha:g}"))


def diagnosand_figure(diag: pd.DataFrame, axis: str, path: Path, hue: str | None = None,
                      alpha: float = 0.05) -> Path:
    """Bias, coverage and rejection rate (columns) against one swept axis, one row per
    estimator, with +-2 Monte Carlo SE bars and nominal levels as reference lines. Each
    diagnosand shares its y axis across estimators so that they compare at a glance."""
    sns.set_theme(style="whitegrid", context="notebook")
    est_labels = list(dict.fromkeys(diag["estimator"]))
    fig, axes = plt.subplots(len(est_labels), len(DIAGNOSANDS),
                             figsize=(4.2 * len(DIAGNOSANDS) + 1.2, 2.1 * len(est_labels) + 0.9),
                             squeeze=False, sharex=True, sharey="col")
    levels = list(dict.fromkeys(diag[axis]))
    positions = np.arange(len(levels), dtype=float)
    ticklabels = [str(v) for v in levels]
    if axis == "effect" and "mean_truth" in diag:
        # effect sizes on their own scale (zero, small, constant are -0, -0.1, -0.3, not
        # three equally spaced categories): x is each level's mean true effect
        truth = diag.groupby(axis, sort=False)["mean_truth"].mean().reindex(levels).to_numpy(float)
        if np.isfinite(truth).all() and np.unique(np.round(truth, 12)).size == len(levels):
            positions = truth
            ticklabels = [f"{v}\n{t:.3g}" for v, t in zip(levels, truth)]
    span = float(np.ptp(positions)) or 1.0
    hues = list(dict.fromkeys(diag[hue])) if hue else [None]
    palette = sns.color_palette("deep", len(hues))
    for i, label in enumerate(est_labels):
        sub = diag[diag["estimator"] == label]
        for j, (col, name) in enumerate(DIAGNOSANDS):
            ax = axes[i, j]
            for h, colour in zip(hues, palette):
                g = sub if h is None else sub[sub[hue] == h]
                g = g.set_index(axis).reindex(levels)
                dodge = 0.0 if h is None else 0.08 * (hues.index(h) - (len(hues) - 1) / 2)
                x = positions + dodge * span / max(len(levels) - 1, 1)
                ax.errorbar(x, g[col], yerr=2 * g[f"{col}_mcse"], fmt="o-", color=colour,
                            capsize=3, ms=4, lw=1, label=None if h is None else str(h))
            ref = {"bias": 0.0, "coverage": 1 - alpha, "rejection": alpha}[col]
            ax.axhline(ref, color="black", lw=0.8, ls="-" if col == "bias" else "--")
            ax.set_xticks(positions)
            ax.set_xticklabels(ticklabels, rotation=20 if positions is not None else 0,
                               ha="right", fontsize=8)
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
            if i == 0:
                ax.set_title(name.format(level=level(alpha), alpha=alpha), fontsize=10)
            if i == len(est_labels) - 1:
                ax.set_xlabel("true effect (ATT)" if ticklabels[0].count("\n") else axis)
    if hue:
        axes[0, -1].legend(title=hue, fontsize=7, title_fontsize=8, loc="upper left",
                           bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"Diagnosands against {axis} (rows: estimators; bars: +-2 Monte Carlo SE)",
                 fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def diagnosand_figures(diag: pd.DataFrame, axes: Sequence[str], folder: Path,
                       outcome: str | None = None) -> list[Path]:
    """One figure per varying axis (the other varying axis, if any, as colour)."""
    head = diag[diag["role"] == "headline"] if "role" in diag else diag
    if outcome is not None:
        head = head[head["outcome"] == outcome]
    varying = [a for a in axes if a in head and head[a].nunique() > 1]
    paths = []
    for a in varying:
        others = [b for b in varying if b != a]
        hue = others[0] if others else None
        cols = [a] + ([hue] if hue else [])
        extra = [b for b in others[1:]]
        sub = head
        for b in extra:  # more than two axes: show the first level of the rest
            sub = sub[sub[b] == sub[b].iloc[0]]
        sub = sub.groupby(["estimator", *cols], sort=False, as_index=False).first()
        alpha = float(sub["alpha"].iloc[0]) if "alpha" in sub and sub["alpha"].nunique() == 1 else 0.05
        paths.append(diagnosand_figure(sub, a, folder / f"diagnosands_by_{a}.png", hue=hue,
                                       alpha=alpha))
    return paths


def placebo_distribution_figure(distribution: pd.DataFrame, summary: pd.DataFrame,
                                path: Path) -> Path:
    """Histogram of placebo statistics with the actual statistic marked, one panel per
    (outcome, estimator), the randomization p-value in the title."""
    sns.set_theme(style="whitegrid", context="notebook")
    keys = list(summary[["outcome", "estimator"]].itertuples(index=False, name=None))
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.6), squeeze=False)
    for ax, (outcome, label) in zip(axes[0], keys):
        d = distribution[(distribution["outcome"] == outcome) & (distribution["estimator"] == label)]
        s = summary[(summary["outcome"] == outcome) & (summary["estimator"] == label)].iloc[0]
        sns.histplot(d["placebo_statistic"].dropna(), bins=60, stat="density", ax=ax,
                     color=sns.color_palette("deep")[0], alpha=0.6)
        ax.axvline(s["actual_statistic"], color="crimson", lw=2, label="actual")
        ax.axvline(-s["actual_statistic"], color="crimson", lw=1, ls=":")
        ax.set_title(f"{label} on {outcome}: RI p = {s['ri_p_value']:.4f}", fontsize=10)
        ax.set_xlabel(f"placebo {'t statistic' if s['statistic'] == 't' else 'estimate'} "
                      f"({int(s['n_assignments'])} assignments)")
        ax.legend(fontsize=8)
    fig.suptitle("Fake-pilot placebo distribution (randomization inference)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def forest_figure(table: pd.DataFrame, term: str, path: Path, title: str,
                  reference: str | None = None,
                  panel_notes: dict[tuple[str, str], str] | None = None,
                  term_label: Callable[[str], str] | None = None) -> Path:
    """Point estimates with CIs, one row per term, one panel per (outcome, estimator)."""
    sns.set_theme(style="whitegrid", context="notebook")
    keys = list(dict.fromkeys(table[["outcome", "estimator"]].itertuples(index=False, name=None)))
    n_terms = table.groupby(["outcome", "estimator"]).size().max()
    fig, axes = plt.subplots(1, len(keys), figsize=(max(6.5, 5.0 * len(keys)),
                                                    0.55 * n_terms + 2.0), squeeze=False)
    panel_notes = panel_notes or {}
    for ax, (outcome, label) in zip(axes[0], keys):
        g = table[(table["outcome"] == outcome) & (table["estimator"] == label)]
        y = np.arange(len(g))[::-1]
        est = g["estimate"].to_numpy()
        ax.errorbar(est, y, xerr=[est - g["conf_low"], g["conf_high"] - est], fmt="o",
                    color=sns.color_palette("deep")[0], capsize=3)
        ax.axvline(0, color="grey", lw=0.8)
        if reference and reference in g:
            ax.axvline(g[reference].iloc[0], color="black", lw=1, ls="--")
        ax.set_yticks(y)
        names = g[term].astype(str)
        ax.set_yticklabels([term_label(n) for n in names] if term_label else names)
        note = panel_notes.get((outcome, label))
        ax.set_title(f"{label} on {var_label(outcome)}" + (f"\n{note}" if note else ""),
                     fontsize=10)
        ax.set_xlabel("estimate")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def bacon_figure(terms: pd.DataFrame, twfe: float, path: Path, title: str) -> Path:
    """Goodman-Bacon scatter: each 2x2 comparison's estimate against its weight, coloured
    by comparison type, with the TWFE coefficient (their weighted sum) as a line."""
    sns.set_theme(style="whitegrid", context="notebook")
    pairs = terms[terms["level"] == "pair"]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    sns.scatterplot(data=pairs, x="weight", y="estimate", hue="type", style="type", s=70, ax=ax)
    ax.axhline(twfe, color="black", lw=1, ls="--", label=f"TWFE = {twfe:.4f}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("weight in the TWFE coefficient")
    ax.set_ylabel("2x2 DID estimate")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def _stars(p: float) -> str:
    return "***" if p < 0.01 else "**" if p < 0.05 else "*" if p < 0.1 else ""


def regression_table(draw) -> dict[str, str]:
    """A paper-style table of every TWFE estimator fitted on the panel (each outcome): the
    coefficient with stars and its SE in parentheses, controls, fixed-effect rows that say
    which effects the column has (unit, year, or group-by-year), N, R-squared (of the
    dummy-variable regression) and clusters. Markdown and LaTeX.

    ``draw`` is the :class:`~experiments.single.SingleDraw` whose fits are used as they
    are: nothing is fitted again.
    """
    from estimators import catalog

    columns = [(f.outcome, f.label, f.estimate) for f in draw.fits.values()
               if f.estimate is not None and catalog.kind_of(f.estimator) == "twfe"]
    time_by = {f.label: getattr(f.estimator, "time_by", None) for f in draw.fits.values()}
    if not columns:
        return {"markdown": "(no TWFE estimator configured)\n", "latex": "% no TWFE estimator\n"}
    names: list[str] = []
    for _, _, e in columns:
        for t in e.terms["term"]:
            if t not in names:
                names.append(t)
    body: list[list[str]] = []
    for name in names:
        coef_row, se_row = [], []
        for _, _, e in columns:
            t = e.terms.set_index("term")
            if name in t.index and bool(t.loc[name, "identified"]):
                coef_row.append(f"{t.loc[name, 'estimate']:.4f}{_stars(t.loc[name, 'p_value'])}")
                se_row.append(f"({t.loc[name, 'std_error']:.4f})")
            elif name in t.index:
                coef_row.append("n.i.")
                se_row.append("")
            else:
                coef_row.append("")
                se_row.append("")
        label = "policy x post (d)" if name == "d" else name
        body.append([label, *coef_row])
        body.append(["", *se_row])
    body.append(["Unit FE", *["Yes"] * len(columns)])
    body.append(["Year FE", *["No" if time_by.get(lab) else "Yes" for _, lab, _ in columns]])
    for by in dict.fromkeys(b for b in time_by.values() if b):
        body.append([f"{by}-by-year FE", *["Yes" if time_by.get(lab) == by else "No"
                                            for _, lab, _ in columns]])
    body.append(["N", *[str(e.n_obs) for _, _, e in columns]])
    body.append(["R-squared", *[f"{e.diagnostics.get('r2', float('nan')):.3f}" for _, _, e in columns]])
    body.append(["Clusters", *[str(e.n_clusters) for _, _, e in columns]])
    header = ["", *[f"({i + 1}) {o}" for i, (o, _, _) in enumerate(columns)]]
    sub = ["", *[lab for _, lab, _ in columns]]
    md = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
          "| " + " | ".join(sub) + " |"]
    md += ["| " + " | ".join(r) + " |" for r in body]
    note = ("Standard errors in parentheses: " + columns[0][2].inference
            + ". *** p<0.01, ** p<0.05, * p<0.1. n.i.: not identified beside the fixed effects.")
    md.append("")
    md.append(note)
    esc = lambda x: x.replace("_", "\\_").replace("%", "\\%")  # noqa: E731
    tex = ["\\begin{tabular}{l" + "c" * len(columns) + "}", "\\hline",
           " & ".join(esc(h) for h in header) + " \\\\", " & ".join(esc(h) for h in sub) + " \\\\",
           "\\hline"]
    for r in body:
        # stars trail a coefficient: one superscript for the whole run of them
        cells = [re.sub(r"(\*+)$", lambda m: f"$^{{{m.group(1)}}}$", esc(c)) for c in r]
        tex.append(" & ".join(cells) + " \\\\")
    tex += ["\\hline", "\\end{tabular}", "", "% " + note]
    return {"markdown": "\n".join(md) + "\n", "latex": "\n".join(tex) + "\n"}


def psm_figures(match, label: str, folder: Path) -> list[Path]:
    """Propensity-score overlap by group and a love plot (absolute standardized mean
    differences before and after matching, 0.1 marked) for one matching."""
    sns.set_theme(style="whitegrid", context="notebook")
    table = match.table.copy()
    table["group"] = np.where(table["treated"], "treated", "control")
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    sns.histplot(data=table, x="score", hue="group", bins=25, stat="density", common_norm=False,
                 element="step", ax=ax)
    # seaborn's legend says which colour is which group; keep it when adding a marker
    seaborn_legend = ax.get_legend()
    handles = list(seaborn_legend.legend_handles) if seaborn_legend else []
    labels = [t.get_text() for t in seaborn_legend.get_texts()] if seaborn_legend else []
    off = table[~table["on_support"]]
    if len(off):
        (marker,) = ax.plot(off["score"], np.zeros(len(off)), "x", color="black", ms=7)
        handles.append(marker)
        labels.append(f"off support ({len(off)})")
    if handles:
        ax.legend(handles, labels, title="group", fontsize=8, title_fontsize=8,
                  loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xlabel("propensity score")
    ax.set_title(f"{label}: propensity overlap ({int(table['treated'].sum())} treated)", fontsize=10)
    fig.tight_layout()
    p1 = save_figure(fig, folder / f"psm_overlap_{label}.png")
    bal = match.balance
    long = pd.DataFrame({
        "covariate": np.r_[bal["covariate"], bal["covariate"]],
        "abs_smd": np.abs(np.r_[bal["smd_before"], bal["smd_after"]]),
        "sample": ["before matching"] * len(bal) + ["after matching"] * len(bal),
    })
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(bal) + 1.6))
    sns.scatterplot(data=long, x="abs_smd", y="covariate", hue="sample", style="sample", s=70, ax=ax)
    # outside the axes: inside, the legend covered points with large differences
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title_fontsize=8)
    ax.axvline(0.1, color="grey", ls="--", lw=1)
    ax.set_xlabel("absolute standardized mean difference")
    ax.set_title(f"{label}: covariate balance (love plot)", fontsize=10)
    fig.tight_layout()
    p2 = save_figure(fig, folder / f"psm_love_{label}.png")
    return [p1, p2]


def spec_curve_figure(table: pd.DataFrame, choices: Sequence[str], path: Path,
                      alpha: float = 0.05) -> Path:
    """Specification curve: estimates sorted with their CIs (coloured by significance and
    sign), and below, which choice each specification made."""
    sns.set_theme(style="whitegrid", context="notebook")
    t = table.sort_values("estimate").reset_index(drop=True)
    x = np.arange(len(t))
    rows = [(c, v) for c in choices for v in list(dict.fromkeys(t[c].astype(str)))]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7, 0.12 * len(t) + 4), 3.2 + 0.28 * len(rows)),
                                      sharex=True, gridspec_kw={"height_ratios": [2.2, 0.2 + 0.12 * len(rows)]})
    sig = t["p_value"] < alpha
    colour = np.where(sig & (t["estimate"] < 0), "#1f77b4", np.where(sig, "#d62728", "#7f7f7f"))
    top.vlines(x, t["conf_low"], t["conf_high"], colors=colour, lw=1, alpha=0.6)
    top.scatter(x, t["estimate"], c=colour, s=14, zorder=3)
    top.axhline(0, color="black", lw=0.8)
    top.set_ylabel(f"estimate ({level(alpha)} CI)")
    top.set_title(f"Specification curve: {len(t)} specifications (blue: significant < 0, "
                  f"red: significant > 0, grey: p >= {alpha})", fontsize=10)
    for i, (c, v) in enumerate(rows):
        on = t[c].astype(str).to_numpy() == v
        bottom.scatter(x[on], np.full(on.sum(), i), marker="|", s=60, color="black")
    bottom.set_yticks(np.arange(len(rows)))
    bottom.set_yticklabels([f"{c}: {v}" for c, v in rows], fontsize=8)
    bottom.set_ylim(len(rows) - 0.5, -0.5)
    bottom.set_xlabel("specifications, sorted by estimate")
    fig.tight_layout()
    return save_figure(fig, path)


def sensitivity_figure(table: pd.DataFrame, path: Path, alpha: float = 0.05,
                       breakdowns: dict[tuple[str, str, str], float] | None = None) -> Path:
    """Honest confidence sets against the bound M (smoothness) and Mbar (relative
    magnitudes), the conventional interval at the left, one row per estimator.

    The point estimate is a dashed line across each panel, and the breakdown value
    (``breakdowns[(outcome, estimator, restriction)]``: the smallest bound whose set
    includes zero) a dotted vertical line with its value, placed on the bound's scale.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    breakdowns = breakdowns or {}
    keys = list(dict.fromkeys(table[["outcome", "estimator"]].itertuples(index=False, name=None)))
    fig, axes = plt.subplots(len(keys), 2, figsize=(11, 3.0 * len(keys) + 0.6), squeeze=False)
    blue, red = sns.color_palette("deep")[0], sns.color_palette("deep")[3]
    for i, (outcome, label) in enumerate(keys):
        sub = table[(table["outcome"] == outcome) & (table["estimator"] == label)]
        conv = sub[sub["method"] == "conventional"].iloc[0]
        point = (conv["lower"] + conv["upper"]) / 2
        for j, restriction in enumerate(("smoothness", "relative_magnitudes")):
            ax = axes[i, j]
            g = sub[sub["restriction"] == restriction]
            if g.empty:
                ax.set_visible(False)
                continue
            m = g["M"].to_numpy()
            # ticks at the grid's own positions (a numeric axis, not categories), the
            # conventional interval one step to the left of the smallest bound
            step = (m.max() - m.min()) / max(len(m) - 1, 1) or 1.0
            ax.vlines(m, g["lower"], g["upper"], color=blue, lw=3)
            ax.vlines([m.min() - step], [conv["lower"]], [conv["upper"]], color="grey", lw=3)
            ax.axhline(0, color="black", lw=0.8)
            ax.axhline(point, color="grey", lw=1, ls="--")
            bd = breakdowns.get((outcome, label, restriction))
            if bd is not None and np.isfinite(bd) and m.min() <= bd <= m.max() + step:
                ax.axvline(bd, color=red, lw=1.2, ls=":")
                ax.text(bd, ax.get_ylim()[1], f" breakdown {bd:.3g}", color=red, fontsize=8,
                        va="top", ha="left")
            ax.set_xticks(np.r_[m.min() - step, m])
            ax.set_xticklabels(["conv."] + [f"{v:.2g}" for v in m], rotation=30, fontsize=8)
            ax.set_xlabel("M (bound on second differences)" if j == 0
                          else "Mbar (post violation / largest pre violation)", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{label}\n{var_label(outcome)}", fontsize=9)
            ax.set_title(f"{restriction.replace('_', ' ')} ({g['method'].iloc[-1]})", fontsize=10)
    handles = [plt.Line2D([], [], color=blue, lw=3, label=f"honest {level(alpha)} set"),
               plt.Line2D([], [], color="grey", lw=3, label="conventional interval"),
               plt.Line2D([], [], color="grey", lw=1, ls="--", label="point estimate"),
               plt.Line2D([], [], color=red, lw=1.2, ls=":", label="breakdown value")]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=9)
    fig.suptitle("How wrong may parallel trends be before the average post effect's set "
                 "includes zero?", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return save_figure(fig, path)


def inference_figure(verdict: pd.DataFrame, path: Path, alpha: float = 0.05) -> Path:
    """Size under the null and coverage under the effect of each inference method, with
    +-2 Monte Carlo SE bars and the 99% binomial band around the nominal level shaded."""
    sns.set_theme(style="whitegrid", context="notebook")
    outcomes = list(dict.fromkeys(verdict["outcome"]))
    panels = [("size", "size_band", alpha, "rejection rate of a true null (size)")]
    if "coverage" in verdict:
        panels.append(("coverage", "coverage_band", 1 - alpha, "coverage of the interval"))
    fig, axes = plt.subplots(len(outcomes), len(panels), squeeze=False,
                             figsize=(5.6 * len(panels), 0.45 * verdict["estimator"].nunique() + 1.8))
    for i, outcome in enumerate(outcomes):
        sub = verdict[verdict["outcome"] == outcome].sort_values("rank")
        y = np.arange(len(sub))[::-1]
        for j, (col, band, nominal, name) in enumerate(panels):
            ax = axes[i, j]
            lo, hi = (float(v) for v in str(sub[band].iloc[0]).split("-")) if sub[band].notna().any() \
                else (nominal, nominal)
            ax.axvspan(lo, hi, color="grey", alpha=0.15, lw=0, label="99% band")
            ax.axvline(nominal, color="black", lw=0.8, ls="--")
            ok = sub["verdict"].str.startswith("trustworthy").to_numpy()
            green, red = sns.color_palette("deep")[2], sns.color_palette("deep")[3]
            colours = [green if k else red for k in ok]
            ax.errorbar(sub[col], y, xerr=2 * sub[f"{col}_mcse"], fmt="none", ecolor="grey",
                        capsize=3)
            ax.scatter(sub[col], y, c=colours, zorder=3, s=40)
            ax.set_yticks(y)
            ax.set_yticklabels(sub["estimator"] if j == 0 else [""] * len(sub))
            ax.set_xlabel(name, fontsize=9)
            if i == 0:
                ax.set_title(f"nominal {nominal:.0%}", fontsize=10)
    fig.suptitle("Which inference to trust (green: size inside the band; red: outside)",
                 fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def quantile_figure(table: pd.DataFrame, path: Path) -> Path:
    """Effects across quantiles with their bootstrap bands, one colour per estimator, the
    true quantile effects on the treated where the draw has them."""
    sns.set_theme(style="whitegrid", context="notebook")
    outcomes = list(dict.fromkeys(table["outcome"]))
    fig, axes = plt.subplots(1, len(outcomes), figsize=(6 * len(outcomes), 3.8), squeeze=False)
    palette = sns.color_palette("deep")
    for ax, outcome in zip(axes[0], outcomes):
        sub = table[table["outcome"] == outcome]
        truth_drawn = False
        for i, (label, g) in enumerate(sub.groupby("estimator", sort=False)):
            q = g["quantile"].to_numpy()
            ax.plot(q, g["estimate"], "o-", color=palette[i], label=label)
            if np.isfinite(g["std_error"]).any():
                ax.fill_between(q, g["conf_low"], g["conf_high"], color=palette[i], alpha=0.2)
            if not truth_drawn and "truth" in g and np.isfinite(g["truth"]).any():
                ax.plot(q, g["truth"], "--", color="black", lw=1.2, label="true QTT")
                truth_drawn = True
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("quantile")
        ax.set_ylabel(f"effect on {var_label(outcome)}")
        ax.legend(fontsize=8)
    levels = level(table["alpha"]) if "alpha" in table else "95%"
    fig.suptitle(f"Effects across the outcome distribution (bands: {levels}, unit bootstrap)",
                 fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)
