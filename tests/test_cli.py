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
