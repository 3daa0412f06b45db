"""The design library (experiments/designs.py, experiments/library/), the simulator registry
(simulate/registry.py) and grids over keys inside an axis group."""

import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from estimators.panel import OptionError
from experiments.designs import DIAGNOSANDS, DesignInfo, PaperNumber, library, listing, paper_comparison
from experiments.montecarlo_run import axis_names, cells, paper_section
from experiments.run import CONF_DIR, compose
from simulate.registry import Simulator


# --- the library ---------------------------------------------------------------------------

def test_every_design_is_an_experiment_config_whose_paper_numbers_point_at_its_estimators():
    infos = library()
    assert {"robustness", "inference", "method_comparison"} <= set(infos)
    for name, info in infos.items():
        assert (CONF_DIR / "experiment" / f"{name}.yaml").is_file(), name
        assert info.group in ("methods", "carbon") and info.title and info.paper
        if not info.numbers:
            continue
        cfg = compose([f"experiment={name}"])
        labels = set(cfg.estimator)
        grid = dict(cfg.experiment.grid or {})
        for num in info.numbers:
            assert num.diagnosand in DIAGNOSANDS, (name, num)
            assert num.estimator in labels, (name, num.estimator, sorted(labels))
            assert num.source, (name, num)
            for axis, value in num.cell.items():
                assert axis in grid, (name, axis)
                assert str(value) in [str(v) for v in grid[axis]], (name, axis, value)


def test_designs_command_lists_every_design_and_refuses_arguments():
    out = subprocess.run([sys.executable, "-m", "experiments.cli", "designs"],
                         capture_output=True, text=True, cwd=CONF_DIR.parent)
    assert out.returncode == 0, out.stderr
    for name in library():
        assert f"  {name} " in out.stdout
    assert out.stdout == listing() + "\n"
    bad = subprocess.run([sys.executable, "-m", "experiments.cli", "designs", "bdm"],
                         capture_output=True, text=True, cwd=CONF_DIR.parent)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no arguments" in bad.stderr


def _diag():
    return pd.DataFrame({
        "cell": ["a", "b", "a"], "data.rho": ["0.0", "0.8", "0.0"], "outcome": "y",
        "estimator": ["twfe", "twfe", "ols"], "term": "ATT", "role": "headline",
        "rejection": [0.05, 0.40, 0.30], "rejection_mcse": [0.01, 0.02, 0.02]})


def test_paper_comparison_matches_cells_and_reads_the_mc_error():
    info = DesignInfo(name="x", title="t", paper="P", demonstrates="d", numbers=(
        PaperNumber("clustered, rho 0.8", 0.44, "Table 1", "rejection", "twfe",
                    {"data.rho": "0.8"}),
        PaperNumber("clustered, rho 0", 0.10, "Table 1", "rejection", "twfe",
                    {"data.rho": "0.0"}),
        PaperNumber("ols, pattern only", 0.30, "Table 2", "rejection", "ols",
                    {"data.rho": "0.0"}, reproduced=False),
        PaperNumber("missing estimator", 0.3, "Table 2", "rejection", "nope"),
    ))
    t = paper_comparison(info, _diag())
    assert t["didlab"].tolist()[:3] == [0.40, 0.05, 0.30]
    # |0.40 - 0.44| = 0.04 <= 2.576 * 0.02; |0.05 - 0.10| = 0.05 > 2.576 * 0.01
    assert t["within_mc_error"].tolist()[:3] == [True, False, ""]
    assert t["reproduced"].tolist()[2] == "pattern"
    assert np.isnan(t["didlab"].iloc[3]) and t["matched_rows"].iloc[3] == 0


def test_paper_section_only_for_library_designs_with_numbers():
    assert paper_section("robustness", _diag(), 10) is None      # carbon: no paper numbers
    assert paper_section("not_a_design", _diag(), 10) is None


# --- the simulator registry ----------------------------------------------------------------

@dataclasses.dataclass
class _ToyDGP:
    n_units: int = 10
    rho: float = 0.5


def test_simulator_schema_adds_the_data_keys_and_refuses_clashes():
    sim = Simulator(kind="toy", dgp=_ToyDGP, draw=lambda *a: None, outcomes=("y",),
                    controls=("x",))
    schema = sim.schema()
    obj = schema()
    assert (obj.kind, obj.outcomes, obj.controls, obj.score_covariates, obj.n_units) == (
        "toy", ["y"], ["x"], ["x"], 10)

    @dataclasses.dataclass
    class Clash:
        outcomes: int = 1

    with pytest.raises(TypeError, match="clash"):
        Simulator(kind="c", dgp=Clash, draw=lambda *a: None, outcomes=("y",)).schema()


# --- grids over keys inside a group --------------------------------------------------------

def test_grid_over_keys_inside_groups_crosses_values_and_names_axes():
    cfg = compose(["experiment=size", "assignment=random",
                   "experiment.grid={effect.att:[0.0,-0.3],assignment.n_pilots:[3,6]}"])
    runs = cells(cfg)
    assert len(runs) == 4
    got = [(c.effect.att, c.assignment.n_pilots, ax["effect.att"], ax["assignment.n_pilots"])
           for c, ax in runs]
    assert got == [(0.0, 3, "0.0", "3"), (0.0, 6, "0.0", "6"), (-0.3, 3, "-0.3", "3"),
                   (-0.3, 6, "-0.3", "6")]
    assert all(c.assignment.kind == "random" for c, _ in runs)  # the user's override kept
    assert axis_names(runs)[-2:] == ["effect.att", "assignment.n_pilots"]


@pytest.mark.parametrize("grid,message", [
    ("{seed:[1,2]}", "experiment.grid key 'seed' is not accepted"),
    ("{data.rhoo:[0.1]}", "has no key 'rhoo'"),
    ("{effect.att:[]}", "must be a non-empty list"),
])
def test_bad_grid_keys_are_refused_in_one_line(grid, message):
    cfg = compose(["experiment=size", f"experiment.grid={grid}"])
    with pytest.raises(OptionError, match=message):
        cells(cfg)


# --- an experiment's estimator settings when the command line selects others -------------

def test_experiment_settings_for_deselected_estimators_are_dropped():
    cfg = compose(["experiment=few_treated", "estimator=[twfe,twfe_cr2]"])
    assert list(cfg.estimator) == ["twfe", "twfe_cr2"]
    from experiments.build import build_estimators

    assert len(build_estimators(cfg, ["y"])) == 2


def test_user_settings_for_an_unselected_estimator_are_refused():
    with pytest.raises(OptionError, match=r"estimator.ri_twfe sets options of an estimator "
                                          r"that is not selected; selected: twfe, twfe_cr2"):
        compose(["experiment=few_treated", "estimator=[twfe,twfe_cr2]",
                 "estimator.ri_twfe.n_perm=99"])


def test_every_design_states_a_default_time_under_five_minutes():
    """Issue #21: every preset's default size finishes in under 5 minutes on 2 cores, and
    its documentation says how long (measured; see each DesignInfo's comment)."""
    for name, info in library().items():
        assert np.isfinite(info.seconds) and 0 < info.seconds < 300, (name, info.seconds)
