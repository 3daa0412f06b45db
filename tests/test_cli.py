"""The didlab command: help, a real run, one-line errors with exit code 2, sweeps."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIDLAB = [sys.executable, "-m", "experiments.cli"]


def didlab(*args, cwd):
    return subprocess.run([*DIDLAB, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_help_lists_groups(tmp_path):
    r = didlab("--help", cwd=ROOT)
    assert r.returncode == 0
    for group in ("assignment", "timing", "effect", "estimator", "experiment", "backend", "data"):
        assert f"{group}:" in r.stdout
    assert "market_open" in r.stdout


def test_default_run_prints_table_and_writes_outputs(tmp_path):
    r = didlab(f"hydra.run.dir={tmp_path}/run", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "twfe_controls" in r.stdout and "pretrend_p" in r.stdout
    for name in ("report.md", "results.parquet", ".hydra/config.yaml", "figures/event_study.png"):
        assert (tmp_path / "run" / name).exists(), name


@pytest.mark.parametrize("args,message", [
    (["timing=notice_2099"], "timing"),
    (["data.n_unit=3"], "data.n_unit"),
    (["effect.att=abc"], "effect.att"),
    (["assignment.kind=best"], "assignment.kind='best' is not accepted"),
    (["assignment=random", "assignment.n_pilots=40"], "assignment.n_pilots=40"),
    (["timing.year=2030"], "leave no pre- or post-treatment period"),
    (["-m", "timing=notice_2011,notice_2099"], "notice_2099"),
    (["experiment=sensitivity", "experiment.sensitivity.rm_method=flci"],
     "experiment.sensitivity.rm_method='flci' is not accepted"),
    (["experiment=sensitivity", "experiment.sensitivity.mbar_grid=[-1]"], "mbar_grid"),
    # typos name the closest real key instead of advising to append the typo
    (["experiment.nreps=5"], "experiment.nreps is not an option; did you mean experiment.n_reps?"),
    (["+seeed=3"], "seeed is not an option; did you mean seed?"),
    (["+experiment.nreps=5"], "experiment.nreps is not an option; did you mean experiment.n_reps?"),
])
def test_bad_values_one_line_exit_2(tmp_path, args, message):
    r = didlab(*args, f"hydra.run.dir={tmp_path}/run", cwd=ROOT)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("didlab: error:"), r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "report.md").exists()


def test_sweep_collects_combined_table(tmp_path):
    r = didlab("-m", "experiment=robustness", "experiment.n_reps=4", "experiment.chunk_size=2",
               "backend=sequential", f"experiment.store={tmp_path}/store",
               "timing=notice_2011,market_open", "assignment=actual",
               f"hydra.sweep.dir={tmp_path}/sweep", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    sweep = tmp_path / "sweep"
    assert (sweep / "diagnosands_all.csv").exists()
    assert (sweep / "figures" / "diagnosands_by_timing.png").exists()
    import pandas as pd

    table = pd.read_csv(sweep / "diagnosands_all.csv")
    assert set(table["timing"]) == {"notice_2011", "market_open"}
    # collect by hand gives the same table
    r2 = didlab("collect", str(sweep), cwd=ROOT)
    assert r2.returncode == 0
    pd.testing.assert_frame_equal(pd.read_csv(sweep / "diagnosands_all.csv"), table)
    r3 = didlab("collect", str(tmp_path / "nowhere"), cwd=ROOT)
    assert r3.returncode == 2 and "does not exist" in r3.stderr


def test_readme_sweep_after_a_grid_run_on_the_same_store(tmp_path):
    # `make run` (a grid in one job) and then the README's sweep of the same cells: the
    # stored chunks carry no cell label of the grid run, so every job reports its cell,
    # with the grid's numbers
    import pandas as pd

    from experiments.run import compose, run

    common = ["experiment=robustness", "experiment.n_reps=4", "experiment.chunk_size=2",
              "backend=sequential", f"experiment.store={tmp_path}/store", "estimator=[twfe]",
              "experiment.figures=false"]
    run(compose([*common, "experiment.grid.timing=[notice_2011,market_open]",
                 "experiment.grid.assignment=[actual,random]"]), output_dir=tmp_path / "grid")
    r = didlab("-m", *common, "timing=notice_2011,market_open", "assignment=actual,random",
               f"hydra.sweep.dir={tmp_path}/sweep", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout.count("Chunks: 0 computed, 2 of 2 reused") == 4
    key = ["timing", "assignment", "estimator", "term"]
    swept = pd.read_csv(tmp_path / "sweep" / "diagnosands_all.csv").drop(columns=["job", "cell"])
    grid = pd.read_csv(tmp_path / "grid" / "diagnosands.csv").drop(columns="cell")
    assert len(swept) == len(grid) == 4
    pd.testing.assert_frame_equal(swept.sort_values(key).reset_index(drop=True)[grid.columns],
                                  grid.sort_values(key).reset_index(drop=True))


def test_runs_started_together_get_their_own_folders(tmp_path):
    # the default folder is outputs/DATE/TIME-PID: two runs in the same second differ
    procs = [subprocess.Popen([*DIDLAB], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    folders = sorted(tmp_path.glob("outputs/*/*"))
    assert len(folders) == 2
    assert {f.name.rsplit("-", 1)[1] for f in folders} == {str(p.pid) for p in procs}
    for f in folders:
        assert (f / "report.md").exists() and (f / ".hydra" / "config.yaml").exists()


def _tagged(tag: str) -> list[int]:
    """Processes whose environment holds ``tag`` (the run and every process it started)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if tag.encode() in (d / "environ").read_bytes():
                    found.append(int(d.name))
            except OSError:  # gone meanwhile, or not ours
                pass
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGKILL"])
def test_stopped_run_leaves_no_worker_and_writes_no_chunk(tmp_path, signame):
    import os
    import signal
    import time
    import uuid

    tag = uuid.uuid4().hex
    store = tmp_path / "store"
    proc = subprocess.Popen(
        [*DIDLAB, "experiment=robustness", "estimator=[twfe,mediation]",
         "experiment.n_reps=2000", "experiment.chunk_size=10", "backend=loky",
         "backend.n_jobs=2", f"experiment.store={store}", f"hydra.run.dir={tmp_path}/run"],
        cwd=ROOT, env={**os.environ, "DIDLAB_TEST_TAG": tag},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def chunks() -> set[str]:
        return {str(c) for c in store.rglob("reps-*.parquet")}

    deadline = time.time() + 180
    while len(chunks()) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert len(chunks()) >= 2 and proc.poll() is None, "the run should be computing chunks"
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=60)
    time.sleep(0.5)  # a chunk write already under way when the signal came may finish
    written = chunks()
    deadline = time.time() + 10
    while _tagged(tag) and time.time() < deadline:
        time.sleep(0.1)
    assert _tagged(tag) == [], "worker processes outlived the run"
    time.sleep(2)
    assert chunks() == written, "chunks were written after the run stopped"
    assert len(written) < 2000 // 10
    if signame == "SIGTERM":
        assert proc.returncode == 143
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("didlab: terminated"), err
        assert (tmp_path / "run" / "FAILED").exists()


def test_collect_names_the_jobs_that_did_not_finish(tmp_path, capsys):
    """A sweep with one failed job: the table has the other, the report and stderr say
    which job failed and why (it was silently combined as 1 of 1 before)."""
    import pandas as pd

    from experiments.collect import collect

    ok, bad = tmp_path / "timing=notice_2011", tmp_path / "timing=market_open"
    for job in (ok, bad):
        (job / ".hydra").mkdir(parents=True)
    pd.DataFrame({"timing": ["notice_2011"], "outcome": ["lnce"], "estimator": ["twfe"],
                  "term": ["ATT"], "role": ["headline"], "n_draws": [4], "bias": [0.01],
                  "coverage": [0.95]}).to_csv(ok / "diagnosands.csv", index=False)
    (bad / "FAILED").write_text("EstimationError: no treated observation\n")
    out = collect(tmp_path)
    assert out["missing"] == [("timing=market_open", "EstimationError: no treated observation")]
    report = (tmp_path / "report.md").read_text()
    assert "1 of 2 jobs" in report and "timing=market_open" in report
    assert "| job |" in report
    assert "job timing=market_open did not finish" in capsys.readouterr().err
