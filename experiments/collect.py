"""Combine the diagnosands of a multirun sweep into one table and figures.

Runs automatically at the end of ``didlab -m ...`` (a Hydra callback) and by hand as
``didlab collect SWEEP_DIR``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback

from estimators.panel import DidlabError

from . import report
from .files import write_csv, write_text
from .montecarlo_run import AXES


def collect(sweep_dir: str | Path) -> dict[str, Any]:
    """Read every job's ``diagnosands.csv`` under ``sweep_dir`` and write
    ``diagnosands_all.csv``, ``report.md`` and ``figures/diagnosands_by_<axis>.png``.

    Each job's axes come from its own columns (``assignment``, ``timing``, ...), which
    record the options the job was composed from.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise DidlabError(f"sweep folder {str(root)!r} does not exist")
    files = sorted(root.rglob("diagnosands.csv"))
    if not files:
        raise DidlabError(f"no job folder with diagnosands.csv under {str(root)!r}; "
                          "collect works on Monte Carlo sweeps (experiment=robustness, size, power)")
    frames = []
    for f in files:
        d = pd.read_csv(f)
        d.insert(0, "job", str(f.parent.relative_to(root)))
        frames.append(d)
    table = pd.concat(frames, ignore_index=True)
    write_csv(table, root / "diagnosands_all.csv")
    axes = [a for a in AXES if a in table and table[a].nunique() > 1]
    figures = []
    if "role" in table:
        outcome0 = table["outcome"].iloc[0]
        figures = report.diagnosand_figures(table, axes, root / "figures", outcome=outcome0)
    head = table[table["role"] == "headline"] if "role" in table else table
    cols = [c for c in (*axes, "outcome", "estimator", "term", "n_draws", "bias", "bias_mcse",
                        "rmse", "se_sd_ratio", "coverage", "rejection", "rejection_is")
            if c in head]
    body = [f"# didlab sweep: {len(files)} jobs\n", report.markdown_table(head[cols]), ""]
    body += [f"![{p.stem}](figures/{p.name})" for p in figures]
    write_text(root / "report.md", "\n".join(body) + "\n")
    print(f"combined {len(files)} jobs -> {root / 'diagnosands_all.csv'}")
    return {"table": table, "figures": figures}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="didlab collect",
                                     description="Combine a sweep's diagnosands.")
    parser.add_argument("sweep_dir")
    args = parser.parse_args(argv)
    try:
        collect(args.sweep_dir)
    except DidlabError as exc:
        print(f"didlab: error: {exc}", file=sys.stderr)
        return 2
    return 0


class CollectCallback(Callback):
    """Hydra callback: combine the sweep's diagnosands when a multirun ends."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if any(sweep_dir.rglob("diagnosands.csv")):
            collect(sweep_dir)
