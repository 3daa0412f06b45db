"""A corpus of hostile inputs: every case ends in one line on stderr and exit status 2
(before any run folder exists), never a traceback, a buried error or a silent wrong number.

The config cases run through the command's pre-check in process (what ``didlab ARGS``
does before Hydra starts); the malformed-file cases of ``tests/test_realdata.py`` belong to
the same corpus and are counted here. A few cases need the real command (read-only disk,
an unreachable scheduler, every estimator failing) and run it as a subprocess.
"""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from experiments import cli
from experiments.cli import _precheck
from tests.test_realdata import CASES as FILE_CASES

ROOT = Path(__file__).resolve().parents[1]

#: (arguments, a fragment the one line must contain)
CONFIG_CASES = [
    # backend and run settings
    (["backend.n_jobs=0"], "backend.n_jobs=0 must be a positive number"),
    (["backend.n_jobs=abc"], "backend.n_jobs=abc: Value 'abc'"),
    (["backend.kind=ray"], "backend.kind='ray' is not accepted"),
    (["backend=dask", "backend.n_workers=0"], "backend.n_workers=0 must be an integer >= 1"),
    (["backend.address=tcp://1.2.3.4:8786"], "is read only with backend=dask"),
    (["backend=dask", "backend.address=nonsense"], "must look like tcp://HOST:PORT"),
    (["seed=-1"], "seed=-1 must be an integer >= 0"),
    (["seed=abc"], "seed=abc: Value 'abc'"),
    (["seed=1.5"], "seed=1.5"),
    (["experiment=robustness", "experiment.n_reps=0"], "experiment.n_reps=0 must be >= 1"),
    (["experiment.chunk_size=-5"], "experiment.chunk_size=-5 must be >= 1"),
    (["experiment.store="], "experiment.store is empty"),
    # groups and keys
    (["experiment=nosuch"], "experiment=nosuch is not an option of experiment"),
    (["data=nosuch"], "data=nosuch is not an option of data"),
    (["estimator=[nosuch]"], "estimator=nosuch is not an option of estimator"),
    (["estimator=[twf]"], "did you mean twfe?"),
    (["timing=notice_2099"], "timing=notice_2099 is not an option of timing"),
    (["experiment.nreps=5"], "did you mean experiment.n_reps?"),
    (["+seeed=3"], "did you mean seed?"),
    (["+experiment.nreps=5"], "did you mean experiment.n_reps?"),
    (["+seed=3"], "An item is already at 'seed'"),
    (["data=city", "data.n_unit=0"], "data.n_unit is not an option"),
    (["experiment=robustness", "experiment.grid={nosuch:[a]}"],
     "experiment.grid key 'nosuch' is not accepted; accepted: an axis group"),
    (["experiment=robustness", "experiment.grid={effect:[nosuch]}"],
     "effect=nosuch is not an option of effect"),
    (["experiment=robustness", "experiment.grid={effect:[]}"],
     "experiment.grid.effect must be a non-empty list"),
    # simulator and design
    (["data.first_year=2018", "data.last_year=2000"], "data.last_year=2000 must exceed"),
    (["data.sigma=-1"], "data.sigma=-1.0 must be >= 0"),
    (["data.rho=1.5"], "data.rho=1.5 must lie in (-1, 1)"),
    (["data.redraw=covariates"], "data.redraw='covariates' is not one of ['all', 'outcome']"),
    (["data.redraw=outcome", "data.design_seed=-1"], "data.design_seed=-1 must be an integer"),
    (["experiment=mediation", "data.redraw=outcome"],
     "data.redraw='outcome' holds the covariates fixed, but data.channels"),
    (["effect.att=abc"], "effect.att"),
    (["effect.att=inf"], "effect.att=inf must be a finite number"),
    (["effect.att=nan"], "effect.att=nan must be a finite number"),
    (["effect=ramp", "effect.ramp_years=0"], "effect.ramp_years=0 must be >= 1"),
    (["timing.anticipation=-1"], "timing.anticipation=-1 must be >= 0"),
    (["timing.year=2030"], "leave no pre- or post-treatment period"),
    (["assignment.kind=best"], "assignment.kind='best' is not accepted"),
    (["assignment=random", "assignment.n_pilots=40"], "assignment.n_pilots=40"),
    (["assignment=selected", "assignment.n_pilots=31"], "assignment.n_pilots=31"),
    (["experiment.outcomes=[nosuch]"], "experiment.outcomes lists 'nosuch'"),
    # estimator options
    (["estimator.twfe.alpha=2"], "estimator.twfe: alpha=2.0 must lie strictly between 0 and 1"),
    (["estimator.twfe.ssc=foo"], "estimator.twfe: ssc='foo' is not accepted"),
    (["estimator.twfe.dist=foo"], "estimator.twfe: dist='foo' is not accepted"),
    (["estimator.twfe.se=white"], "estimator.twfe: se='white' is not accepted"),
    (["estimator=[twfe]", "estimator.twfe.controls=[d]"], "must not include 'd'"),
    (["estimator.event_study.leads=-1"], "leads=-1 must be a non-negative integer"),
    (["estimator=[callaway_santanna]", "estimator.callaway_santanna.control_group=never"],
     "control_group='never' is not accepted"),
    (["estimator=[sun_abraham]", "estimator.sun_abraham.control_group=foo"],
     "control_group='foo' is not accepted"),
    (["estimator=[psm_did]", "estimator.psm_did.caliper=-0.1"], "caliper=-0.1 must be positive"),
    (["estimator=[psm_did]", "estimator.psm_did.bandwidth=-1"], "bandwidth=-1.0 must be a positive"),
    (["estimator=[mediation]", "estimator.mediation.mediator_lags=-1"], "mediator_lags=-1"),
    (["estimator=[quantile_did]", "estimator.quantile_did.quantiles=[1.5]"],
     "quantiles=[1.5] must be numbers strictly between 0 and 1"),
    (["estimator=[ri_twfe]", "estimator.ri_twfe.n_perm=0"], "n_perm=0 must be an integer >= 1"),
    # experiment options
    (["experiment=placebo", "experiment.placebo.n_perm=0"], "experiment.placebo: n_perm=0"),
    (["experiment=placebo", "experiment.placebo.statistic=z"], "statistic='z' is not accepted"),
    (["experiment=placebo", "experiment.placebo.shifts=[0]"], "0 must be a whole number of years"),
    (["experiment=placebo", "experiment.placebo.shifts=[]"], "shifts must list at least one"),
    (["experiment=placebo", "experiment.placebo.exact=maybe"], "experiment.placebo.exact='maybe'"),
    (["experiment=placebo", "experiment.placebo.base=[nosuch]"], "experiment.placebo.base lists"),
    (["experiment=spec_curve", "experiment.spec.estimators=[ols]"], "entry='ols' is not accepted"),
    (["experiment=spec_curve", "experiment.spec.alpha=0"], "experiment.spec.alpha=0.0"),
    (["experiment=spec_curve", "data=example", "experiment.spec.cluster=[provnce]"],
     "experiment.spec.cluster names 'provnce'"),
    (["experiment=sensitivity", "experiment.sensitivity.alpha=1"], "sensitivity.alpha=1.0"),
    (["experiment=sensitivity", "experiment.sensitivity.rm_method=flci"], "rm_method='flci'"),
    (["experiment=sensitivity", "experiment.sensitivity.mbar_grid=[-1]"], "mbar_grid"),
    (["experiment=sensitivity", "experiment.sensitivity.target=soon"], "target='soon'"),
    (["experiment=calibrate"], "fits the simulator to a file"),
    (["experiment=robustness", "data=example"], "needs simulated data"),
    # data files, through the config
    (["data=file"], "data.path is not set"),
    (["data=file", "data.path=/nonexistent.csv"], "does not exist"),
    (["data=example", "data.unit=nosuch"], "data.unit='nosuch' is not a column"),
    (["data=example", "data.outcomes=[nosuch]"], "column 'nosuch'"),
    (["data=example", "data.treatment_year=1900"], "data.treatment_year=1900 must lie after"),
    (["data=example", "data.filter=nosuch>1"], "could not be read as an override: quote"),
    (["data.labels.lnce=CO2"], "is a new entry of the map data.labels: add it with +data.labels"),
    (["data=example", "data.filter='nosuch > 1'"], "data.filter='nosuch > 1' cannot be applied"),
]


