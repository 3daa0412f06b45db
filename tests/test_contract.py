"""Contract over every catalogue estimator: no mutation, determinism, pickling, tidy output,
labels that follow alpha, a truth where one is declared, event-time terms where declared.

The test iterates the catalogue; options are set by name (``controls``, ``covariates``,
``by``, ...) wherever an estimator has them, never by estimator kind.
"""

import pickle

import numpy as np
import pandas as pd
import pytest

from estimators import catalog
from estimators.panel import EstimationError
from estimators.result import TERM_COLUMNS, Estimate
from estimators.twfe import TWFE

#: option name -> value used wherever an estimator has that option (small bootstraps keep
#: the test fast; a unit-level split column exists in the fixtures)
OPTION_VALUES = {
    "controls": ("lnpgdp",),
    "covariates": ("lnpgdp",),
    "by": "east",
    "n_boot": 19,
    "n_perm": 20,
    "quantiles": (0.25, 0.5, 0.75),
}


def make(entry: catalog.Entry, outcome: str = "lnce", **extra):
    names = {o.name for o in entry.options()}
    kw = {k: v for k, v in OPTION_VALUES.items() if k in names}
    kw.update(extra)
    if entry.capabilities.wraps:
        return entry.cls(base=TWFE(outcome, controls=("lnpgdp",)), **kw)
    return entry.cls(outcome=outcome, **kw)


def fit(est, panel):
    rng = np.random.default_rng(0) if catalog.capabilities(est).needs_rng else None
    return est.fit(panel, rng=rng)


@pytest.fixture(scope="module")
def panels(province, staggered):
    east = lambda p: p.assign(east=(p["unit"].astype(int) % 2).astype(int))  # noqa: E731
    return {"province": east(province), "staggered": east(staggered)}


def test_catalogue_lists_every_estimator_once():
    kinds = catalog.kinds()
    assert len(kinds) == len(set(kinds)) >= 15
    classes = [e.cls for e in catalog.entries()]
    assert len(classes) == len(set(classes))


@pytest.mark.parametrize("kind", catalog.kinds())
def test_contract(panels, kind):
    entry = catalog.entry(kind)
    est = make(entry)
    est.check()
    fitted_on = []
    for name, panel in panels.items():
        before = panel.copy()
        try:
            a = fit(est, panel)
        except EstimationError as exc:
            # a shape the estimator does not handle is refused with one line, never fitted
            assert "\n" not in str(exc)
            continue
        fitted_on.append(name)
        pd.testing.assert_frame_equal(panel, before)  # input not mutated
        b = fit(est, panel)
        assert a.estimate == b.estimate
        assert a.std_error == b.std_error or (np.isnan(a.std_error) and np.isnan(b.std_error))
        assert isinstance(a, Estimate) and a.estimator == est.label
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
        if entry.capabilities.truth:
            truth = est.estimand(panel)
            assert a.term in truth and np.isfinite(truth[a.term])
        if entry.capabilities.event_time:
            assert "event_time" in a.terms
        if entry.capabilities.quantiles:
            assert "quantile" in a.terms
    assert fitted_on, f"{kind} fitted on none of the fixtures"
    # an estimator is a frozen specification
    with pytest.raises(Exception):
        est.label = "x"


@pytest.mark.parametrize("kind", [e.kind for e in catalog.entries()
                                  if "alpha" in {o.name for o in e.options()}])
def test_labels_follow_alpha(panels, kind):
    entry = catalog.entry(kind)
    est = make(entry, alpha=0.1)
    for panel in panels.values():
        try:
            a = fit(est, panel)
        except EstimationError:
            continue
        assert a.alpha == 0.1
        assert "90% CI" in str(a) and "95%" not in str(a)
        break


@pytest.mark.parametrize("kind", catalog.kinds())
def test_check_rejects_bad_options_by_name(kind):
    """Every estimator's check() refuses a bad value of the options most share, naming
    the option."""
    from estimators.panel import OptionError

    entry = catalog.entry(kind)
    names = {o.name for o in entry.options()}
    bad = {"alpha": 1.5, "n_boot": -1, "n_perm": 0}
    tried = 0
    for name, value in bad.items():
        if name not in names:
            continue
        tried += 1
        with pytest.raises(OptionError, match=name):
            make(entry, **{name: value}).check()
    if not tried:
        pytest.skip(f"{kind} has none of {sorted(bad)}")


def test_needs_rng_matches_use_of_the_generator(panels):
    """An estimator that declares needs_rng=False gives the same numbers whatever the
    generator; the catalogue's fit protocol accepts rng everywhere."""
    for entry in catalog.entries():
        if entry.capabilities.needs_rng:
            continue
        est = make(entry)
        panel = panels["staggered"]
        a = est.fit(panel, rng=np.random.default_rng(1))
        b = est.fit(panel, rng=None)
        assert a.estimate == b.estimate, entry.kind
