"""The chunk store: keyed by what fixes the numbers (config, seed, code), never by a run's
cell label; reused across grids, single runs and concurrent runs; one computation per
chunk."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import experiments.montecarlo_run as montecarlo_run
from experiments.montecarlo import (STORED_CELL, chunk_lock, code_hash, design_key,
                                    hash_sources)
from experiments.run import compose, run

ROOT = Path(__file__).resolve().parents[1]


#: the robustness grid's axes removed: one cell (a dict override would merge into the grid)
NO_GRID = ["~experiment.grid.timing", "~experiment.grid.assignment"]


def common(store: Path) -> list[str]:
    return ["experiment=robustness", "experiment.n_reps=4", "experiment.chunk_size=2",
            "backend=sequential", f"experiment.store={store}", "estimator=[twfe]",
            "experiment.figures=false", "experiment.progress=false"]


def numbers(diag: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Diagnosands without the run's own labels, one row per cell, estimator and term."""
    keep = [c for c in diag.columns if c not in ("cell", "job")]
    return (diag[keep].sort_values([*axes, "estimator", "term"])
            .reset_index(drop=True))


def test_stored_chunks_serve_every_run_of_the_same_cells(tmp_path):
    store = tmp_path / "store"
    grid = run(compose([*common(store), "experiment.grid.timing=[notice_2011,market_open]",
                        "experiment.grid.assignment=[actual,random]"]),
               output_dir=tmp_path / "grid")
    assert grid["chunks"] == {"computed": 8, "reused": 0}
    # no chunk carries the label of the run that computed it
    for chunk in store.rglob("reps-*.parquet"):
        assert set(pd.read_parquet(chunk)["cell"]) == {STORED_CELL}
    full = grid["diagnosands_table"]
    assert set(zip(full["timing"], full["assignment"])) == {
        ("notice_2011", "actual"), ("notice_2011", "random"), ("market_open", "actual"),
        ("market_open", "random")}

    # a grid over one axis names its cells "timing=..." where the chunks were computed
    # under "timing=...,assignment=...": every cell is still reported, with the same numbers
    sub = run(compose([*common(store), "assignment=random", "~experiment.grid.assignment",
                       "experiment.grid.timing=[notice_2011,market_open]"]),
              output_dir=tmp_path / "sub")
    assert sub["chunks"] == {"computed": 0, "reused": 4}
    part = sub["diagnosands_table"]
    assert set(part["cell"]) == {"timing=notice_2011", "timing=market_open"}
    expected = full[full["assignment"] == "random"]
    pd.testing.assert_frame_equal(numbers(part, ["timing"]), numbers(expected, ["timing"]))

    # a single-cell run (no grid) is labelled "default" and reuses the grid's chunks
    one = run(compose([*common(store), "timing=market_open", "assignment=actual", *NO_GRID]),
              output_dir=tmp_path / "one")
    assert one["chunks"] == {"computed": 0, "reused": 2}
    single = one["diagnosands_table"]
    assert set(single["cell"]) == {"default"}
    expected = full[(full["timing"] == "market_open") & (full["assignment"] == "actual")]
    pd.testing.assert_frame_equal(numbers(single, ["timing"]), numbers(expected, ["timing"]))
    report = (tmp_path / "one" / "report.md").read_text()
    assert "Chunks: 0 computed, 2 of 2 reused" in report


