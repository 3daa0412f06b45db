"""Oaxaca-Blinder pinned to statsmodels' OaxacaBlinder on the same inputs."""

import numpy as np
import pytest
from statsmodels.stats.oaxaca import OaxacaBlinder as SMOaxaca

from estimators.oaxaca import OaxacaBlinder, decompose

COV = ("lnpgdp", "lnes", "lnis2")


def sm_inputs(panel):
    exog = np.column_stack([(panel["cohort"] > 0).astype(float)] + [panel[c] for c in COV])
    return panel["lnce"].to_numpy(), exog


@pytest.mark.parametrize("reference,sm_type,weight", [
    ("pooled", "pooled", None), ("neumark", "nuemark", None), ("cotton", "cotton", None),
    ("reimers", "reimers", None), ("A", "self_submitted", 1.0), ("B", "self_submitted", 0.0)])
def test_twofold_matches_statsmodels(province, reference, sm_type, weight):
    y, exog = sm_inputs(province)
    sm = SMOaxaca(y, exog, 0, hasconst=False, swap=False)
    # statsmodels' first group is the lower indicator value (0 = non-pilots): flip signs
    res = sm.two_fold(two_fold_type=sm_type,
                      submitted_weight=None if weight is None else 1 - weight)
    unexplained, explained, gap = res.params
    e = OaxacaBlinder("lnce", covariates=COV, reference=reference, n_boot=0).fit(province)
    t = e.terms.set_index("term")
    assert t.loc["gap", "estimate"] == pytest.approx(-gap, abs=1e-10)
    assert t.loc["explained", "estimate"] == pytest.approx(-explained, abs=1e-10)
    assert t.loc["unexplained", "estimate"] == pytest.approx(-unexplained, abs=1e-10)


def test_threefold_matches_statsmodels(province):
    y, exog = sm_inputs(province)
    # statsmodels: first group = non-pilots (0). Ours: A = pilots. Swap roles by recoding.
    exog_sw = exog.copy()
    exog_sw[:, 0] = 1 - exog_sw[:, 0]
    endow, coef, inter, gap = SMOaxaca(y, exog_sw, 0, hasconst=False, swap=False).three_fold().params
    t = OaxacaBlinder("lnce", covariates=COV, n_boot=0).fit(province).terms.set_index("term")
    assert t.loc["gap", "estimate"] == pytest.approx(gap, abs=1e-10)
    assert t.loc["endowments", "estimate"] == pytest.approx(endow, abs=1e-10)
    assert t.loc["coefficients", "estimate"] == pytest.approx(coef, abs=1e-10)
    assert t.loc["interaction", "estimate"] == pytest.approx(inter, abs=1e-10)


def test_parts_add_up_and_detail_sums(province):
    y, exog = sm_inputs(province)
    x = np.column_stack([np.ones(len(y)), exog[:, 1:]])
    p = decompose(y, x, exog[:, 0] == 1, "pooled")
    assert p["explained"].sum() + p["unexplained"].sum() == pytest.approx(p["gap"][0], abs=1e-12)
    assert (p["endowments"].sum() + p["coefficients"].sum() + p["interaction"].sum()
            == pytest.approx(p["gap"][0], abs=1e-12))


def test_bootstrap_is_deterministic_and_positive(province):
    est = OaxacaBlinder("lnce", covariates=COV, n_boot=50, sample="time >= 2011")
    a = est.fit(province, rng=np.random.default_rng(0))
    b = est.fit(province, rng=np.random.default_rng(0))
    assert a.std_error == b.std_error > 0 and a.n_obs == 30 * 8
