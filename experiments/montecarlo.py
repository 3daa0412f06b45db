"""The Monte Carlo engine: draw panels, fit every estimator, store tidy rows, diagnose.

Reproducibility rule: replicate ``i`` draws its panel from
``SeedSequence(seed).spawn(n_reps)[i]`` (equivalently ``SeedSequence(seed, spawn_key=(i,))``),
and an estimator's own randomness (bootstrap, matching ties) from a child keyed by the
estimator's label, so adding an estimator does not move the others' numbers, and results do
not depend on the backend, the number of workers or the chunking. Every column except
``seconds`` (wall time) is bit-for-bit reproducible.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import inspect
import warnings
import json
import logging
import os
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from estimators.panel import DidlabError, OptionError, check_choice
from .files import write_parquet

BACKENDS = ("sequential", "loky", "dask")


class BackendError(DidlabError):
    """The configured backend cannot run the work (an unreachable Dask scheduler)."""

#: columns of a results table, in order
RESULT_COLUMNS = (
    "cell", "rep", "outcome", "estimator", "term", "role", "estimate", "std_error",
    "statistic", "p_value", "conf_low", "conf_high", "alpha", "truth", "n_obs", "n_clusters",
    "pretrend_p", "seconds", "error",
)


def replicate_seed(seed: int, rep: int) -> np.random.SeedSequence:
    """The seed sequence of replicate ``rep``: ``SeedSequence(seed).spawn(n)[rep]``."""
    return np.random.SeedSequence(seed, spawn_key=(rep,))


# SeedSequence's hashing constants (numpy/random/bit_generator.pyx), for the vectorised
# seeding of replicate_generators
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R, _M32 = 0xCA01F9DD, 0x4973F715, 0xFFFFFFFF


class _ReplicateSeed(np.random.bit_generator.ISpawnableSeedSequence):
    """``SeedSequence(seed, spawn_key=(rep,))`` whose PCG64 seed (``generate_state(4,
    uint64)``) was computed ahead, with the others' for a batch; any other request goes to
    the real seed sequence."""

    __slots__ = ("seed", "rep", "state")

    def __init__(self, seed: int, rep: int, state: np.ndarray) -> None:
        self.seed, self.rep, self.state = seed, rep, state

    def _real(self) -> np.random.SeedSequence:
        return replicate_seed(self.seed, self.rep)

    def generate_state(self, n_words: int, dtype: Any = np.uint32) -> np.ndarray:
        if n_words == 4 and np.dtype(dtype) == np.uint64:
            return self.state.copy()
        return self._real().generate_state(n_words, dtype)

    def spawn(self, n_children: int) -> list[np.random.SeedSequence]:
        return self._real().spawn(n_children)


def _pcg64_seeds(seed: int, reps: np.ndarray) -> np.ndarray:
    """``SeedSequence(seed, spawn_key=(r,)).generate_state(4, np.uint64)`` for every ``r``
    in ``reps`` (all below 2**32), ``(len(reps), 4)``: numpy's algorithm (entropy words,
    pool of four mixed by hashmix / mix, then the output hash), in uint32 arithmetic over
    the replicates at once."""
    words = []
    n = seed
    while True:  # the seed's little-endian 32-bit words ([0] for 0)
        words.append(n & _M32)
        n >>= 32
        if n == 0:
            break
    words += [0] * (4 - len(words)) if len(words) < 4 else []  # padded: a spawn key follows
    u32 = np.uint32
    entropy = [np.full(reps.size, w, dtype=u32) for w in words] + [reps.astype(u32)]
    hc = _INIT_A

    def hashmix(value: np.ndarray) -> np.ndarray:
        nonlocal hc
        value = value ^ u32(hc)
        hc = (hc * _MULT_A) & _M32
        value = value * u32(hc)
        return value ^ (value >> u32(16))

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = u32(_MIX_L) * x - u32(_MIX_R) * y
        return r ^ (r >> u32(16))

    pool = [hashmix(entropy[i]) for i in range(4)]
    for i_src in range(4):
        for i_dst in range(4):
            if i_src != i_dst:
                pool[i_dst] = mix(pool[i_dst], hashmix(pool[i_src]))
    for i_src in range(4, len(entropy)):
        for i_dst in range(4):
            pool[i_dst] = mix(pool[i_dst], hashmix(entropy[i_src]))
    out = np.empty((reps.size, 8), dtype=u32)
    hb = _INIT_B
    for i in range(8):
        v = pool[i % 4] ^ u32(hb)
        hb = (hb * _MULT_B) & _M32
        v = v * u32(hb)
        out[:, i] = v ^ (v >> u32(16))
    return out.astype("<u4").view("<u8").astype(np.uint64)


#: whether default_rng builds on PCG64 (the seeding replicate_generators reproduces)
_DEFAULT_IS_PCG64 = type(np.random.default_rng(0).bit_generator) is np.random.PCG64


def replicate_generators(seed: int, reps: Sequence[int]) -> list[np.random.Generator]:
    """``np.random.default_rng(replicate_seed(seed, r))`` for every ``r`` in ``reps``: the
    same generators (the same streams, bit for bit; ``tests/test_batch.py``), their PCG64
    seeds hashed for all replicates at once instead of one SeedSequence each (which cost
    more than drawing a province panel's outcome)."""
    arr = np.asarray(list(reps), dtype=np.int64)
    if (seed < 0 or arr.size == 0 or (arr < 0).any() or (arr >= 2**32).any()
            or not _DEFAULT_IS_PCG64):
        return [np.random.default_rng(replicate_seed(seed, int(r))) for r in arr]
    with np.errstate(over="ignore"):
        states = _pcg64_seeds(int(seed), arr)
    return [np.random.Generator(np.random.PCG64(_ReplicateSeed(seed, int(r), st)))
            for r, st in zip(arr, states)]


def estimator_seed(seed: int, rep: int, label: str) -> np.random.SeedSequence:
    """The seed sequence of an estimator's own randomness in replicate ``rep``, keyed by its
    label (crc32, stable across processes and Python versions)."""
    return np.random.SeedSequence(seed, spawn_key=(rep, zlib.crc32(label.encode())))


def needs_rng(estimator: Any) -> bool:
    """Whether ``estimator`` draws random numbers: declared in the catalogue; for an object
    outside it (a placebo wrapper built in code), whether its ``fit`` takes ``rng``."""
    from estimators import catalog

    try:
        # uses_rng(): an inference option that draws (dist="wild") on an estimator that
        # otherwise needs no generator
        return (catalog.capabilities(estimator).needs_rng
                or bool(getattr(estimator, "uses_rng", lambda: False)()))
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


def run_reps(design: Design, seed: int, reps: Iterable[int], *, batch: bool = True
             ) -> pd.DataFrame:
    """Draw and fit the given replicates; one tidy row per fit and term.

    With ``batch`` (the default), a design whose draw has a batched counterpart
    (:func:`batch_draw_of`) and whose estimators include some with a batched fit
    (:func:`estimators.batch.batch_fitter`) runs :data:`BATCH_SIZE` replicates at a time:
    one batched draw, one batched fit per such estimator, the per-replicate fit for the
    others (and for any replicate a batched fit leaves to it), rows built column by
    column. The rows, their order and dtypes are those of the per-replicate path
    (``batch=False``); the numbers agree with it to rounding (1e-10, see
    ``tests/test_batch.py``) and do not depend on the batch size, the chunking or the
    workers. ``seconds`` of a batched fit is the batch's fit time divided among its
    replicates (the per-replicate path times each fit; neither counts the draw).
    """
    reps = list(reps)
    draw_batch = batch_draw_of(design.draw) if batch else None
    if draw_batch is not None:
        from estimators.batch import batch_fitter

        fitters = {key: batch_fitter(e) for key, e in design.estimators.items()}
        if any(f is not None for f in fitters.values()):
            blocks = [_run_batch(design, seed, reps[i:i + BATCH_SIZE], draw_batch, fitters)
                      for i in range(0, len(reps), BATCH_SIZE)]
            return _frame_of_blocks(blocks, offsets=range(0, len(reps), BATCH_SIZE))
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


# --- the batched path ------------------------------------------------------------------------

#: replicates drawn and fitted together on the batched path. It bounds memory (a batch of
#: the 30x19 event study holds ~10 arrays of B x 570 x 10 floats); the numbers do not
#: depend on it
BATCH_SIZE = 64


def batch_draw_of(draw: Callable[..., Any]) -> Callable[[Sequence[np.random.Generator]], Any] | None:
    """The batched counterpart of a design's draw: ``rngs -> PanelBatch`` drawing replicate
    ``b`` exactly as ``draw(rngs[b])``, or None.

    A draw is a ``functools.partial`` of a simulator entry point; an entry point that can
    draw a batch carries it as its ``draw_batch`` attribute, taking the same arguments
    with a list of generators in place of the generator (``experiments/build.py``).
    """
    func = getattr(draw, "func", None)
    batched = getattr(func, "draw_batch", None)
    if batched is None or not isinstance(draw, functools.partial):
        return None
    return functools.partial(batched, *draw.args, **draw.keywords)


def _run_batch(design: Design, seed: int, reps: list[int], draw_batch: Callable[..., Any],
               fitters: Mapping[tuple[str, str], Any]) -> dict[str, np.ndarray]:
    """Replicates ``reps`` on the batched path: the block of rows of :func:`run_reps`, with
    sort keys ``_pos`` (replicate position), ``_est`` (estimator) and ``_row`` (row of the
    fit)."""
    batch = draw_batch(replicate_generators(seed, reps))
    n_b = len(reps)
    rep_arr = np.asarray(reps, dtype=np.int64)
    blocks: list[dict[str, np.ndarray]] = []
    single: dict[int, list[tuple[int, tuple[str, str]]]] = {}
    for ei, (key, estimator) in enumerate(design.estimators.items()):
        outcome, label = key
        fitter = fitters.get(key)
        res = None
        t0 = time.perf_counter()
        if fitter is not None:
            res = fitter(batch)
        wall = time.perf_counter() - t0
        handled = np.zeros(n_b, dtype=bool) if res is None else res.handled
        for p in np.flatnonzero(~handled):
            single.setdefault(int(p), []).append((ei, key))
        if res is None or not handled.any():
            continue
        blocks.append(_batch_rows(res, handled, rep_arr, ei, design.cell, outcome, label,
                                  wall / int(handled.sum())))
    if single:
        needs = {key: needs_rng(e) for key, e in design.estimators.items()}
        rows: list[dict[str, Any]] = []
        pos: list[int] = []
        est: list[int] = []
        sub: list[int] = []
        for p in sorted(single):
            panel = batch.frame(p)
            rep = reps[p]
            for ei, (outcome, label) in single[p]:
                estimator = design.estimators[(outcome, label)]
                rng = (np.random.default_rng(estimator_seed(seed, rep, label))
                       if needs[(outcome, label)] else None)
                got = fit_one(estimator, panel, rng, design.cell, rep, outcome, label)
                rows.extend(got)
                pos.extend([p] * len(got))
                est.extend([ei] * len(got))
                sub.extend(range(len(got)))
        block = {c: np.array([r[c] for r in rows],
                             dtype=object if c in _TEXT_COLUMNS else None)
                 for c in RESULT_COLUMNS}
        block.update(_pos=np.asarray(pos), _est=np.asarray(est), _row=np.asarray(sub))
        blocks.append(block)
    return _concat_blocks(blocks)


#: text columns of a results table
_TEXT_COLUMNS = ("cell", "outcome", "estimator", "term", "role", "error")


def _batch_rows(res: Any, handled: np.ndarray, reps: np.ndarray, ei: int, cell: str,
                outcome: str, label: str, seconds: float) -> dict[str, np.ndarray]:
    """The rows :func:`fit_rows` makes for each handled replicate, column by column:
    the headline, then a detail row per term with a truth (other than the headline)."""
    pos = np.flatnonzero(handled)
    m = pos.size
    truth = res.truth
    details = ([j for j, name in enumerate(res.term_names)
                if name in truth and name != res.term] if truth else [])
    per = 1 + len(details)
    # row r of replicate i sits at i * per + r
    out: dict[str, np.ndarray] = {
        "_pos": np.repeat(pos, per), "_est": np.full(m * per, ei),
        "_row": np.tile(np.arange(per), m),
    }
    terms = np.array([res.term, *(res.term_names[j] for j in details)], dtype=object)
    out["cell"] = np.full(m * per, cell, dtype=object)
    out["rep"] = np.repeat(reps[pos], per)
    out["outcome"] = np.full(m * per, outcome, dtype=object)
    out["estimator"] = np.full(m * per, label, dtype=object)
    out["term"] = np.tile(terms, m)
    out["role"] = np.tile(np.array(["headline", *["detail"] * len(details)], dtype=object), m)
    for c in ("estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high"):
        grid = np.empty((m, per))
        grid[:, 0] = res.headline[c][pos]
        if details:
            grid[:, 1:] = res.terms[c][pos][:, details]
        out[c] = grid.ravel()
    out["alpha"] = np.full(m * per, float(res.alpha))
    tgrid = np.full((m, per), np.nan)
    if truth:
        tgrid[:, 0] = truth[res.term][pos] if res.term in truth else np.nan
        for r, j in enumerate(details, start=1):
            tgrid[:, r] = truth[res.term_names[j]][pos]
    out["truth"] = tgrid.ravel()
    out["n_obs"] = np.full(m * per, res.n_obs, dtype=np.int64)
    out["n_clusters"] = np.full(m * per, res.n_clusters, dtype=np.int64)
    pre = np.full((m, per), np.nan)
    if "pretrend_p" in res.diagnostics:
        pre[:, 0] = res.diagnostics["pretrend_p"][pos]
    out["pretrend_p"] = pre.ravel()
    sec = np.zeros((m, per))
    sec[:, 0] = seconds
    out["seconds"] = sec.ravel()
    out["error"] = np.full(m * per, "", dtype=object)
    return out


def _concat_blocks(blocks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not blocks:
        return {c: np.empty(0) for c in (*RESULT_COLUMNS, "_pos", "_est", "_row")}
    cols = {c: np.concatenate([b[c] for b in blocks]) for c in blocks[0]}
    order = np.lexsort((cols["_row"], cols["_est"], cols["_pos"]))
    return {c: v[order] for c, v in cols.items()}


def _frame_of_blocks(blocks: list[dict[str, np.ndarray]], offsets: Iterable[int]) -> pd.DataFrame:
    """One results table from the batches' blocks, in the per-replicate path's row order
    and dtypes."""
    blocks = [dict(b, _pos=b["_pos"] + off) for b, off in zip(blocks, offsets)]
    cols = _concat_blocks(blocks)
    frame = {}
    for c in RESULT_COLUMNS:
        v = cols[c]
        if c in _TEXT_COLUMNS:
            v = v.astype(object)
        elif c in ("rep", "n_obs", "n_clusters"):
            v = v.astype(np.int64)
        else:
            v = v.astype(float)
        frame[c] = v
    # the per-replicate path builds its table from records: the same inference of text
    # columns' dtype (object, or pandas' string dtype)
    out = pd.DataFrame(frame, columns=list(RESULT_COLUMNS))
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
    """Write a chunk atomically (:func:`experiments.files.write_parquet`): a killed run
    never leaves a half-written chunk under the final name."""
    write_parquet(frame, path)


#: the ``cell`` label stored chunks carry: a chunk's numbers depend only on its key, and
#: the same chunk serves every run that asks for that cell (a grid, a sweep job, a single
#: run), so the label of the run that computed it must not travel with it
STORED_CELL = ""


@contextlib.contextmanager
def chunk_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on chunk ``path`` (``.<name>.lock`` beside it) while inside.

    Two runs on one store (two terminals, two sweep jobs) compute a chunk once: the
    second waits here, then finds the chunk written. ``flock`` locks belong to the open
    file, so the kernel releases the lock of a process that dies, however it dies: there
    are no stale locks to clean. The lock files stay (removing one while another process
    waits on it would let a third process lock a new file of the same name).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): runs do not share chunks
        yield
        return
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """One BLAS/OpenMP thread while a chunk is computed, in every backend.

    Workers get one thread from joblib and dask (``OPENBLAS_NUM_THREADS=1`` and the like,
    or ``cpu_count // n_jobs`` with ``backend.n_jobs`` set) while the main process of a
    ``sequential`` run has one per core; a threaded BLAS may split a product differently
    and change the last bit of a result. With one thread everywhere a chunk's numbers do
    not depend on where it ran. Without threadpoolctl the limit is skipped.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl missing: best effort
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


# --- workers stop when the run stops --------------------------------------------------------

#: ``(main process id, whether it is this process's parent)`` once a watchdog runs here
_WATCHED: tuple[int, bool] | None = None
_WATCH_LOCK = threading.Lock()


def _main_alive(pid: int, direct: bool) -> bool:
    """Whether the run's main process ``pid`` is alive.

    A direct child knows exactly: the kernel re-parents it the moment its parent dies.
    Otherwise ask whether ``pid`` exists (a dead, not yet reaped process still does).
    """
    if direct:
        return os.getppid() == pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, owned by someone else
        return True
    return True


def watch_main(pid: int | None, interval: float = 0.2) -> None:
    """In a worker process: exit as soon as the run's main process ``pid`` is gone.

    A loky or dask worker outlives a main process killed by SIGKILL (or an OOM killer) and
    goes on computing and writing chunks for nobody; a daemon thread checks the main
    process every ``interval`` seconds and ends the worker with ``os._exit`` (a chunk in
    the middle of being written is lost: :func:`write_atomic` leaves no partial file).
    Started once per worker process; nothing to do for ``pid=None`` (sequential runs, a
    remote dask cluster) or in the main process itself.
    """
    global _WATCHED
    if pid is None or pid == os.getpid():
        return
    with _WATCH_LOCK:
        if _WATCHED is not None and _WATCHED[0] == pid:
            return
        direct = os.getppid() == pid
        _WATCHED = (pid, direct)

    def watch() -> None:
        while _main_alive(pid, direct):
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="didlab-watch-main", daemon=True).start()


def _exit_if_orphaned() -> None:
    """Before writing a chunk: leave at once if the run's main process has died since the
    watchdog last looked (so no chunk is written after the run ended)."""
    if _WATCHED is not None and not _main_alive(*_WATCHED):
        os._exit(1)


def _chunk_task(design: Design, seed: int, lo: int, hi: int, path: str,
                main_pid: int | None = None) -> str:
    """Compute and store replicates ``lo..hi-1`` of ``design`` unless the chunk exists.

    Returns ``"computed"`` or ``"reused"`` (another run wrote it while this one waited
    for the chunk's lock).
    """
    watch_main(main_pid)
    target = Path(path)
    with chunk_lock(target):
        if target.exists():
            return "reused"
        with _one_blas_thread():
            frame = run_reps(design, seed, range(lo, hi))
        frame["cell"] = STORED_CELL
        _exit_if_orphaned()
        write_atomic(frame, target)
    return "computed"


def design_key(payload: Mapping[str, Any]) -> str:
    """Stable hash of everything that fixes a cell's numbers (config, seed, code)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: the packages whose code produces a run's numbers
CODE_PACKAGES = ("simulate", "estimators", "experiments")


def hash_sources(folders: Iterable[str | os.PathLike]) -> str:
    """SHA-256 of every ``.py`` file under ``folders``: relative paths and contents, in
    sorted order, so the hash changes with any edit and with nothing else."""
    digest = hashlib.sha256()
    for folder in folders:
        root = Path(folder)
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{root.name}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()[:16]


@functools.cache
def code_hash() -> str:
    """Hash of the installed source of :data:`CODE_PACKAGES` (computed once per process).

    Part of the store key: the package version does not change between commits, so
    without it a chunk computed by older code would be reused after a change.
    """
    folders: list[str] = []
    for name in CODE_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            folders.extend(spec.submodule_search_locations)
    return hash_sources(folders)


@dataclass(frozen=True)
class Backend:
    kind: str = "loky"
    n_jobs: int = -1
    address: str | None = None
    n_workers: int = 2
    threads_per_worker: int = 1

    def validate(self) -> None:
        """Refuse settings joblib or dask would reject mid-run with a traceback."""
        check_choice("backend.kind", self.kind, BACKENDS)
        if not isinstance(self.n_jobs, int) or self.n_jobs == 0:
            raise OptionError(f"backend.n_jobs={self.n_jobs!r} must be a positive number of "
                              "workers, or negative to count back from all cores (-1 = all)")
        for name in ("n_workers", "threads_per_worker"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise OptionError(f"backend.{name}={value!r} must be an integer >= 1")
        if self.address is not None and self.kind != "dask":
            raise OptionError(f"backend.address={self.address!r} is read only with "
                              f"backend=dask (backend.kind is {self.kind!r})")

    @classmethod
    def of(cls, node: Any) -> "Backend":
        """The backend a config's ``backend`` node describes, validated."""
        from omegaconf import OmegaConf

        values = OmegaConf.to_container(node, resolve=True) if not isinstance(node, dict) else node
        backend = cls(**values)
        backend.validate()
        return backend


#: seconds to wait for a Dask scheduler before saying it does not answer
DASK_CONNECT_TIMEOUT = 10


def check_scheduler(address: str, timeout: float = 5.0) -> None:
    """Refuse a Dask scheduler address nothing listens on (a TCP connection attempt), so
    that the command line says so before a run folder exists."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or not parts.port:
        raise BackendError(f"backend.address={address!r} must look like tcp://HOST:PORT "
                           "(the address `dask scheduler` prints)")
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=timeout).close()
    except OSError as exc:
        raise BackendError(f"backend.address={address!r}: no Dask scheduler answers "
                           f"({exc.strerror or type(exc).__name__}); start one with "
                           "`dask scheduler` or drop backend.address to use a local "
                           "cluster") from None


@contextlib.contextmanager
def dask_client(backend: Backend) -> Iterator[Any]:
    """A Dask client for the run: connected to ``backend.address``, or to a LocalCluster
    started for the run (and closed after it) when no address is given.

    An unreachable scheduler is one line naming the address, after
    :data:`DASK_CONNECT_TIMEOUT` seconds, not a 30-second wait and a traceback.
    """
    from dask.distributed import Client, LocalCluster

    cluster = None
    if backend.address:
        try:
            client = Client(backend.address, timeout=DASK_CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise BackendError(f"backend.address={backend.address!r}: no Dask scheduler "
                               f"answered within {DASK_CONNECT_TIMEOUT} s "
                               f"({type(exc).__name__}); start one with `dask scheduler` "
                               "or drop backend.address to use a local cluster") from None
    else:
        # warnings of workers whose tasks are cancelled (Ctrl-C, SIGTERM) are noise;
        # errors still show
        cluster = LocalCluster(n_workers=backend.n_workers,
                               threads_per_worker=backend.threads_per_worker,
                               processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _execute(tasks: Sequence[tuple], backend: Backend, progress: bool) -> list[str]:
    """Run chunk tasks on the chosen backend with a progress bar on terminals.

    Returns each task's outcome (``"computed"`` or ``"reused"``), in completion order.
    """
    from joblib import Parallel, delayed, parallel_config
    from tqdm.auto import tqdm

    backend.validate()
    if not tasks:
        return []
    done: list[str] = []
    # worker processes on this machine watch this process and stop when it dies; a
    # sequential run has none, and a remote dask cluster's workers are not ours to stop
    local = backend.kind == "loky" or (backend.kind == "dask" and not backend.address)
    main_pid = os.getpid() if local else None
    bar = tqdm(total=len(tasks), unit="chunk", disable=not progress, leave=False)
    try:
        if backend.kind == "sequential":
            for t in tasks:
                done.append(_chunk_task(*t))
                bar.update()
            return done
        calls = (delayed(_chunk_task)(*t, main_pid) for t in tasks)
        if backend.kind == "loky":
            # the initializer starts the watchdog when a worker starts, so that a worker
            # still waiting for its first task does not outlive a killed run either
            par = Parallel(n_jobs=backend.n_jobs, backend="loky", return_as="generator_unordered",
                           initializer=watch_main, initargs=(main_pid,))
            for status in par(calls):
                done.append(status)
                bar.update()
            return done
        with dask_client(backend), parallel_config(backend="dask"):
            for status in Parallel(return_as="generator_unordered")(calls):
                done.append(status)
                bar.update()
        return done
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
        finishes only the missing chunks, and a chunk another run is computing is waited
        for (:func:`chunk_lock`), not computed twice.

    Returns
    -------
    pandas.DataFrame
        All rows, sorted by cell, replicate, outcome, estimator and term order, each row
        labelled with its design's ``cell``. ``attrs["chunks"]`` counts the chunks this
        call computed and those it reused from the store:
        ``{"computed": int, "reused": int}``.
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
    done = _execute(tasks, backend, progress)
    frames = []
    for design, cell_paths in zip(designs, paths):
        for p in cell_paths:
            frame = pd.read_parquet(p)
            # the store keeps no run's label (STORED_CELL): this run's cell name goes on
            frame["cell"] = design.cell
            frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    computed = done.count("computed")
    out.attrs["chunks"] = {"computed": computed,
                           "reused": sum(map(len, paths)) - computed}
    return out


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
    """``p +- z*sqrt(p(1-p)/n)``, inside [0, 1]: the band a rate over ``n`` independent
    draws should fall in (z = 3 by default, so a correct procedure leaves it with
    probability ~0.3%; the reports use z = 2.576, a 99% band)."""
    half = z * np.sqrt(p * (1 - p) / max(n, 1))
    return max(0.0, p - half), min(1.0, p + half)