def test_the_corpus_has_at_least_60_hostile_inputs():
    assert len(CONFIG_CASES) + len(FILE_CASES) + len(FILE_TABLES) >= 60


def one_line(capsys, args):
    with pytest.raises(SystemExit) as exc:
        _precheck(args)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert exc.value.code == 2, err
    assert len(err) == 1 and err[0].startswith("didlab: error: "), err
    return err[0]


@pytest.mark.parametrize("args,fragment", CONFIG_CASES, ids=[" ".join(a) for a, _ in CONFIG_CASES])
def test_hostile_config_one_line_exit_2(capsys, tmp_path, args, fragment):
    line = one_line(capsys, [*args, f"hydra.run.dir={tmp_path}/run"])
    assert fragment in line, line
    assert not (tmp_path / "run").exists()  # refused before any folder


#: malformed tables that the file-reading cases of test_realdata do not cover
FILE_TABLES = {
    "negative years": ("unit,time,y,d\n1,-1,1,0\n1,0,2,1\n1,1,2,1\n2,-1,1,0\n2,0,1,0\n2,1,1,0\n",
                       "years must be positive"),
    "one period": ("unit,time,y,d\n1,2000,1,1\n2,2000,1,0\n3,2000,2,0\n", "has one period (2000)"),
    "switches off": ("unit,time,y,d\n1,2001,1,1\n1,2002,2,0\n2,2001,1,0\n2,2002,2,0\n",
                     "treatment switches off: unit 1 has d=0 in 2002"),
    "empty": ("unit,time,y,d\n", "has no rows"),
}


