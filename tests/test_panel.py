"""The panel contract: each defect gets a clear error naming the column and rows."""

import numpy as np
import pandas as pd
import pytest

from estimators.panel import (DidlabError, PanelError, check_panel, safe_log,
                              treatment_from_cohort, validate_panel)


def small() -> pd.DataFrame:
    unit = np.repeat([1, 2, 3, 4], 4)
    time = np.tile([2010, 2011, 2012, 2013], 4)
    cohort = np.repeat([2012, 0, 2013, 0], 4)
    return pd.DataFrame({"unit": unit, "time": time, "cohort": cohort,
                         "d": treatment_from_cohort(cohort, time),
                         "y": np.arange(16, dtype=float), "x": np.linspace(1, 2, 16)})


def test_valid_panel_is_described():
    info = validate_panel(small(), ["y"], ["x"])
    assert (info.n_obs, info.n_units, info.n_periods) == (16, 4, 4)
    assert info.balanced and info.cohorts == (2012, 2013)
    assert (info.n_treated_units, info.n_never_treated) == (2, 2)
    assert "balanced" in info.describe()


def test_error_is_a_value_error():
    assert issubclass(PanelError, DidlabError) and issubclass(DidlabError, ValueError)


def test_missing_column_is_named():
    with pytest.raises(PanelError, match="column 'z' is missing"):
        validate_panel(small(), ["z"])
    with pytest.raises(PanelError, match="column 'cohort' is missing"):
        validate_panel(small().drop(columns="cohort"))


def test_duplicate_rows_are_reported_with_keys():
    p = pd.concat([small(), small().iloc[[5]]], ignore_index=True)
    with pytest.raises(PanelError, match=r"2 rows share a \(unit, time\) key at \(unit=2, time=2011\)"):
        validate_panel(p, ["y"])


def test_non_numeric_outcome_names_the_value():
    p = small().astype({"y": object})
    p.loc[3, "y"] = "n/a"
    with pytest.raises(PanelError, match="column 'y' must be numeric but holds text such as 'n/a'"):
        validate_panel(p, ["y"])


def test_missing_values_say_how_many_and_where():
    p = small()
    p.loc[[2, 9], "x"] = np.nan
    with pytest.raises(PanelError, match=r"column 'x' has 2 missing value\(s\) at \(unit=1, time=2012\)"):
        validate_panel(p, ["y"], ["x"])


def test_d_inconsistent_with_cohort():
    p = small()
    p.loc[0, "d"] = 1
    with pytest.raises(PanelError, match="inconsistent with 'cohort'"):
        validate_panel(p, ["y"])
    p = small()
    p.loc[3, "d"] = 0  # unit 1 switches off in 2013
    with pytest.raises(PanelError, match="switches off"):
        validate_panel(p, ["y"])


def test_cohort_must_be_constant_within_unit():
    p = small()
    p.loc[0, "cohort"] = 2013
    with pytest.raises(PanelError, match="more than one 'cohort'"):
        validate_panel(p, ["y"])


def test_no_treated_and_no_control_units():
    p = small()
    p["cohort"], p["d"] = 0, 0
    with pytest.raises(PanelError, match="no treated unit"):
        validate_panel(p, ["y"])
    p = small()
    p["cohort"] = 2012
    p["d"] = treatment_from_cohort(p["cohort"], p["time"])
    with pytest.raises(PanelError, match="no control unit"):
        validate_panel(p, ["y"])


def test_staggered_without_never_treated_has_controls():
    p = small()
    p["cohort"] = np.repeat([2011, 2012, 2013, 2013], 4)
    p["d"] = treatment_from_cohort(p["cohort"], p["time"])
    assert validate_panel(p, ["y"]).n_never_treated == 0


def test_unbalanced_is_accepted_and_reported_not_balanced():
    p = small().drop(index=[1, 6]).reset_index(drop=True)
    info, unit, time, _ = check_panel(p, ["y"])
    assert not info.balanced and info.n_obs == 14
    assert unit.max() == 3 and time.max() == 3
    assert "UNBALANCED" in info.describe()


def test_log_of_non_positive_value():
    with pytest.raises(PanelError, match="cannot take the log of 'ce': 2 value"):
        safe_log(np.array([1.0, 0.0, -2.0]), "ce")
    np.testing.assert_allclose(safe_log([1.0, np.e], "ce"), [0.0, 1.0])


def test_infinite_values_and_non_integer_time():
    p = small()
    p.loc[4, "y"] = np.inf
    with pytest.raises(PanelError, match="infinite"):
        validate_panel(p, ["y"])
    p = small().astype({"time": float})
    p.loc[0, "time"] = 2010.5
    with pytest.raises(PanelError, match="integer periods"):
        validate_panel(p, ["y"])


def test_validation_does_not_mutate():
    p = small()
    before = p.copy()
    validate_panel(p, ["y"], ["x"])
    pd.testing.assert_frame_equal(p, before)
