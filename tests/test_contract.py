"""Contract over every registered estimator: no mutation, determinism, pickling, tidy output."""

import pickle

import numpy as np
import pandas as pd
import pytest

from estimators.result import TERM_COLUMNS, Estimate
from experiments.build import ESTIMATORS


WRAPPERS = {"randomization"}
NO_CONTROLS = {"bacon"}
COVARIATES = {"callaway_santanna", "oaxaca"}


def make(kind, outcome="lnce"):
    cls = ESTIMATORS[kind]
    if kind in WRAPPERS:
        return cls(ESTIMATORS["twfe"](outcome=outcome, controls=("lnpgdp",)), n_perm=20)
    if kind in NO_CONTROLS:
        return cls(outcome=outcome)
    if kind in COVARIATES:
        return cls(outcome=outcome, covariates=("lnpgdp",))
    return cls(outcome=outcome, controls=("lnpgdp",))


def fit(est, panel):
    import inspect

    if "rng" in inspect.signature(est.fit).parameters:
        return est.fit(panel, rng=np.random.default_rng(0))
    return est.fit(panel)


#: estimators that need a column the fixtures lack (contract checked in their own tests)
OWN_FIXTURE = {"heterogeneity", "quantile_did", "changes_in_changes"}


@pytest.mark.parametrize("kind", sorted(set(ESTIMATORS) - OWN_FIXTURE))
@pytest.mark.parametrize("data", ["province", "staggered"])
def test_contract(request, kind, data):
    panel = request.getfixturevalue(data)
    before = panel.copy()
    est = make(kind)
    a = fit(est, panel)
    pd.testing.assert_frame_equal(panel, before)  # input not mutated
    b = fit(est, panel)
    assert a.estimate == b.estimate and a.std_error == b.std_error
    assert isinstance(a, Estimate)
    clone = pickle.loads(pickle.dumps(a))
    assert clone.estimate == a.estimate
    pd.testing.assert_frame_equal(clone.terms, a.terms)
    for col in TERM_COLUMNS:
        assert col in a.terms.columns
        assert col in a.tidy().columns
    assert a.conf_low < a.estimate < a.conf_high
    assert len(pickle.dumps(a)) < 20_000  # O(terms), not O(rows)
    text = str(a)
    assert a.term in text and "95% CI" in text and "\n" in text
    assert "\n" not in repr(a)
    if hasattr(est, "estimand"):  # descriptive decompositions have no causal estimand
        truth = est.estimand(panel)
        assert a.term in truth and np.isfinite(truth[a.term])
    # an estimator is a frozen specification
    with pytest.raises(Exception):
        est.label = "x"
