"""The Monte Carlo engine: draw panels, fit every estimator, store tidy rows, diagnose.

Reproducibility rule: replicate ``i`` draws its panel from
``SeedSequence(seed).spawn(n_reps)[i]`` (equivalently ``SeedSequence(seed, spawn_key=(i,))``),
and an estimator's own randomness (bootstrap, matching ties) from a child keyed by the
estimator's label, so adding an estimator does not move the others' numbers, and results do
not depend on the backend, the number of workers or the chunking. Every column except
``seconds`` (wall time) is bit-for-bit reproducible.
"""

from __future__ import annotations

import hashlib
import inspect
import warnings
import json
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from estimators.panel import DidlabError, OptionError, check_choice

BACKENDS = ("sequential", "loky", "dask")

#: columns of a results table, in order
RESULT_COLUMNS = (
    "cell", "rep", "outcome", "estimator", "term", "role", "estimate", "std_error",
    "statistic", "p_value", "conf_low", "conf_high", "alpha", "truth", "n_obs", "n_clusters",
    "pretrend_p", "seconds", "error",
)


def replicate_seed(seed: int, rep: int) -> np.random.SeedSequence:
    """The seed sequence of replicate ``rep``: ``SeedSequence(seed).spawn(n)[rep]``."""
    return np.random.SeedSequence(seed, spawn_key=(rep,))


def estimator_seed(seed: int, rep: int, label: str) -> np.random.SeedSequence:
    """The seed sequence of an estimator's own randomness in replicate ``rep``, keyed by its
    label (crc32, stable across processes and Python versions)."""
    return np.random.SeedSequence(seed, spawn_key=(rep, zlib.crc32(label.encode())))


def needs_rng(estimator: Any) -> bool:
    """Whether ``estimator`` draws random numbers: declared in the catalogue; for an object
    outside it (a placebo wrapper built in code), whether its ``fit`` takes ``rng``."""
    from estimators import catalog

    try:
        return catalog.capabilities(estimator).needs_rng
    except DidlabError:
        try:
            return "rng" in inspect.signature(estimator.fit).parameters
        except (TypeError, ValueError):  # pragma: no cover
            return False


@dataclass(frozen=True)
class Design:
    """A data-generating process plus labelled estimators (DeclareDesign's idea).

    Attributes
    ----------
    draw
        Picklable ``rng -> panel`` (the DGP with its assignment, timing and effect).
    estimators
        ``(outcome, label) -> estimator``; each estimator has ``fit(panel)`` (optionally
        ``rng=``) and ``estimand(panel)`` giving the true value of each of its terms.
    cell
        Name of the design cell (e.g. ``timing=market_open,assignment=random``).
    """

    draw: Callable[[np.random.Generator], pd.DataFrame]
    estimators: Mapping[tuple[str, str], Any]
    cell: str = "default"
    axes: Mapping[str, str] = field(default_factory=dict)


def _empty_row(cell: str, rep: int, outcome: str, label: str) -> dict[str, Any]:
    row: dict[str, Any] = {c: np.nan for c in RESULT_COLUMNS}
    row.update(cell=cell, rep=rep, outcome=outcome, estimator=label, error="",
               n_obs=0, n_clusters=0, role="headline", term="")
    return row


def fit_one(estimator: Any, panel: pd.DataFrame, rng: np.random.Generator | None,
            cell: str, rep: int, outcome: str, label: str) -> list[dict[str, Any]]:
    """Fit one estimator on one draw; a failure becomes a row with its reason."""
    return fit_rows(estimator, panel, rng, cell, rep, outcome, label)[1]


