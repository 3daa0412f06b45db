"""The catalogue is the one source of truth: every estimator's config schema is derived from
its class, every YAML that departs from a class default says so, every option can be set
from the command line, and the four runs the catalogue issue named behave."""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from estimators import catalog
from estimators.panel import OptionError
from experiments.build import build_estimator, build_estimators
from experiments.run import CONF_DIR, compose, run
from experiments.schema import estimator_schema

YAMLS = sorted((CONF_DIR / "estimator").glob("*.yaml"))


def _raw(path: Path) -> dict:
    """The option file's own text: label -> the keys it sets."""
    doc = yaml.safe_load(path.read_text())
    return {k: v for k, v in doc.items() if k != "defaults"}


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@pytest.mark.parametrize("kind", catalog.kinds())
def test_schema_is_the_class(kind):
    """The Hydra schema has exactly the class's options (plus kind and the old spellings)
    with the class's defaults."""
    entry = catalog.entry(kind)
    schema = estimator_schema(entry)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    options = {o.name: o for o in entry.options()}
    renamed = catalog.renamed_options(entry.cls)
    assert set(fields) == {"kind", *options, *renamed}
    node = OmegaConf.structured(schema)
    for name, opt in options.items():
        if opt.default is catalog.REQUIRED:
            assert OmegaConf.is_missing(node, name)
            continue
        value = OmegaConf.to_container(node, resolve=False)[name]
        assert value == _plain(opt.default), (kind, name)
    for old in renamed:
        assert node[old] is None


@pytest.mark.parametrize("path", YAMLS, ids=[p.stem for p in YAMLS])
def test_yaml_states_every_departure_from_the_class(path):
    """Composing an option file gives the class's defaults except where the file itself
    sets the key: no default differs silently between Python and the command line."""
    cfg = compose([f"estimator=[{path.stem}]"])
    raw = _raw(path)
    for label, node in cfg.estimator.items():
        entry = catalog.entry(node.kind)
        stated = set((raw.get(label) or {}).keys())
        composed = OmegaConf.to_container(node, resolve=True)
        for opt in entry.options():
            if opt.default is catalog.REQUIRED:
                assert opt.name in stated, (path.stem, opt.name)
                continue
            if composed[opt.name] != _plain(opt.default):
                assert opt.name in stated, (
                    f"{path.name}: {label}.{opt.name}={composed[opt.name]!r} differs from "
                    f"{entry.cls.__name__}'s default {opt.default!r} without saying so")


@functools.lru_cache(maxsize=1)
def _kinds_of_files() -> dict[str, str]:
    """Option file stem -> the estimator kind it configures (one composition for all)."""
    cfg = compose(["estimator=[" + ",".join(p.stem for p in YAMLS) + "]"])
    return {label: node.kind for label, node in cfg.estimator.items()}


def _file_of(kind: str) -> Path:
    stem = next(stem for stem, k in _kinds_of_files().items() if k == kind)
    return CONF_DIR / "estimator" / f"{stem}.yaml"


def test_every_kind_has_an_option_file():
    assert set(catalog.kinds()) <= set(_kinds_of_files().values())


@pytest.mark.parametrize("kind", catalog.kinds())
def test_every_option_can_be_set_from_the_command_line(kind):
    """Each option accepts its own default as a command-line override (the composition
    failure of ``estimator.psm_did.ties=random`` was a missing schema field)."""
    path = _file_of(kind)
    entry = catalog.entry(kind)
    overrides, expected = [], {}
    for opt in entry.options():
        if opt.default is catalog.REQUIRED or opt.default is None:
            continue
        value = opt.default
        text = (str(value).lower() if isinstance(value, bool)
                else "[" + ",".join(map(str, value)) + "]" if isinstance(value, tuple)
                else str(value))
        overrides.append(f"estimator.{path.stem}.{opt.name}={text}")
        expected[opt.name] = _plain(value)
    cfg = compose([f"estimator=[{path.stem}]", *overrides])
    composed = OmegaConf.to_container(cfg.estimator[path.stem])
    assert {k: composed[k] for k in expected} == expected


