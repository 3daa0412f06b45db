"""Goodman-Bacon (2021) decomposition of the TWFE DID coefficient into 2x2 comparisons."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .panel import excluding_always_treated, EstimationError, OptionError
from .result import Estimate
from .twfe import TWFE
from .wide import to_wide

TYPES = ("Treated vs never treated", "Earlier vs later treated (later as control)",
         "Later vs earlier treated (earlier as control)")


def _dd(y: np.ndarray, treat: np.ndarray, post: np.ndarray) -> float:
    """2x2 DID on a balanced block: rows units, columns periods."""
    a = y[treat][:, post].mean() - y[treat][:, ~post].mean()
    b = y[~treat][:, post].mean() - y[~treat][:, ~post].mean()
    return float(a - b)


@dataclass(frozen=True)
class BaconDecomposition:
    """Decompose the two-way fixed-effects coefficient (no controls, balanced panel).

    Every pair of timing groups contributes 2x2 DIDs with weights proportional to group
    sizes and the variance of treatment within the pair (Goodman-Bacon 2021, Theorem 1):
    treated vs never treated ``s_kU ∝ (n_k + n_U)^2 n_kU (1 - n_kU) D_k (1 - D_k)``;
    earlier k vs later l before l starts ``∝ ((n_k + n_l)(1 - D_l))^2 n_kl (1 - n_kl)
    (D_k - D_l)/(1 - D_l) (1 - D_k)/(1 - D_l)``; later l vs earlier k after k started
    ``∝ ((n_k + n_l) D_k)^2 n_kl (1 - n_kl) D_l/D_k (D_k - D_l)/D_k``, where ``D`` is the
    share of periods treated. Normalised weights sum to one and the weighted sum of the
    2x2 estimates equals the TWFE coefficient exactly (checked on every fit: the
    difference is in ``diagnostics['twfe_minus_sum']``). Units treated in every period
    form an "always treated" group that enters as an earlier group.
    """

    outcome: str
    label: str = "bacon"

    @excluding_always_treated
    def decompose(self, panel: pd.DataFrame) -> pd.DataFrame:
        w = to_wide(panel, self.outcome, (), "the Goodman-Bacon decomposition")
        periods = w.periods
        t_n = periods.size
        cohort = np.where((w.cohort > 0) & (w.cohort <= periods[0]), periods[0], w.cohort)
        groups = np.unique(cohort[cohort > 0])
        never = cohort == 0
        n = w.n
        share = {g: float((periods >= g).mean()) for g in groups}
        size = {g: float((cohort == g).sum()) / n for g in groups}
        rows = []
        if never.any():
            n_u = float(never.sum()) / n
            for k in groups:
                dk = share[k]
                if dk in (0.0, 1.0):
                    continue
                nku = size[k] / (size[k] + n_u)
                wgt = (size[k] + n_u) ** 2 * nku * (1 - nku) * dk * (1 - dk)
                sel = (cohort == k) | never
                est = _dd(w.y[sel], (cohort[sel] == k), periods >= k)
                rows.append((TYPES[0], k, 0, est, wgt))
        for i, k in enumerate(groups):
            for l in groups[i + 1:]:
                dk, dl = share[k], share[l]
                nkl = size[k] / (size[k] + size[l])
                sel = (cohort == k) | (cohort == l)
                if dk > dl and dl < 1 and dk < 1:
                    wgt = (((size[k] + size[l]) * (1 - dl)) ** 2 * nkl * (1 - nkl)
                           * (dk - dl) / (1 - dl) * (1 - dk) / (1 - dl))
                    window = periods < l
                    est = _dd(w.y[sel][:, window], cohort[sel] == k, (periods >= k)[window])
                    rows.append((TYPES[1], k, l, est, wgt))
                if dk > dl and dl > 0:
                    wgt = (((size[k] + size[l]) * dk) ** 2 * nkl * (1 - nkl)
                           * dl / dk * (dk - dl) / dk)
                    window = periods >= k
                    est = _dd(w.y[sel][:, window], cohort[sel] == l, (periods >= l)[window])
                    rows.append((TYPES[2], l, k, est, wgt))
        if not rows:
            raise EstimationError("no 2x2 comparison: the panel needs treatment-timing variation")
        out = pd.DataFrame(rows, columns=["type", "treated", "control", "estimate", "weight"])
        out["weight"] /= out["weight"].sum()
        del t_n
        return out

    def check(self) -> None:
        """Goodman-Bacon has no option beyond the outcome (balanced panel, no controls)."""
        if not isinstance(self.outcome, str) or not self.outcome:
            raise OptionError(f"outcome={self.outcome!r} must name a column")

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Decompose the TWFE coefficient; ``rng`` is not used."""
        self.check()
        comps = self.decompose(panel)
        twfe = TWFE(self.outcome).fit(panel)
        est_c = comps["estimate"].to_numpy(dtype=float)
        w_c = comps["weight"].to_numpy(dtype=float)
        types = comps["type"].to_numpy(dtype=object)
        total = float((est_c * w_c).sum())
        # by comparison type, in order of first appearance: total weight and the
        # weight-averaged 2x2 estimate (array sums: a groupby cost more than the
        # decomposition on small panels)
        kinds = list(dict.fromkeys(types.tolist()))
        masks = [types == t for t in kinds]
        type_w = np.array([w_c[m].sum() for m in masks])
        type_est = np.array([(est_c[m] * w_c[m]).sum() for m in masks]) / type_w
        n_t, n_p = len(kinds), len(comps)
        none = np.full(n_t, None, dtype=object)
        terms = pd.DataFrame({
            "term": [f"{t}" for t in kinds] + [f"{t}: {a} vs {b}" for t, a, b in
                                                 zip(types, comps["treated"], comps["control"])],
            "estimate": np.concatenate([type_est, est_c]),
            "weight": np.concatenate([type_w, w_c]),
            "level": ["type"] * n_t + ["pair"] * n_p,
            "treated": np.concatenate([none, comps["treated"].to_numpy(dtype=object)]),
            "control": np.concatenate([none, comps["control"].to_numpy(dtype=object)]),
            "type": np.concatenate([none, types]),
            **{c: np.full(n_t + n_p, np.nan)
               for c in ("std_error", "statistic", "p_value", "conf_low", "conf_high")},
        })
        negative = float(comps.loc[comps["type"] == TYPES[2], "weight"].sum())
        return Estimate(
            estimator=self.label, term="ATT", estimate=total, std_error=twfe.std_error,
            p_value=twfe.p_value, conf_low=twfe.conf_low, conf_high=twfe.conf_high,
            alpha=twfe.alpha, n_obs=twfe.n_obs, n_units=twfe.n_units,
            n_clusters=twfe.n_clusters, inference=twfe.inference + " (TWFE's)", terms=terms,
            diagnostics={"twfe_minus_sum": twfe.estimate - total,
                         "weight_forbidden_comparisons": negative,
                         "n_comparisons": float(len(comps))},
            notes=("weight_forbidden_comparisons: weight on 2x2s that use already-treated "
                   "units as controls (biased when effects change over time)",),
        )

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        return TWFE(self.outcome).estimand(panel)
