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
    missing = unfinished_jobs(root)
    if not files:
        why = (f"; {len(missing)} job(s) did not finish, e.g. {missing[0][0]}: {missing[0][1]}"
               if missing else "")
        raise DidlabError(f"no job folder with diagnosands.csv under {str(root)!r}; "
                          "collect works on Monte Carlo sweeps (experiment=robustness, size, "
                          f"power){why}")
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
    cols = [c for c in ("job", *axes, "outcome", "estimator", "term", "n_draws", "bias", "bias_mcse",
                        "rmse", "se_sd_ratio", "coverage", "rejection", "rejection_is")
            if c in head]
    total = len(files) + len(missing)
    body = [f"# didlab sweep: {len(files)} of {total} jobs\n"]
    if missing:
        body += ["## Jobs that did not finish (not in the table)\n",
                 report.markdown_table(pd.DataFrame(missing, columns=["job", "reason"])), ""]
    body += [report.markdown_table(head[cols]), ""]
    body += [f"![{p.stem}](figures/{p.name})" for p in figures]
    write_text(root / "report.md", "\n".join(body) + "\n")
    print(f"combined {len(files)} of {total} jobs -> {root / 'diagnosands_all.csv'}")
    for job, reason in missing:
        print(f"didlab: warning: job {job} did not finish and is not in the table: {reason}",
              file=sys.stderr)
    return {"table": table, "figures": figures, "missing": missing}


def unfinished_jobs(root: Path) -> list[tuple[str, str]]:
    """Job folders of the sweep (those Hydra gave a ``.hydra`` folder) without
    ``diagnosands.csv``, each with the reason from its ``FAILED`` file."""
    out = []
    for hydra_dir in sorted(root.rglob(".hydra")):
        job = hydra_dir.parent
        if job == root or (job / "diagnosands.csv").exists():
            continue
        failed = job / "FAILED"
        reason = (failed.read_text().strip().splitlines() or ["failed"])[0] if failed.exists() \
            else "no diagnosands.csv (stopped, or not a Monte Carlo experiment)"
        out.append((str(job.relative_to(root)), reason))
    return out


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
