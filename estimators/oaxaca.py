"""Oaxaca-Blinder decomposition of the pilot / non-pilot gap (seed 000's "differential
decomposition")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .catalog import renamed
from .panel import (COHORT, UNIT, EstimationError, OptionError, PanelError, check_alpha, check_choice,
                    check_count)
from .resample import draw_units
from .result import Estimate, critical_value, terms_frame

REFERENCES = ("A", "B", "pooled", "neumark", "cotton", "reimers")


def _ols(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return coef


def decompose(y: np.ndarray, x: np.ndarray, group_a: np.ndarray, reference: str) -> dict[str, np.ndarray]:
    """Twofold and threefold decompositions of ``mean(y|A) - mean(y|B)``.

    ``x`` includes the constant. Reference coefficients ``b*``: group A's, group B's, the
    pooled regression with the group indicator (``pooled``), without it (``neumark``),
    the size-weighted mean of the two groups' (``cotton``) or their plain mean
    (``reimers``). Returns per-covariate detail and totals.
    """
    a, b = group_a, ~group_a
    if a.sum() <= x.shape[1] or b.sum() <= x.shape[1]:
        raise EstimationError("each group needs more observations than covariates")
    beta_a, beta_b = _ols(y[a], x[a]), _ols(y[b], x[b])
    xa, xb = x[a].mean(axis=0), x[b].mean(axis=0)
    if reference == "A":
        ref = beta_a
    elif reference == "B":
        ref = beta_b
    elif reference == "pooled":
        ref = _ols(y, np.column_stack([x, a.astype(float)]))[:-1]
    elif reference == "neumark":
        ref = _ols(y, x)
    elif reference == "cotton":
        wa = a.sum() / a.size
        ref = wa * beta_a + (1 - wa) * beta_b
    else:
        ref = 0.5 * (beta_a + beta_b)
    explained = (xa - xb) * ref
    unexplained = xa * (beta_a - ref) + xb * (ref - beta_b)
    return {
        "explained": explained, "unexplained": unexplained,
        "endowments": (xa - xb) * beta_b, "coefficients": xb * (beta_a - beta_b),
        "interaction": (xa - xb) * (beta_a - beta_b),
        "gap": np.array([y[a].mean() - y[b].mean()]),
    }


@renamed(group="by")
@dataclass(frozen=True)
class OaxacaBlinder:
    """Decompose the gap in ``outcome`` between group A (default: pilots, ``cohort > 0``;
    or ``by`` = a 0/1 column; before: ``group``) and group B into the part explained by different
    covariates and the unexplained part (twofold, with a choice of reference coefficients),
    and into endowments, coefficients and interaction (threefold), with the contribution
    of every covariate. Observations are unit-periods, optionally restricted by ``sample``
    (a pandas query, e.g. ``"time >= 2012"``). Standard errors from a bootstrap that
    resamples units within groups (``n_boot`` draws; ``rng`` needed), since a unit's
    periods are not independent.

    The decomposition is descriptive: "unexplained" is not a causal effect of the policy.
    """

    outcome: str
    covariates: Sequence[str] = ()
    by: str | None = None
    reference: str = "pooled"
    sample: str | None = None
    n_boot: int = 499
    alpha: float = 0.05
    label: str = "oaxaca"

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        check_choice("reference", self.reference, REFERENCES)
        check_count("n_boot", self.n_boot, 0)
        check_alpha(self.alpha)
        if self.outcome in tuple(self.covariates):
            raise OptionError(f"covariates {list(self.covariates)} must not include the outcome")
        if self.sample is not None and not isinstance(self.sample, str):
            raise OptionError(f"sample={self.sample!r} must be a pandas query string or None")

    def _data(self, panel: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        self.check()
        data = panel.query(self.sample) if self.sample else panel
        cols = [self.outcome, *self.covariates]
        missing = [c for c in cols + ([self.by] if self.by else []) if c not in data.columns]
        if missing:
            raise PanelError(f"column {missing[0]!r} is not in the panel")
        if data[cols].isna().any().any():
            raise PanelError(f"missing values in {cols}")
        y = data[self.outcome].to_numpy(float)
        x = np.column_stack([np.ones(len(data))] + [data[c].to_numpy(float) for c in self.covariates])
        grp = (data[self.by].to_numpy() == 1) if self.by else (data[COHORT].to_numpy() > 0)
        if grp.all() or not grp.any():
            raise EstimationError("both groups must be present in the sample")
        return y, x, grp, data[UNIT].to_numpy()

    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        y, x, grp, units = self._data(panel)
        parts = decompose(y, x, grp, self.reference)
        names = ["(constant)", *self.covariates]
        rows, values = [], []
        for comp in ("explained", "unexplained", "endowments", "coefficients", "interaction"):
            for n, v in zip(names, parts[comp]):
                rows.append(f"{comp}:{n}")
                values.append(v)
            rows.append(comp)
            values.append(parts[comp].sum())
        rows.append("gap")
        values.append(parts["gap"][0])
        values = np.asarray(values)
        se = np.full(values.size, np.nan)
        inference = "no standard errors (n_boot=0)"
        if self.n_boot > 0:
            if rng is None:
                raise OptionError("the bootstrap needs a generator: fit(panel, rng=...)")
            uniq, inv = np.unique(units, return_inverse=True)
            unit_group = np.zeros(uniq.size, dtype=int)
            unit_group[inv] = grp.astype(int)
            rows_of = [np.flatnonzero(inv == k) for k in range(uniq.size)]
            draws = draw_units(unit_group, self.n_boot, rng, stratified=True)
            boot = np.empty((self.n_boot, values.size))
            for b, pick in enumerate(draws):
                idx = np.concatenate([rows_of[k] for k in pick])
                p = decompose(y[idx], x[idx], grp[idx], self.reference)
                vals = []
                for comp in ("explained", "unexplained", "endowments", "coefficients", "interaction"):
                    vals.extend(p[comp])
                    vals.append(p[comp].sum())
                vals.append(p["gap"][0])
                boot[b] = vals
            se = boot.std(axis=0, ddof=1)
            inference = f"bootstrap of units within groups ({self.n_boot} draws), normal"
        terms = terms_frame(rows, values, se, self.alpha, None)
        h = rows.index("unexplained")
        crit = critical_value(self.alpha, None)
        return Estimate(
            estimator=self.label, term="unexplained", estimate=float(values[h]),
            std_error=float(se[h]), p_value=float(terms["p_value"].iloc[h]),
            conf_low=float(values[h] - crit * se[h]), conf_high=float(values[h] + crit * se[h]),
            alpha=self.alpha, n_obs=int(y.size), n_units=int(np.unique(units).size),
            n_clusters=int(np.unique(units).size), inference=inference, terms=terms,
            diagnostics={"gap": float(parts["gap"][0]),
                         "share_explained": float(parts["explained"].sum() / parts["gap"][0])},
            notes=(f"reference coefficients: {self.reference}; group A = "
                   f"{self.by + ' == 1' if self.by else 'pilots (cohort > 0)'}",),
        )
