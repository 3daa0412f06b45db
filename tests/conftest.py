"""Shared fixtures: simulated and real panels in the canonical format."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simulate.design import Effect, Timing
from simulate.province import draw_province

CONTROLS = ("lnpgdp", "lnpeople", "lnis2", "lnfdi", "lntech", "lnes")


@pytest.fixture(scope="session")
def province() -> pd.DataFrame:
    """One default draw of the calibrated province panel."""
    return draw_province(np.random.default_rng(20261125))


@pytest.fixture(scope="session")
def staggered() -> pd.DataFrame:
    """Province panel with each pilot's market-opening year (2013 / 2014)."""
    return draw_province(np.random.default_rng(7), timing=Timing(kind="market_open"),
                         effect=Effect(dynamics="ramp"))


@pytest.fixture(scope="session")
def unbalanced(province: pd.DataFrame) -> pd.DataFrame:
    """The province panel with 40 random rows removed."""
    rng = np.random.default_rng(3)
    drop = rng.choice(len(province), size=40, replace=False)
    return province.drop(index=province.index[drop]).reset_index(drop=True)


@pytest.fixture(scope="session")
def organ() -> pd.DataFrame:
    """Kessler and Roth (2014) organ donations, canonical form (causaldata)."""
    from causaldata import organ_donations

    od = organ_donations.load_pandas().data
    p = pd.DataFrame({"unit": od["State"].astype(str), "time": od["Quarter_Num"].astype(int),
                      "Rate": od["Rate"].astype(float)})
    p["cohort"] = np.where(p["unit"] == "California", 4, 0)
    p["d"] = ((p["cohort"] > 0) & (p["time"] >= p["cohort"])).astype(int)
    return p


@pytest.fixture(scope="session")
def castle() -> pd.DataFrame:
    """Cheng and Hoekstra (2013) castle doctrine, canonical form (causaldata)."""
    from causaldata import castle as c

    raw = c.load_pandas().data
    p = pd.DataFrame({"unit": raw["sid"].astype(int), "time": raw["year"].astype(int),
                      "l_homicide": raw["l_homicide"].astype(float),
                      "d": raw["post"].astype(int)})
    first = p[p["d"] == 1].groupby("unit")["time"].min()
    p["cohort"] = p["unit"].map(first).fillna(0).astype(int)
    return p


def lm_panel(panel: pd.DataFrame) -> pd.DataFrame:
    return panel.set_index(["unit", "time"])
