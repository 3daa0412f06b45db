"""Real panels: a corpus of malformed files, each ending in one line and exit code 2;
round trips through CSV, Parquet and Stata; derived variables."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from estimators.panel import PanelError
from estimators.twfe import TWFE
from experiments.cli import _precheck
from experiments.realdata import FileSpec, derive, load_panel

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "experiments" / "data" / "province_panel.csv"
PILOTS = "[Beijing,Tianjin,Shanghai,Chongqing,Hubei,Guangdong]"
BASE = ["experiment=estimate", "data=example"]


def example() -> pd.DataFrame:
    return pd.read_csv(EXAMPLE)


def write(tmp_path, frame, name="panel.csv"):
    path = tmp_path / name
    if name.endswith(".csv") or name.endswith(".xlsx"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


def _edit(fn):
    def make(tmp_path):
        df = example()
        out = fn(df)
        return out if isinstance(out, list) else [f"data.path={write(tmp_path, df if out is None else out)}"]
    return make


def gap(df):
    return df.drop(index=5)


def dup(df):
    return pd.concat([df, df.iloc[[7]]])


def text_year(df):
    df["year"] = df["year"].astype(object)
    df.loc[3, "year"] = "2003a"


def half_year(df):
    df["year"] = df["year"].astype(float)
    df.loc[3, "year"] = 2003.5


def text_value(df):
    df["ce"] = df["ce"].astype(object)
    df.loc[10, "ce"] = "about 1200"


def corrupt(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_text("not parquet")
    return path


def all_units():
    names = sorted(example()["province"].unique())
    return "data.treated_units=[" + ",".join(f"'{n}'" for n in names) + "]"


def missing_value(df):
    df.loc[[10, 40], "ce"] = np.nan


def zero_value(df):
    df.loc[12, "ce"] = 0.0


def zero_gdp(df):
    df.loc[12, "gdp"] = 0.0


def switch_off(df):
    df["treated"] = ((df["province"] == "Beijing") & (df["year"] >= 2011)).astype(int)
    df.loc[(df["province"] == "Beijing") & (df["year"] == 2015), "treated"] = 0
    return df


def bad_treatment_value(df):
    df["treated"] = ((df["province"] == "Beijing") & (df["year"] >= 2011)).astype(int)
    df.loc[0, "treated"] = 2
    return df


def cohort_varies(df):
    df["first"] = np.where(df["province"] == "Beijing", 2011, 0)
    df.loc[0, "first"] = 2012
    return df


def header_only(df):
    return df.iloc[:0]


CASES = {
    # name: (make args, expected fragment of the one-line message)
    "missing file": (lambda p: ["data.path=/nonexistent/panel.csv"], "does not exist"),
    "unknown extension": (lambda p: [f"data.path={write(p, example(), 'panel.xlsx')}"], "cannot tell the format"),
    "corrupt parquet": (lambda p: [f"data.path={corrupt(p)}"], "cannot read 'x.parquet' as parquet"),
    "unknown unit column": (lambda p: ["data.unit=prov"], "data.unit='prov' is not a column"),
    "unknown time column": (lambda p: ["data.time=yr"], "data.time='yr' is not a column"),
    "text in time": (_edit(text_year), "must hold integer years; found '2003a'"),
    "non-integer year": (_edit(half_year), "must hold integer years"),
    "duplicate keys": (_edit(dup), "rows share a (unit, time) key"),
    "gap in years": (_edit(gap), "has gaps in 'year': no row for [2005]"),
    "treated unit unknown": (lambda p: ["data.treated_units=[Atlantis]"], "data.treated_units lists 'Atlantis'"),
    "text in numeric column": (_edit(text_value), "uses column 'ce', which is not numeric"),
    "missing values": (_edit(missing_value), "cannot take the log of 'lnce (log argument)': 2 value(s)"),
    "log of zero": (_edit(zero_value), "cannot take the log of 'lnce (log argument)': 1 value(s)"),
    "division by zero": (_edit(zero_gdp), "division by zero"),
    "derive unknown column": (lambda p: ["+data.derive.z='log(cee)'"], "uses column 'cee', which is not in the data"),
    "derive bad syntax": (lambda p: ["+data.derive.z='log(ce'"], "is not a valid expression"),
    "derive unknown function": (lambda p: ["+data.derive.z='sqrt(ce)'"], "function 'sqrt' is not supported"),
    "bad filter": (lambda p: ["data.filter='yearr > 2001'"], "data.filter='yearr > 2001' cannot be applied"),
    "unknown outcome": (lambda p: ["experiment.outcomes=[lnco2]"], "column 'lnco2' (outcome or control) is not in the data"),
    "no treatment given": (lambda p: ["data.treated_units=[]"], "give exactly one of data.cohort"),
    "two treatments given": (lambda p: ["data.cohort=year"], "give exactly one of data.cohort"),
    "treatment switches off": (lambda p: [f"data.path={write(p, switch_off(example()))}", "data.treatment=treated",
                                          "data.treated_units=[]"], "treatment switches off: unit 'Beijing'"),
    "treatment not 0/1": (lambda p: [f"data.path={write(p, bad_treatment_value(example()))}", "data.treatment=treated",
                                     "data.treated_units=[]"], "(treatment) must be 0 or 1"),
    "cohort varies within unit": (lambda p: [f"data.path={write(p, cohort_varies(example()))}", "data.cohort=first",
                                             "data.treated_units=[]"], "varies within unit 'Beijing'"),
    "no post period": (lambda p: ["data.treatment_year=2030"], "data.treatment_year=2030 must lie after the first year"),
    "no control unit": (lambda p: [all_units()], "no control unit"),
    "header only": (_edit(header_only), "has no rows"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_file_one_line_exit_2(name, tmp_path, capsys):
    make, fragment = CASES[name]
    args = BASE + make(tmp_path)
    with pytest.raises(SystemExit) as exc:
        _precheck(args)
    assert exc.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("didlab: error:"), err
    assert fragment in err[0], err[0]


@pytest.mark.parametrize("name", ["gap in years", "treatment switches off"])
def test_malformed_file_through_the_command(name, tmp_path):
    make, fragment = CASES[name]
    run_dir = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "experiments.cli", *BASE, *make(tmp_path),
                        f"hydra.run.dir={run_dir}"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0]
    assert not (run_dir / "report.md").exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet", "dta"])
def test_round_trip_identical_estimates(province, tmp_path, fmt):
    cols = ["unit", "time", "cohort", "lnce", "lnpgdp", "lnes"]
    path = tmp_path / f"panel.{fmt}"
    frame = province[cols]
    if fmt == "csv":
        frame.to_csv(path, index=False, float_format="%.17g")
    elif fmt == "parquet":
        frame.to_parquet(path)
    else:
        frame.to_stata(path, write_index=False)
    panel, _ = load_panel(FileSpec(path=str(path), cohort="cohort", outcomes=("lnce",),
                                   controls=("lnpgdp", "lnes")))
    ours = TWFE("lnce", controls=("lnpgdp", "lnes")).fit(panel)
    ref = TWFE("lnce", controls=("lnpgdp", "lnes")).fit(province)
    assert ours.estimate == ref.estimate and ours.std_error == ref.std_error


def test_derived_variables_and_lags():
    df = pd.DataFrame({"unit": [1, 1, 1, 2, 2, 2], "time": [1, 2, 3, 1, 2, 3],
                       "a": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0], "b": [2.0] * 6})
    np.testing.assert_allclose(derive(df, "r", "a / b"), df["a"] / 2)
    np.testing.assert_allclose(derive(df, "l", "log(a * 2)"), np.log(df["a"] * 2))
    lag = derive(df, "g", "lag(a, 1)")
    assert np.isnan(lag[0]) and np.isnan(lag[3]) and lag[1] == 1.0 and lag[4] == 8.0
    np.testing.assert_allclose(derive(df, "d", "diff(a)")[[1, 2]], [1.0, 2.0])
    with pytest.raises(PanelError, match="Attribute is not allowed"):
        derive(df, "x", "a.__class__")


def test_lagged_control_needs_drop_missing(tmp_path):
    path = write(tmp_path, example())
    spec = dict(path=str(path), unit="province", time="year",
                treated_units=("Beijing", "Shanghai"), treatment_year=2011,
                derive={"lnce": "log(ce)", "lntech_l2": "lag(log(tech), 2)"},
                outcomes=("lnce",), controls=("lntech_l2",))
    with pytest.raises(PanelError, match="column 'lntech_l2' has 60 missing value"):
        load_panel(FileSpec(**spec))
    panel, notes = load_panel(FileSpec(**spec, drop_missing=True))
    assert len(panel) == 570 - 60 and any("dropped 60 row" in n for n in notes)


def test_entropy_index_as_an_outcome(tmp_path):
    from simulate.index import entropy_weights

    path = write(tmp_path, example())
    spec = FileSpec(path=str(path), unit="province", time="year", treated_units=("Beijing", "Shanghai"),
                    treatment_year=2011, indices={"quality": {"tech": 1, "fdi": 1, "es": -1}},
                    outcomes=("quality",))
    panel, notes = load_panel(spec)
    raw = example()
    ref, w = entropy_weights(raw, {"tech": 1, "fdi": 1, "es": -1})
    expected = pd.Series(ref.to_numpy(), index=pd.MultiIndex.from_frame(raw[["province", "year"]]))
    got = pd.Series(panel["quality"].to_numpy(), index=pd.MultiIndex.from_frame(panel[["unit", "time"]]))
    np.testing.assert_allclose(got.to_numpy(), expected.loc[got.index].to_numpy(), rtol=1e-12)
    assert any("entropy weights" in n for n in notes)
    assert TWFE("quality").fit(panel).n_obs == 570
