"""The design library: the methods literature's simulations as one-line experiments.

Each design is an experiment config (``didlab experiment=<name>``) plus a
:class:`DesignInfo` that says which paper it reproduces, with which parameters (and where in
the paper each comes from), what it demonstrates, the paper's own numbers, and how long
its default size takes. ``didlab designs`` lists them; a Monte Carlo run of a library
design writes ``paper_comparison.csv`` and a report section with the paper's numbers
beside didlab's (:func:`paper_comparison`).

Entries live in the modules of the :mod:`experiments.library` package, one per paper, each
defining ``DESIGNS: list[DesignInfo]``; this module finds them (no list to edit here).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

#: diagnosands a paper number can be compared with (columns of diagnosands.csv)
DIAGNOSANDS = ("rejection", "coverage", "bias", "rmse", "sd", "se_sd_ratio", "mean_estimate",
               "pretrend_reject", "bias_given_pass", "coverage_given_pass", "ci_width")


@dataclass(frozen=True)
class PaperNumber:
    """One number the paper reports, and where didlab's counterpart sits.

    Attributes
    ----------
    what
        What the number is, in words ("rejection rate, clustered SE, 50 states, rho 0.8").
    value
        The paper's number (a rate as a fraction: 0.44, not 44).
    source
        Where it is printed: table, column and page.
    diagnosand
        The column of ``diagnosands.csv`` it corresponds to (:data:`DIAGNOSANDS`).
    estimator
        The estimator label in didlab's results.
    cell
        Axis values that pick the design cell (``{"data.rho": "0.8"}``); empty: any cell
        (the run has one).
    term
        The term (empty: the headline).
    reproduced
        Whether the paper's data-generating process is specified fully enough for the
        number itself to be reproduced (a test then checks it within Monte Carlo error);
        False: only the qualitative pattern is, and the comparison is shown for context.
    """

    what: str
    value: float
    source: str
    diagnosand: str
    estimator: str
    cell: Mapping[str, str] = field(default_factory=dict)
    term: str = ""
    reproduced: bool = True


@dataclass(frozen=True)
class DesignInfo:
    """A design of the library.

    Attributes
    ----------
    name
        The experiment config: ``didlab experiment=<name>``.
    title
        One line for ``didlab designs``.
    paper
        The full reference.
    demonstrates
        What the design shows, in a sentence or two.
    parameters
        ``(parameter and its value, where the paper states it)`` pairs.
    numbers
        The paper's numbers with their didlab counterparts.
    fidelity
        How faithful the reproduction is: "exact DGP" or what differs and why (microdata
        that cannot ship, a calibration to unpublished moments).
    seconds
        Wall time of the default size on this project's 2-core machine (measured).
    group
        Section in the listing: "methods" (the literature) or "carbon" (the studies').
    """

    name: str
    title: str
    paper: str
    demonstrates: str
    parameters: tuple[tuple[str, str], ...] = ()
    numbers: tuple[PaperNumber, ...] = ()
    fidelity: str = "exact DGP"
    seconds: float = float("nan")
    group: str = "methods"


def library() -> dict[str, DesignInfo]:
    """name -> :class:`DesignInfo`, from every module of :mod:`experiments.library`."""
    from . import library as pkg

    found: dict[str, DesignInfo] = {}
    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        for info in importlib.import_module(f"{pkg.__name__}.{mod.name}").DESIGNS:
            if info.name in found:
                raise TypeError(f"design {info.name!r} is listed twice")
            found[info.name] = info
    return found


def listing() -> str:
    """The text ``didlab designs`` prints: one line per design, grouped."""
    lines = ["didlab designs: one command each (didlab experiment=<name>); default sizes "
             "timed on 2 cores", ""]
    titles = {"methods": "The methods literature", "carbon": "The carbon-pilot studies"}
    infos = list(library().values())
    width = max((len(i.name) for i in infos), default=10)
    for group in ("methods", "carbon"):
        members = [i for i in infos if i.group == group]
        if not members:
            continue
        lines.append(f"{titles[group]}:")
        for i in members:
            took = f"{i.seconds / 60:.1f} min" if np.isfinite(i.seconds) else "untimed"
            lines.append(f"  {i.name:<{width}}  {i.title}  [{took}]")
        lines.append("")
    lines.append("Details, parameters and the papers' numbers: README, 'Reproducing the "
                 "methods literature'; experiments/library/.")
    return "\n".join(lines)


def paper_comparison(info: DesignInfo, diag: pd.DataFrame, z: float = 2.576) -> pd.DataFrame:
    """The paper's numbers beside didlab's, one row per :class:`PaperNumber`.

    didlab's value is the diagnosand of the matching row of ``diag`` (the run's
    diagnosands: cell axes as columns); ``within`` says whether the paper's number lies
    within ``z`` Monte Carlo standard errors of didlab's (blank where there is no MC SE or
    the number is only qualitatively reproduced).
    """
    rows = []
    for num in info.numbers:
        sel = diag["estimator"] == num.estimator
        sel &= diag["term"].fillna("") == num.term if num.term else diag.get(
            "role", pd.Series("headline", index=diag.index)) == "headline"
        for axis, value in num.cell.items():
            if axis not in diag.columns:
                sel &= False
                continue
            sel &= diag[axis].astype(str) == str(value)
        hit = diag[sel]
        ours = float(hit[num.diagnosand].iloc[0]) if len(hit) == 1 else np.nan
        mcse_col = f"{num.diagnosand}_mcse"
        mcse = float(hit[mcse_col].iloc[0]) if len(hit) == 1 and mcse_col in hit else np.nan
        within: object = ""
        if num.reproduced and np.isfinite(ours) and np.isfinite(mcse) and mcse > 0:
            within = bool(abs(ours - num.value) <= z * mcse)
        rows.append({"what": num.what, "source": num.source, "paper": num.value,
                     "didlab": ours, "didlab_mcse": mcse, "within_mc_error": within,
                     "reproduced": "number" if num.reproduced else "pattern",
                     "matched_rows": int(len(hit))})
    return pd.DataFrame(rows)