@pytest.mark.parametrize("name", list(FILE_TABLES))
def test_hostile_table_one_line_exit_2(capsys, tmp_path, name):
    text, fragment = FILE_TABLES[name]
    path = tmp_path / "panel.csv"
    path.write_text(text)
    line = one_line(capsys, ["experiment=estimate", "data=file", f"data.path={path}",
                             "data.treatment=d", "data.outcomes=[y]", f"hydra.run.dir={tmp_path}/run"])
    assert fragment in line, line


@pytest.mark.parametrize("key", ["hydra.run.dir", "experiment.store"])
def test_unwritable_output_is_refused_before_hydra(capsys, tmp_path, monkeypatch, key):
    """A read-only disk (simulated: os.access says no) is one line naming the key."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real = cli.os.access
    monkeypatch.setattr(cli.os, "access", lambda p, mode: False if Path(p) == ro else real(p, mode))
    line = one_line(capsys, [f"{key}={ro}/x"] + ([] if key == "hydra.run.dir"
                                                 else [f"hydra.run.dir={tmp_path}/run"]))
    assert f"{key}={ro}/x: cannot write under {ro}" in line


def test_unreachable_dask_scheduler_is_one_line(capsys, tmp_path):
    # port 9 (discard) has no scheduler: refused at once, before a folder exists
    line = one_line(capsys, ["backend=dask", "backend.address=tcp://127.0.0.1:9",
                             f"hydra.run.dir={tmp_path}/run"])
    assert "no Dask scheduler answers" in line


def test_a_run_where_every_estimator_fails_exits_non_zero(tmp_path):
    """A table of errors is not a result: the command says why and exits 2, and the run
    folder has FAILED with the reason, no report.md."""
    path = tmp_path / "panel.csv"
    pd.DataFrame({"unit": [1, 1, 2, 2], "time": [2000, 2001] * 2, "y": [1, 2, 1, 1.5],
                  "cohort": [2000, 2000, 0, 0]}).to_csv(path, index=False)
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "experiments.cli", "experiment=estimate", "data=file",
                        f"data.path={path}", "data.cohort=cohort", "data.outcomes=[y]",
                        "estimator=[twfe]", f"hydra.run.dir={run}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no estimator produced an estimate" in lines[0], r.stderr
    assert (run / "FAILED").exists() and not (run / "report.md").exists()


def test_help_is_fast_and_lists_no_internal_groups():
    """``--help`` reads the config folder only: no estimator, plotting or scipy import."""
    code = ("import sys; from experiments import cli; t = cli.help_text(); "
            "bad = [m for m in ('estimators.catalog', 'matplotlib', 'scipy') if m in sys.modules]; "
            "print(bad); print(t)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    first, _, text = r.stdout.partition("\n")
    assert first == "[]", first
    assert "schema/" not in text and "experiment_data" not in text
    assert "robustness" in text and "estimator:" in text


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    from experiments.files import atomic

    target = tmp_path / "results.csv"
    with pytest.raises(OSError):
        with atomic(target) as tmp:
            tmp.write_text("half")
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_switching_treatment_reaches_only_estimators_that_accept_it(capsys, tmp_path):
    """A 0/1 treatment that switches off is refused with the estimators that accept it
    named, and accepted (d taken from the file) when every configured estimator does."""
    from experiments.build import file_spec
    from experiments.realdata import load_panel
    from experiments.run import compose

    path = tmp_path / "panel.csv"
    path.write_text(FILE_TABLES["switches off"][0].replace("2002,2,0\n2,2001", "2002,2,0\n"
                                                           "1,2003,2,1\n2,2003,1,0\n2,2001"))
    args = ["experiment=estimate", "data=file", f"data.path={path}", "data.treatment=d",
            "data.outcomes=[y]"]
    line = one_line(capsys, [*args, f"hydra.run.dir={tmp_path}/run"])
    assert "only estimators for non-absorbing treatment accept it: estimator=[dcdh]" in line
    panel, notes = load_panel(file_spec(compose([*args, "estimator=[dcdh]"])))
    assert panel.loc[panel["unit"] == 1, "d"].tolist() == [1, 0, 1]  # the file's, not implied
    assert panel.loc[panel["unit"] == 1, "cohort"].unique().tolist() == [2001]
    assert any("switches off for 1 unit" in n for n in notes)