def test_hash_sources_follows_every_python_file(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    before = hash_sources([pkg])
    assert hash_sources([pkg]) == before
    (pkg / "notes.txt").write_text("not code")
    assert hash_sources([pkg]) == before
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    edited = hash_sources([pkg])
    assert edited != before
    (pkg / "c.py").write_text("")
    assert hash_sources([pkg]) not in (before, edited)


def test_code_hash_is_the_installed_packages_and_enters_the_store_key(monkeypatch):
    folders = [ROOT / name for name in ("simulate", "estimators", "experiments")]
    # uncached: code_hash() itself is computed once per process, before any later edit
    assert code_hash.__wrapped__() == hash_sources(folders)
    cfg = compose(common(Path("store")))
    key = design_key(montecarlo_run.hash_payload(cfg))
    assert montecarlo_run.hash_payload(cfg)["code"] == code_hash()
    # a code change (simulated: another hash of the sources) moves every chunk's key
    monkeypatch.setattr(montecarlo_run, "code_hash", lambda: "0123456789abcdef")
    assert design_key(montecarlo_run.hash_payload(cfg)) != key


def test_a_code_change_recomputes_and_the_report_says_so(tmp_path, monkeypatch):
    store = tmp_path / "store"
    cfg = compose([*common(store), *NO_GRID])
    first = run(cfg, output_dir=tmp_path / "first")
    again = run(cfg, output_dir=tmp_path / "again")
    assert first["chunks"] == {"computed": 2, "reused": 0}
    assert again["chunks"] == {"computed": 0, "reused": 2}
    monkeypatch.setattr(montecarlo_run, "code_hash", lambda: "0123456789abcdef")
    changed = run(cfg, output_dir=tmp_path / "changed")
    assert changed["chunks"] == {"computed": 2, "reused": 0}
    assert "Chunks: 2 computed and stored" in (tmp_path / "changed" / "report.md").read_text()


def test_chunk_lock_is_exclusive_and_released_by_a_dead_holder(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    path = tmp_path / "reps-0000000-0000002.parquet"
    lock = tmp_path / f".{path.name}.lock"
    with chunk_lock(path):
        fd = os.open(lock, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    # a process that dies holding the lock (SIGKILL: no cleanup runs) leaves none behind
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from experiments.montecarlo import chunk_lock
            with chunk_lock(Path({str(path)!r})):
                print("locked", flush=True)
                time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise if the lock were stale
    os.close(fd)


CONCURRENT_SCRIPT = textwrap.dedent("""
    import functools, json, os, sys, time
    from experiments.build import _draw_province
    from experiments.montecarlo import Backend, Design, run_designs
    import experiments.montecarlo as mc
    from estimators.twfe import TWFE
    from simulate.design import Assignment, Effect, Timing
    from simulate.province import ProvinceDGP
    store, log, out = sys.argv[1:4]
    # start together: both runs plan their chunks before either has written one
    open(os.path.join(store, f"ready-{os.getpid()}"), "w").close()
    deadline = time.time() + 60
    while len([n for n in os.listdir(store) if n.startswith("ready-")]) < 2 and time.time() < deadline:
        time.sleep(0.01)
    original = mc.run_reps
    def run_reps(design, seed, reps):
        # one line per chunk computation (O_APPEND: lines of two processes do not mix)
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {reps.start}\\n")
        time.sleep(0.3)
        return original(design, seed, reps)
    mc.run_reps = run_reps
    draw = functools.partial(_draw_province, ProvinceDGP(), Assignment(kind="random"), Timing(), Effect())
    d = Design(draw, {("lnce", "twfe"): TWFE("lnce")}, cell=f"run-{os.getpid()}")
    res = run_designs([d], 24, 9, store=store, keys=["k"], chunk_size=3,
                      backend=Backend(kind="sequential"))
    res.drop(columns=["seconds", "cell"]).to_parquet(out)
    with open(out + ".json", "w") as f:
        json.dump(res.attrs["chunks"], f)
""")


def test_two_runs_on_one_store_compute_each_chunk_once(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(CONCURRENT_SCRIPT)
    store, log = tmp_path / "store", tmp_path / "computed.log"
    store.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, str(script), str(store), str(log),
                               str(tmp_path / f"out{i}.parquet")], env=env)
             for i in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    lines = log.read_text().split()
    starts = [int(x) for x in lines[1::2]]
    assert sorted(starts) == list(range(0, 24, 3)), "every chunk computed exactly once"
    counts = [json.loads((tmp_path / f"out{i}.parquet.json").read_text()) for i in range(2)]
    assert sum(c["computed"] for c in counts) == 8
    assert all(c["computed"] + c["reused"] == 8 for c in counts)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out0.parquet"),
                                  pd.read_parquet(tmp_path / "out1.parquet"))