def fit_rows(estimator: Any, panel: pd.DataFrame, rng: np.random.Generator | None,
             cell: str, rep: int, outcome: str, label: str
             ) -> tuple[Any, list[dict[str, Any]], dict[str, float]]:
    """Fit one estimator on one draw: ``(Estimate or None, result rows, truth)``.

    The Estimate is returned so that reports, figures and the sensitivity analysis use this
    fit -- the one on the seeded path -- instead of fitting again.
    """
    t0 = time.perf_counter()
    try:
        est = estimator.fit(panel, rng=rng) if rng is not None else estimator.fit(panel)
        # real panels carry no truth columns (te_<outcome>): no estimand then
        has_truth = hasattr(estimator, "estimand") and f"te_{outcome}" in panel.columns
        truth = estimator.estimand(panel) if has_truth else {}
    except (DidlabError, np.linalg.LinAlgError, ValueError, ZeroDivisionError) as exc:
        row = _empty_row(cell, rep, outcome, label)
        row["error"] = f"{type(exc).__name__}: {exc}"
        row["seconds"] = time.perf_counter() - t0
        return None, [row], {}
    seconds = time.perf_counter() - t0
    head = _empty_row(cell, rep, outcome, label)
    head.update(est.headline())
    head.update(role="headline", estimator=label, truth=truth.get(est.term, np.nan),
                pretrend_p=est.diagnostics.get("pretrend_p", np.nan), seconds=seconds)
    rows = [head]
    terms = est.terms
    if len(terms) and truth:
        names = terms["term"].to_numpy()
        values = {c: terms[c].to_numpy() for c in
                  ("estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high")}
        for j, name in enumerate(names):
            if name not in truth or name == est.term:
                continue
            r = _empty_row(cell, rep, outcome, label)
            r.update({c: v[j] for c, v in values.items()})
            r.update(term=name, role="detail", alpha=est.alpha, truth=truth[name],
                     n_obs=est.n_obs, n_clusters=est.n_clusters, seconds=0.0)
            rows.append(r)
    return est, rows, truth


def run_reps(design: Design, seed: int, reps: Iterable[int]) -> pd.DataFrame:
    """Draw and fit the given replicates sequentially; one tidy row per fit and term."""
    rows: list[dict[str, Any]] = []
    rngs = {key: needs_rng(e) for key, e in design.estimators.items()}
    for rep in reps:
        panel = design.draw(np.random.default_rng(replicate_seed(seed, rep)))
        for (outcome, label), estimator in design.estimators.items():
            rng = (np.random.default_rng(estimator_seed(seed, rep, label))
                   if rngs[(outcome, label)] else None)
            rows.extend(fit_one(estimator, panel, rng, design.cell, rep, outcome, label))
    out = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    for c in ("rep", "n_obs", "n_clusters"):
        out[c] = out[c].astype(np.int64)
    return out


# --- chunked, resumable storage ------------------------------------------------------------

def chunk_ranges(n_reps: int, chunk_size: int) -> list[tuple[int, int]]:
    if n_reps < 1:
        raise OptionError(f"experiment.n_reps={n_reps} must be >= 1")
    if chunk_size < 1:
        raise OptionError(f"experiment.chunk_size={chunk_size} must be >= 1")
    return [(a, min(a + chunk_size, n_reps)) for a in range(0, n_reps, chunk_size)]


def chunk_path(folder: Path, lo: int, hi: int) -> Path:
    return folder / f"reps-{lo:07d}-{hi:07d}.parquet"


def write_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write Parquet to a temporary name, then rename: a killed run never leaves a
    half-written chunk under the final name."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _chunk_task(design: Design, seed: int, lo: int, hi: int, path: str) -> str:
    frame = run_reps(design, seed, range(lo, hi))
    write_atomic(frame, Path(path))
    return path


