"""``experiment=spec_curve``: every combination of defensible specification choices,
each estimated once (in parallel through the Monte Carlo backends), as a table and a
specification-curve figure."""

from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from estimators.event_study import EventStudy
from estimators.panel import COHORT, D, TIME, DidlabError, OptionError, PanelError, check_choice
from estimators.panel import treatment_from_cohort
from estimators.twfe import TWFE

from . import report

SPEC_ESTIMATORS = ("twfe", "event_study")
CHOICES = ("outcome", "controls", "time_effects", "cluster", "treatment_year", "sample", "estimator")


@dataclass(frozen=True)
class Spec:
    """One specification: every choice named, plus what it means."""

    outcome: str
    controls: str
    control_columns: tuple[str, ...]
    time_effects: str
    cluster: str
    treatment_year: str
    sample: str
    query: str
    estimator: str
    alpha: float = 0.05

    def choices(self) -> dict[str, str]:
        return {c: getattr(self, c) for c in CHOICES}


def specifications(cfg: DictConfig) -> list[Spec]:
    sc = cfg.experiment.spec
    controls = OmegaConf.to_container(sc.controls, resolve=True)
    samples = OmegaConf.to_container(sc.samples, resolve=True)
    years = [str(y) for y in sc.treatment_year] or ["data"]
    for e in sc.estimators:
        check_choice("experiment.spec.estimators entry", e, SPEC_ESTIMATORS)
    if not 0 < float(sc.alpha) < 1:
        raise OptionError(f"experiment.spec.alpha={sc.alpha} must lie strictly between 0 and 1")
    if not controls or not samples or not sc.outcomes:
        raise OptionError("experiment.spec needs at least one outcome, control set and sample")
    out = []
    for outcome, (cname, cols), fe, cl, year, (sname, query), est in itertools.product(
            sc.outcomes, controls.items(), sc.time_effects, sc.cluster, years, samples.items(),
            sc.estimators):
        out.append(Spec(outcome, cname, tuple(cols or ()), fe, cl, year, sname, query or "", est,
                        float(sc.alpha)))
    return out