def test_psm_ties_from_the_command_line():
    cfg = compose(["estimator=[psm_nn]", "estimator.psm_nn.ties=random"])
    est = build_estimator("psm_nn", cfg.estimator.psm_nn, "lnce")
    assert est.ties == "random"


def test_bad_option_is_refused_when_built():
    cfg = compose(["estimator=[twfe,psm_did]", "estimator.psm_did.bandwidth=-1"])
    with pytest.raises(OptionError, match="estimator.psm_did.*bandwidth"):
        build_estimators(cfg, ["lnce"])


def test_bad_option_exits_2_before_any_output(tmp_path):
    """`didlab estimator=[twfe,psm_did] estimator.psm_did.bandwidth=-1` used to exit 0 with
    a complete-looking report holding an error row."""
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "estimator=[twfe,psm_did]",
         "estimator.psm_did.bandwidth=-1", f"hydra.run.dir={tmp_path}/run"],
        capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "bandwidth" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_run_refuses_before_writing(tmp_path):
    cfg = compose(["estimator=[twfe,psm_did]", "estimator.psm_did.bandwidth=-1"])
    with pytest.raises(OptionError):
        run(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_grid_keeps_user_overrides():
    """`experiment=robustness timing.anticipation=2`: every grid cell has anticipation 2."""
    from experiments.montecarlo_run import cells

    cfg = compose(["experiment=robustness", "timing.anticipation=2", "effect.att=-0.2"])
    runs = cells(cfg)
    assert len(runs) == 9
    for c, axes in runs:
        assert c.timing.anticipation == 2 and c.effect.att == -0.2
        assert c.timing.kind == ("market_open" if axes["timing"] == "market_open" else "common")
    years = {c.timing.year for c, axes in runs if axes["timing"] == "notice_2012"}
    assert years == {2012}


def test_callaway_santanna_bootstrap_runs_on_the_seeded_path(tmp_path):
    """CS with the multiplier bootstrap needs a generator; the run fits it once, seeded."""
    cfg = compose(["estimator=[callaway_santanna]", "estimator.callaway_santanna.n_boot=199",
                   "timing=market_open", "experiment.figures=true"])
    out = run(cfg, tmp_path)
    table = out["table"]
    row = table[table["estimator"] == "callaway_santanna"].iloc[0]
    assert row["error"] == "" and np.isfinite(row["std_error"])
    assert "multiplier bootstrap" in out["draw"].estimate("lnce", "callaway_santanna").inference
    again = run(cfg, tmp_path / "again")["table"]
    assert again["std_error"].tolist() == table["std_error"].tolist()  # seeded


def test_labels_follow_alpha(tmp_path):
    cfg = compose(["estimator=[twfe,event_study]", "estimator.twfe.alpha=0.1",
                   "estimator.event_study.alpha=0.1"])
    out = run(cfg, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "95%" not in text.split("## Configuration")[0]
    ev = out["event_terms"]
    assert set(ev["alpha"]) == {0.1}
    twfe = out["draw"].estimate("lnce", "twfe")
    assert "90% CI" in str(twfe)
    from scipy import stats

    crit = stats.t.ppf(0.95, twfe.n_clusters - 1)
    assert twfe.conf_high - twfe.estimate == pytest.approx(crit * twfe.std_error)


def test_regression_table_says_group_by_year(province):
    """A column with group-by-year effects says so, instead of "Year FE: Yes"."""
    from estimators.twfe import TWFE
    from experiments.report import regression_table
    from experiments.single import Fit, SingleDraw

    panel = province.assign(east=(province["unit"].astype(int) % 2))
    fits = {}
    for label, est in (("twfe", TWFE("lnce", label="twfe")),
                       ("twfe_east", TWFE("lnce", time_by="east", label="twfe_east"))):
        fits[("lnce", label)] = Fit("lnce", label, est, est.fit(panel), {}, "", None)
    md = regression_table(SingleDraw(panel, None, fits))["markdown"]
    year = next(line for line in md.splitlines() if line.startswith("| Year FE"))
    assert year.split("|")[2:4] == [" Yes ", " No "]
    east = next(line for line in md.splitlines() if line.startswith("| east-by-year FE"))
    assert east.split("|")[2:4] == [" No ", " Yes "]


# --- old spellings keep working for one release ------------------------------------------

@pytest.mark.parametrize("make_old, new", [
    (lambda: __import__("estimators.drdid", fromlist=["DRDID"]).DRDID("lnce", controls=("lnpgdp",)),
     {"covariates": ("lnpgdp",)}),
    (lambda: __import__("estimators.callaway_santanna", fromlist=["x"]).CallawaySantAnna(
        "lnce", bootstrap=True), {"n_boot": 999}),
    (lambda: __import__("estimators.callaway_santanna", fromlist=["x"]).CallawaySantAnna(
        "lnce", bootstrap=True, n_boot=199), {"n_boot": 199}),
    (lambda: __import__("estimators.callaway_santanna", fromlist=["x"]).CallawaySantAnna(
        "lnce", bootstrap=False), {"n_boot": 0}),
    (lambda: __import__("estimators.mediation", fromlist=["x"]).Mediation(
        "lnce", ("lnes", "lntech"), lags=(0, 2), ci="bc", bootstrap="stratified"),
     {"mediator_lags": (0, 2), "boot_ci": "bc", "stratify": True, "n_boot": 999}),
    (lambda: __import__("estimators.mediation", fromlist=["x"]).Mediation(
        "lnce", bootstrap="none"), {"n_boot": 0}),
    (lambda: __import__("estimators.sun_abraham", fromlist=["x"]).SunAbraham(
        "lnce", control="last"), {"control_group": "lasttreated"}),
    (lambda: __import__("estimators.psm_did", fromlist=["x"]).PSMDID(
        "lnce", inference="bootstrap"), {"n_boot": 499}),
    (lambda: __import__("estimators.drdid", fromlist=["x"]).DRDID(
        "lnce", inference="influence", n_boot=40), {"n_boot": 0}),
    (lambda: __import__("estimators.oaxaca", fromlist=["x"]).OaxacaBlinder(
        "lnce", group="east"), {"by": "east"}),
])
def test_old_spellings_still_work_with_a_warning(make_old, new):
    with pytest.warns(DeprecationWarning, match="deprecated"):
        est = make_old()
    for key, value in new.items():
        assert getattr(est, key) == value


def test_old_and_new_spellings_give_the_same_numbers(province):
    from estimators.drdid import DRDID

    with pytest.warns(DeprecationWarning):
        old = DRDID("lnce", controls=("lnpgdp",)).fit(province)
    new = DRDID("lnce", covariates=("lnpgdp",)).fit(province)
    assert (old.estimate, old.std_error) == (new.estimate, new.std_error)


def test_old_config_key_is_mapped_with_a_warning():
    from experiments import build

    build._WARNED.clear()
    cfg = compose(["estimator=[dr_did,callaway_santanna]", "estimator.dr_did.controls=[lnpgdp]",
                   "estimator.dr_did.covariates=[]", "estimator.callaway_santanna.bootstrap=true"])
    with pytest.warns(FutureWarning) as record:
        built = build_estimators(cfg, ["lnce"])
    said = [str(w.message) for w in record]
    assert any("estimator.dr_did.controls is deprecated" in m
               and "use estimator.dr_did.covariates" in m for m in said)
    assert any("estimator.callaway_santanna.bootstrap" in m for m in said)
    assert built[("lnce", "dr_did")].covariates == ("lnpgdp",)
    assert built[("lnce", "callaway_santanna")].n_boot == 999


def test_a_grid_given_on_the_command_line_replaces_the_experiments_grid():
    """`experiment.grid={timing:[notice_2011,market_open]}` asks for 2 cells; Hydra's merge
    with robustness's 3x3 grid gave 6."""
    from experiments.montecarlo_run import cells

    cfg = compose(["experiment=robustness",
                   "experiment.grid={timing:[notice_2011,market_open]}"])
    runs = cells(cfg)
    assert [axes["timing"] for _, axes in runs] == ["notice_2011", "market_open"]
