"""Composite indices built from many indicators, as seed 001 builds "new quality productive
forces": the entropy-weight method."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from estimators.panel import OptionError, PanelError


def entropy_weights(frame: pd.DataFrame, directions: Mapping[str, int]) -> tuple[pd.Series, pd.Series]:
    """Entropy-weight index of the indicators in ``directions`` (+1: more is better,
    -1: less is better).

    1. min-max normalise each indicator (reversed for -1) to [0, 1];
    2. shares ``p_ij = z_ij / sum_i z_ij``;
    3. entropy ``e_j = -(1/ln n) sum_i p_ij ln p_ij`` (with 0 ln 0 = 0);
    4. weights ``w_j = (1 - e_j) / sum_j (1 - e_j)``: indicators that vary more weigh more;
    5. index ``sum_j w_j z_ij``.

    Returns the index (aligned with ``frame``) and the weights.
    """
    if not directions:
        raise OptionError("entropy_weights needs at least one indicator")
    z = {}
    for col, sign in directions.items():
        if col not in frame.columns:
            raise PanelError(f"indicator {col!r} is not a column; columns: {list(frame.columns)[:20]}")
        if sign not in (1, -1):
            raise OptionError(f"direction of {col!r} is {sign!r}; use 1 (more is better) or -1")
        x = frame[col].to_numpy(dtype=float)
        if np.isnan(x).any():
            raise PanelError(f"indicator {col!r} has {int(np.isnan(x).sum())} missing value(s)")
        lo, hi = x.min(), x.max()
        if hi == lo:
            raise PanelError(f"indicator {col!r} does not vary; it carries no information")
        z[col] = (x - lo) / (hi - lo) if sign == 1 else (hi - x) / (hi - lo)
    zmat = np.column_stack(list(z.values()))
    n = zmat.shape[0]
    p = zmat / zmat.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)
    e = -plogp.sum(axis=0) / np.log(n)
    w = (1 - e) / (1 - e).sum()
    return (pd.Series(zmat @ w, index=frame.index, name="entropy_index"),
            pd.Series(w, index=list(z), name="weight"))