def design_key(payload: Mapping[str, Any]) -> str:
    """Stable hash of everything that fixes a cell's numbers (config, seed, version)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Backend:
    kind: str = "loky"
    n_jobs: int = -1
    address: str | None = None
    n_workers: int = 2
    threads_per_worker: int = 1

    def validate(self) -> None:
        check_choice("backend.kind", self.kind, BACKENDS)


def _execute(tasks: Sequence[tuple], backend: Backend, progress: bool) -> None:
    """Run chunk tasks on the chosen backend with a progress bar on terminals."""
    from joblib import Parallel, delayed, parallel_config
    from tqdm.auto import tqdm

    backend.validate()
    if not tasks:
        return
    bar = tqdm(total=len(tasks), unit="chunk", disable=not progress, leave=False)
    try:
        if backend.kind == "sequential":
            for t in tasks:
                _chunk_task(*t)
                bar.update()
            return
        calls = (delayed(_chunk_task)(*t) for t in tasks)
        if backend.kind == "loky":
            par = Parallel(n_jobs=backend.n_jobs, backend="loky", return_as="generator_unordered")
            for _ in par(calls):
                bar.update()
            return
        from dask.distributed import Client, LocalCluster

        cluster = None
        if backend.address:
            client = Client(backend.address)
        else:
            cluster = LocalCluster(n_workers=backend.n_workers,
                                   threads_per_worker=backend.threads_per_worker,
                                   processes=True, dashboard_address=None)
            client = Client(cluster)
        try:
            with parallel_config(backend="dask"):
                for _ in Parallel(return_as="generator_unordered")(calls):
                    bar.update()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    finally:
        bar.close()


def run_designs(
    designs: Sequence[Design],
    n_reps: int,
    seed: int,
    *,
    store: str | os.PathLike,
    keys: Sequence[str],
    chunk_size: int = 25,
    backend: Backend = Backend(),
    progress: bool = False,
) -> pd.DataFrame:
    """Run ``n_reps`` replicates of every design, resuming from stored chunks.

    Parameters
    ----------
    designs
        The cells to run.
    keys
        One stable key per design (:func:`design_key`); its chunks live in
        ``store/<key>/``. A chunk already there is reused, so a killed run started again
        finishes only the missing chunks.

    Returns
    -------
    pandas.DataFrame
        All rows, sorted by cell, replicate, outcome, estimator and term order.
    """
    ranges = chunk_ranges(n_reps, chunk_size)
    tasks = []
    paths: list[list[Path]] = []
    for design, key in zip(designs, keys):
        folder = Path(store) / key
        folder.mkdir(parents=True, exist_ok=True)
        cell_paths = []
        for lo, hi in ranges:
            path = chunk_path(folder, lo, hi)
            cell_paths.append(path)
            if not path.exists():
                tasks.append((design, seed, lo, hi, str(path)))
        paths.append(cell_paths)
    _execute(tasks, backend, progress)
    frames = [pd.read_parquet(p) for cell_paths in paths for p in cell_paths]
    return pd.concat(frames, ignore_index=True)


# --- diagnosands ---------------------------------------------------------------------------

def _mcse_ratio(se: np.ndarray, sd: float, n: int) -> float:
    """Delta-method MC standard error of mean(se) / sd(estimate)."""
    if n < 3 or sd <= 0:
        return float("nan")
    ratio = se.mean() / sd
    return float(ratio * np.sqrt(se.var(ddof=1) / (n * se.mean() ** 2) + 1 / (2 * (n - 1))))


def diagnose(results: pd.DataFrame, by: Sequence[str] = ("cell", "outcome", "estimator", "term")) -> pd.DataFrame:
    """Diagnosands with Monte Carlo standard errors, from saved results alone.

    Per group: draws, failed draws, mean estimate and truth, bias, SD, RMSE, mean SE / SD,
    coverage of the CI, rejection rate at each row's own ``alpha`` (a size when the truth is
    zero in every draw, power otherwise), mean CI width, and the share of draws whose
    pre-trend test rejects at 5% when the estimator reports one. ``*_mcse`` columns hold
    the Monte Carlo standard errors.
    """
    by = [b for b in by if b in results.columns]
    out = []
    failed_rows = results[results["error"].astype(str) != ""]
    ok = results[results["error"].astype(str) == ""]
    failed_counts = (failed_rows.groupby([b for b in by if b != "term"]).size()
                     if len(failed_rows) else None)
    # terms without a truth (descriptive, real data) give all-NaN errors: NaN diagnosands,
    # not warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for key, g in ok.groupby(by, sort=False):
            key = key if isinstance(key, tuple) else (key,)
            rec = dict(zip(by, key))
            est = g["estimate"].to_numpy(float)
            truth = g["truth"].to_numpy(float)
            se = g["std_error"].to_numpy(float)
            n = est.size
            err = est - truth
            rec["n_draws"] = n
            alphas = g["alpha"].to_numpy(float)
            # the level that coverage and rejection refer to (labels follow it)
            rec["alpha"] = float(alphas[0]) if np.all(alphas == alphas[0]) else np.nan
            if failed_counts is not None:
                fkey = tuple(rec[b] for b in by if b != "term")
                rec["n_failed"] = int(failed_counts.get(fkey if len(fkey) > 1 else fkey[0], 0))
            else:
                rec["n_failed"] = 0
            sd = est.std(ddof=1) if n > 1 else np.nan
            rec["mean_estimate"] = est.mean()
            rec["mean_truth"] = np.nanmean(truth) if np.isfinite(truth).any() else np.nan
            rec["bias"] = np.nanmean(err)
            rec["bias_mcse"] = np.nanstd(err, ddof=1) / np.sqrt(n) if n > 1 else np.nan
            rec["sd"] = sd
            rec["sd_mcse"] = sd / np.sqrt(2 * (n - 1)) if n > 1 else np.nan
            mse = np.nanmean(err**2)
            rec["rmse"] = np.sqrt(mse)
            rec["rmse_mcse"] = (np.nanstd(err**2, ddof=1) / np.sqrt(n) / (2 * np.sqrt(mse))
                                if n > 1 and mse > 0 else np.nan)
            rec["se_sd_ratio"] = se.mean() / sd if n > 1 and sd > 0 else np.nan
            rec["se_sd_ratio_mcse"] = _mcse_ratio(se, sd, n)
            lo, hi = g["conf_low"].to_numpy(float), g["conf_high"].to_numpy(float)
            # draws without a truth (real data, descriptive terms) or without an interval (no
            # SEs) say nothing about coverage or rejection: NaN, not 0
            has_ci = np.isfinite(truth) & np.isfinite(lo) & np.isfinite(hi)
            cover = (lo <= truth) & (truth <= hi)
            k_ci = int(has_ci.sum())
            rec["coverage"] = cover[has_ci].mean() if k_ci else np.nan
            rec["coverage_mcse"] = np.sqrt(rec["coverage"] * (1 - rec["coverage"]) / k_ci) if k_ci else np.nan
            pv = g["p_value"].to_numpy(float)
            has_p = np.isfinite(pv)
            reject = pv < g["alpha"].to_numpy(float)
            k_p = int(has_p.sum())
            rec["rejection"] = reject[has_p].mean() if k_p else np.nan
            rec["rejection_mcse"] = np.sqrt(rec["rejection"] * (1 - rec["rejection"]) / k_p) if k_p else np.nan
            rec["rejection_is"] = ("unknown" if not np.isfinite(truth).any()
                                   else "size" if np.all(truth[np.isfinite(truth)] == 0) else "power")
            width = (g["conf_high"] - g["conf_low"]).to_numpy(float)
            rec["ci_width"] = width.mean()
            rec["ci_width_mcse"] = width.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
            pre = g["pretrend_p"].to_numpy(float)
            if np.isfinite(pre).any():
                r = (pre[np.isfinite(pre)] < 0.05)
                rec["pretrend_reject"] = r.mean()
                rec["pretrend_reject_mcse"] = np.sqrt(r.mean() * (1 - r.mean()) / r.size)
                # "pre-test, then report": how the estimate behaves among draws that pass
                passed = np.isfinite(pre) & (pre >= 0.05)
                k = int(passed.sum())
                rec["n_pass_pretest"] = k
                if k > 1:
                    rec["bias_given_pass"] = float(np.nanmean(err[passed]))
                    rec["bias_given_pass_mcse"] = float(np.nanstd(err[passed], ddof=1) / np.sqrt(k))
                    cp = cover[passed].mean()
                    rec["coverage_given_pass"] = float(cp)
                    rec["coverage_given_pass_mcse"] = float(np.sqrt(cp * (1 - cp) / k))
            out.append(rec)
    frame = pd.DataFrame(out)
    if failed_counts is not None and len(frame):
        # estimators that failed in every draw still get a row
        seen = set(map(tuple, frame[[b for b in by if b != "term"]].to_numpy().tolist()))
        for fkey, count in failed_counts.items():
            fkey = fkey if isinstance(fkey, tuple) else (fkey,)
            if tuple(fkey) not in seen:
                rec = dict(zip([b for b in by if b != "term"], fkey))
                rec.update(term="", n_draws=0, n_failed=int(count))
                out.append(rec)
        frame = pd.DataFrame(out)
    return frame


def binomial_band(p: float, n: int, z: float = 3.0) -> tuple[float, float]:
    """``p +- z*sqrt(p(1-p)/n)``: the band a rate over ``n`` independent draws should fall
    in (z = 3 by default, so a correct procedure leaves it with probability ~0.3%)."""
    half = z * np.sqrt(p * (1 - p) / n)
    return p - half, p + half