def check_columns(specs: list[Spec], panel: pd.DataFrame) -> None:
    """Refuse a specification naming a column the panel lacks (a misspelt cluster or control
    column made every specification fail and the run still exit 0)."""
    columns = set(panel.columns)
    for spec in specs:
        needed = [("outcomes", spec.outcome), ("cluster", spec.cluster)]
        needed += [(f"controls.{spec.controls}", c) for c in spec.control_columns]
        if spec.time_effects != "year":
            needed.append(("time_effects", spec.time_effects))
        for key, column in needed:
            if column not in columns:
                close = difflib.get_close_matches(column, sorted(map(str, columns)), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise OptionError(f"experiment.spec.{key} names {column!r}, which is not a "
                                  f"column of the panel{hint}")


def spec_panel(panel: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """The panel a specification uses: its sample restriction and treatment date."""
    data = panel
    if spec.query:
        try:
            data = data.query(spec.query)
        except Exception as exc:
            raise PanelError(f"experiment.spec.samples.{spec.sample}={spec.query!r} cannot be "
                             f"applied: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if spec.treatment_year != "data":
        data = data.copy()
        data[COHORT] = np.where(data[COHORT] > 0, int(spec.treatment_year), 0)
        data[D] = treatment_from_cohort(data[COHORT].to_numpy(), data[TIME].to_numpy())
    return data


def estimator_for(spec: Spec) -> Any:
    time_by = None if spec.time_effects == "year" else spec.time_effects
    if spec.estimator == "twfe":
        return TWFE(spec.outcome, controls=spec.control_columns, cluster=spec.cluster,
                    time_by=time_by, alpha=spec.alpha)
    if time_by is not None:
        raise OptionError("group-by-year effects are available for twfe specifications only")
    return EventStudy(spec.outcome, controls=spec.control_columns, cluster=spec.cluster,
                      alpha=spec.alpha)


def run_spec(panel: pd.DataFrame, spec: Spec) -> dict[str, Any]:
    """Estimate one specification; a failure is recorded, not raised."""
    row: dict[str, Any] = spec.choices()
    try:
        est = estimator_for(spec).fit(spec_panel(panel, spec))
        row.update(estimate=est.estimate, std_error=est.std_error, p_value=est.p_value,
                   conf_low=est.conf_low, conf_high=est.conf_high, n_obs=est.n_obs, error="")
    except (DidlabError, np.linalg.LinAlgError) as exc:
        row.update(estimate=np.nan, std_error=np.nan, p_value=np.nan, conf_low=np.nan,
                   conf_high=np.nan, n_obs=0, error=f"{type(exc).__name__}: {exc}")
    return row


def run_spec_curve(cfg: DictConfig, draw: Any, out: Path) -> tuple[dict[str, Any], list[str]]:
    """Estimate every specification on the fitted panel (``draw.panel``)."""
    from joblib import Parallel, delayed, parallel_config

    from .montecarlo import Backend, dask_client

    panel = draw.panel
    specs = specifications(cfg)
    check_columns(specs, panel)
    backend = Backend.of(cfg.backend)
    if backend.kind == "dask":
        with dask_client(backend), parallel_config(backend="dask"):
            rows = Parallel()(delayed(run_spec)(panel, s) for s in specs)
    else:
        n_jobs = 1 if backend.kind == "sequential" else backend.n_jobs
        # a specification takes a millisecond: batch them so the pool's overhead is amortised
        rows = Parallel(n_jobs=n_jobs, backend="loky" if n_jobs != 1 else "sequential",
                        batch_size=max(1, len(specs) // (4 * max(1, abs(n_jobs)))))(
            delayed(run_spec)(panel, s) for s in specs)
    table = pd.DataFrame(rows)
    if (table["error"] != "").all():
        raise DidlabError(f"none of the {len(table)} specifications could be estimated; the "
                          f"first: {table['error'].iloc[0]}")
    table.insert(0, "spec", np.arange(1, len(table) + 1))
    report.write_csv(table, out / "spec_curve.csv")
    ok = table[table["error"] == ""]
    alpha = float(cfg.experiment.spec.alpha)
    summary = {
        "n_specifications": len(table),
        "n_failed": int((table["error"] != "").sum()),
        "median_estimate": float(ok["estimate"].median()) if len(ok) else float("nan"),
        "share_significant_negative": float(((ok["p_value"] < alpha) & (ok["estimate"] < 0)).mean()) if len(ok) else float("nan"),
        "share_significant_positive": float(((ok["p_value"] < alpha) & (ok["estimate"] > 0)).mean()) if len(ok) else float("nan"),
        "min_estimate": float(ok["estimate"].min()) if len(ok) else float("nan"),
        "max_estimate": float(ok["estimate"].max()) if len(ok) else float("nan"),
    }
    summary_frame = pd.DataFrame([summary])
    report.write_csv(summary_frame, out / "spec_curve_summary.csv")
    written: dict[str, Any] = {"spec_curve": table, "summary": summary}
    sections = [
        f"## Specification curve: {len(table)} specifications\n\n"
        + report.markdown_table(summary_frame) + "\n\n"
        + report.markdown_table(table.drop(columns=["error"])) + "\n"
    ]
    if cfg.experiment.figures and len(ok):
        p = report.spec_curve_figure(ok, [c for c in CHOICES if ok[c].nunique() > 1] or ["estimator"],
                                     out / "figures" / "spec_curve.png", alpha=alpha)
        written["figure"] = p
        sections.append(f"![specification curve](figures/{p.name})\n")
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        print(f"\nSpecification curve ({len(table)} specifications)\n" + summary_frame.to_string(index=False))
    return written, sections
