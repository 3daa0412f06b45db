"""Cluster (block) bootstrap draws shared by the estimators that resample units."""

from __future__ import annotations

import numpy as np


def draw_units(groups: np.ndarray, n_boot: int, rng: np.random.Generator,
               stratified: bool = False) -> np.ndarray:
    """Unit indices of ``n_boot`` cluster-bootstrap samples, ``(n_boot, n_units)``.

    Each row draws ``n_units`` units with replacement (``stratified``: within each group,
    e.g. cohort or treated/control, keeping the group sizes, so every draw has treated and
    control units). Slot ``j`` of a row becomes unit ``j`` of the resampled panel: a unit
    drawn twice counts as two units.
    """
    n = groups.size
    if not stratified:
        return rng.integers(0, n, size=(n_boot, n))
    out = np.empty((n_boot, n), dtype=np.int64)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        out[:, idx] = idx[rng.integers(0, idx.size, size=(n_boot, idx.size))]
    return out
