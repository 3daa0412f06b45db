"""Every config composes; typos and wrong types fail at composition; experiments smoke-run."""

import pandas as pd
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from estimators.panel import OptionError
from experiments.build import build_draw, build_estimators
from experiments.run import CONF_DIR, compose, run

GROUPS = ["data", "assignment", "timing", "effect", "estimator", "backend", "experiment"]


def options(group):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


#: options that only make sense with another group's option
NEEDS = {("effect", "cohort_het"): ["data=city"], ("experiment", "calibrate"): ["data=example"]}
#: options that need a file made by another run (covered in tests/test_calibrate.py)
ELSEWHERE = {("data", "calibrated"), ("data", "file")}  # need a file; see test_realdata.py


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)
                                          if (g, o) not in ELSEWHERE])
def test_every_option_composes_and_builds(group, option):
    from experiments.build import SIMULATED, load_or_draw

    value = f"[{option}]" if group == "estimator" else option
    cfg = compose([f"{group}={value}", *NEEDS.get((group, option), [])])
    if cfg.data.kind in SIMULATED:
        build_draw(cfg)
    else:
        panel, _ = load_or_draw(cfg)
        assert len(panel) > 0
    build_estimators(cfg, list(cfg.experiment.outcomes))


def test_defaults():
    cfg = compose([])
    assert cfg.experiment.kind == "single" and cfg.seed == 0
    assert list(cfg.estimator) == ["twfe", "twfe_controls", "event_study"]
    assert list(cfg.estimator.twfe_controls.controls) == list(cfg.data.controls)
    assert cfg.timing.year == 2011 and cfg.assignment.kind == "actual"


def test_overrides():
    cfg = compose(["timing=market_open", "assignment=selected", "effect.att=-0.2", "seed=3"])
    assert (cfg.timing.kind, cfg.assignment.kind, cfg.effect.att, cfg.seed) == (
        "market_open", "selected", -0.2, 3)


@pytest.mark.parametrize("override,message", [
    ("data.n_unit=3", "Could not override 'data.n_unit'"),
    ("effect.att=abc", "effect.att=abc"),
    ("estimator.twfe.contrls=[a]", "estimator.twfe.contrls"),
    ("timing=notice_2099", "timing"),
    ("experiment.n_reps=many", "experiment.n_reps"),
])
def test_typos_and_wrong_types_fail_at_composition(override, message):
    with pytest.raises(ConfigCompositionException, match=message):
        compose([override])


def test_cohort_heterogeneity_is_refused_on_the_province_panel():
    with pytest.raises(OptionError, match="effect.het_cohort is used by the city panel"):
        build_draw(compose(["effect=cohort_het"]))


def test_bad_choice_values_fail_when_built():
    with pytest.raises(OptionError, match="assignment.kind='best'"):
        build_draw(compose(["assignment.kind=best"]))
    with pytest.raises(OptionError, match="estimator.twfe.kind='ols'"):
        build_estimators(compose(["estimator.twfe.kind=ols"]), ["lnce"])
    with pytest.raises(OptionError, match="se='iid'"):
        cfg = compose(["estimator.twfe.se=iid"])
        from estimators.panel import check_choice
        from estimators.fe import SE_TYPES
        check_choice("se", cfg.estimator.twfe.se, SE_TYPES)


def test_single_run_writes_outputs(tmp_path):
    out = run(compose(["experiment.figures=true"]), tmp_path)
    for name in ("config.yaml", "results.parquet", "results.csv", "report.md",
                 "figures/event_study.png"):
        assert (tmp_path / name).exists(), name
    table = out["table"]
    head = table[table["role"] == "headline"]
    assert len(head) == 6 and set(head["outcome"]) == {"lnce", "lncei"}
    assert head["truth"].tolist() == pytest.approx([-0.3] * 6)
    assert head["pretrend_p"].notna().sum() == 2


# experiments on one panel (the dossier has its own tests in tests/test_dossier.py)
SINGLE_PANEL = {"placebo", "estimate", "spec_curve", "calibrate", "sensitivity", "dossier"}
MONTE_CARLO = [e for e in options("experiment") if e not in SINGLE_PANEL]


