"""``experiment=estimate``: the configured estimators on one panel with a paper-style
regression table of every TWFE specification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from . import report
from .single import SingleDraw


def run_estimate(cfg: DictConfig, draw: SingleDraw, out: Path) -> tuple[dict[str, Any], list[str]]:
    """Write the results table and the regression table (Markdown and LaTeX), built from
    the fits already made on the panel."""
    report.write_table(draw.table, out / "results")
    reg = report.regression_table(draw)
    report.write_text(out / "regression_table.md", reg["markdown"])
    report.write_text(out / "regression_table.tex", reg["latex"])
    print("\n" + reg["markdown"])
    return ({"regression_table": out / "regression_table.md", "results": out / "results.parquet"},
            ["## Regression table\n\n" + reg["markdown"] + "\n"])
