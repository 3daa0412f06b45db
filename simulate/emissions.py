"""Carbon accounting as seed 002 does it: the IPCC emission-factor method (its Table 2).

``CE = sum_n E_n * e_n * delta_n`` where ``E_n`` is the physical quantity of fuel ``n``
(10^4 t, or 10^8 m^3 for natural gas), ``e_n`` its standard-coal conversion factor and
``delta_n`` its carbon emission factor (kg per kg of standard coal).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from estimators.panel import PanelError

#: fuel -> (standard-coal conversion factor e_n, emission factor delta_n); seed 002 Table 2.
EMISSION_FACTORS: dict[str, tuple[float, float]] = {
    "coal": (0.7143, 0.7559),
    "coke": (0.9714, 0.8550),
    "crude_oil": (1.4286, 0.5857),
    "gasoline": (1.4714, 0.5538),
    "kerosene": (1.4714, 0.5714),
    "diesel": (1.4571, 0.5914),
    "fuel_oil": (1.4286, 0.6185),
    "natural_gas": (1.2143, 0.4483),
}
FUELS = tuple(EMISSION_FACTORS)

#: national mix of the non-coal fuels in standard-coal terms (shares sum to one); coal's
#: own share is the covariate ``es``.
NON_COAL_MIX: dict[str, float] = {
    "coke": 0.12,
    "crude_oil": 0.26,
    "gasoline": 0.12,
    "kerosene": 0.03,
    "diesel": 0.19,
    "fuel_oil": 0.05,
    "natural_gas": 0.23,
}


def carbon_emissions(fuels: Mapping[str, np.ndarray]) -> np.ndarray:
    """Carbon emissions from fuel quantities by the IPCC factor formula (seed 002, Table 2).

    Parameters
    ----------
    fuels
        Mapping from each of the eight fuels in :data:`FUELS` to its physical quantity.

    Returns
    -------
    numpy.ndarray
        ``sum_n E_n * e_n * delta_n``.
    """
    missing = [f for f in FUELS if f not in fuels]
    if missing:
        raise PanelError(f"fuel {missing[0]!r} is missing; the formula needs all of {list(FUELS)}")
    total: Any = 0.0
    term = None
    for name, (coal_equiv, factor) in EMISSION_FACTORS.items():
        q = np.asarray(fuels[name], dtype=float)
        if (q < 0).any():
            raise PanelError(f"fuel {name!r} has a negative quantity")
        # total + q * coal_equiv * factor, rounded as written, in reused buffers (the
        # simulator calls this on every replicate: fresh temporaries cost more than the
        # arithmetic)
        if term is None or term.shape != q.shape:
            term = np.multiply(q, coal_equiv)
        else:
            np.multiply(q, coal_equiv, out=term)
        term *= factor
        if isinstance(total, np.ndarray) and total.shape == term.shape:
            total += term
        else:
            total = total + term
    return np.asarray(total)


def emission_factor_of_mix(coal_share: np.ndarray, non_coal_mix: np.ndarray | None = None) -> np.ndarray:
    """Carbon per unit of standard coal for an energy mix with coal share ``coal_share``.

    ``non_coal_mix`` has one row per observation (or one row for all) over the seven
    non-coal fuels in :data:`NON_COAL_MIX` order; it defaults to the national mix.
    """
    names = list(NON_COAL_MIX)
    mix = np.array([NON_COAL_MIX[n] for n in names]) if non_coal_mix is None else non_coal_mix
    other = np.asarray(mix) @ np.array([EMISSION_FACTORS[n][1] for n in names])
    return coal_share * EMISSION_FACTORS["coal"][1] + (1 - coal_share) * other


def fuels_for_emissions(
    emissions: np.ndarray, coal_share: np.ndarray, non_coal_mix: np.ndarray
) -> dict[str, np.ndarray]:
    """Physical fuel quantities that produce ``emissions`` with the given energy mix.

    Total energy in standard coal is ``emissions / factor(mix)``; coal takes ``coal_share``
    of it and the other fuels split the rest by ``non_coal_mix`` (rows sum to one). Feeding
    the result to :func:`carbon_emissions` returns ``emissions``.
    """
    energy = emissions / emission_factor_of_mix(coal_share, non_coal_mix)
    # each fuel is written into one block, the arithmetic rounded as written:
    # coal = energy * coal_share / c; other = energy * (1 - coal_share) * share / c, whose
    # first product is the same for every fuel (computed once); a broadcast mix's share is
    # made contiguous first. The simulator calls this on every replicate, where fresh
    # temporaries cost more than the arithmetic
    shape = np.broadcast_shapes(energy.shape, np.shape(coal_share))
    block = np.empty((len(NON_COAL_MIX) + 1, *shape))
    np.multiply(energy, coal_share, out=block[0, ...])
    block[0, ...] /= EMISSION_FACTORS["coal"][0]
    out = {"coal": block[0, ...]}
    rest = np.multiply(energy, 1 - coal_share, out=energy if energy.shape == shape else None)
    for j, name in enumerate(NON_COAL_MIX, start=1):
        share = np.ascontiguousarray(non_coal_mix[..., j - 1])
        np.multiply(rest, share, out=block[j, ...])
        block[j, ...] /= EMISSION_FACTORS[name][0]
        out[name] = block[j, ...]
    return out