#: a smaller grid where the experiment's own has many cells (every axis kept and varied, so
#: each still gets its figure): bdm2004's 24 cells took 40 s
SMOKE_GRID = {"bdm2004": "experiment.grid={data.rho:[0.0,0.8],data.n_states:[50,6],"
                         "effect.att:[0.0,0.02]}"}


@pytest.mark.parametrize("experiment", MONTE_CARLO)
def test_each_experiment_smoke_runs(tmp_path, experiment):
    extra = [SMOKE_GRID[experiment]] if experiment in SMOKE_GRID else []
    cfg = compose([f"experiment={experiment}", "experiment.n_reps=3", "experiment.chunk_size=2",
                   "backend=sequential", f"experiment.store={tmp_path / 'store'}",
                   "experiment.figures=true", *extra])
    out = run(cfg, tmp_path / "run")
    diag = pd.read_csv(tmp_path / "run" / "diagnosands.csv")
    assert ((diag["n_draws"] + diag["n_failed"]) == 3).all()
    assert (tmp_path / "run" / "report.md").exists()
    grid = OmegaConf.to_container(cfg.experiment.grid)
    n_cells = 1
    for opts in grid.values():
        n_cells *= len(opts)
    assert diag["cell"].nunique() == n_cells
    assert len(out["diagnosand_figures"]) == len(grid)


def test_bad_config_writes_nothing(tmp_path):
    """A config mistake is found before the output folder exists."""
    cfg = compose(["assignment.kind=best"])
    with pytest.raises(OptionError):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_failed_run_is_marked(tmp_path, monkeypatch):
    """A failure after validation marks the folder FAILED and writes no report.md."""
    import experiments.single

    def broken(cfg, draw, out):
        raise OptionError("the runner failed")

    monkeypatch.setattr(experiments.single, "run_single", broken)
    with pytest.raises(OptionError):
        run(compose(["estimator=[twfe]"]), tmp_path)
    assert (tmp_path / "FAILED").exists() and not (tmp_path / "report.md").exists()


def test_placebo_experiment_writes_tables_and_figures(tmp_path):
    cfg = compose(["experiment=placebo", "experiment.placebo.n_perm=199",
                   "experiment.placebo.shifts=[1,2]", "experiment.placebo.statistic=coef"])
    out = run(cfg, tmp_path)
    for name in ("placebo_timing.csv", "placebo_randomization.csv", "placebo_distribution.parquet",
                 "leave_one_out.csv", "figures/placebo_distribution.png",
                 "figures/placebo_timing.png", "figures/leave_one_out.png", "report.md"):
        assert (tmp_path / name).exists(), name
    ri = out["randomization"]
    assert set(ri["estimator"]) == {"twfe", "twfe_controls"}
    assert (ri["n_assignments"] == 199).all() and (ri["statistic"] == "coef").all()
    assert (ri["ri_p_value"] == 1 / 200).all()  # the -0.3 effect is beyond every placebo
    assert set(out["timing"]["term"]) == {"shift-1", "shift-2"}
    assert len(out["leave_one_out"]) == 12


def test_placebo_base_must_be_configured(tmp_path):
    cfg = compose(["experiment=placebo", "experiment.placebo.base=[nope]"])
    with pytest.raises(OptionError, match="experiment.placebo.base lists 'nope'"):
        run(cfg, tmp_path)


def test_estimate_experiment_on_the_example_file(tmp_path):
    out = run(compose(["data=example", "experiment=estimate"]), tmp_path)
    md = (tmp_path / "regression_table.md").read_text()
    tex = (tmp_path / "regression_table.tex").read_text()
    assert "policy x post (d)" in md and "R-squared" in md and "Unit FE" in md
    assert "\\begin{tabular}" in tex
    head = out["table"][out["table"]["role"] == "headline"]
    assert head["truth"].isna().all() and (head["n_obs"] == 570).all()
    from estimators.twfe import TWFE
    from experiments.build import load_or_draw

    panel, _ = load_or_draw(compose(["data=example", "experiment=estimate"]))
    ref = TWFE("lnce").fit(panel)
    assert f"{ref.estimate:.4f}" in md
