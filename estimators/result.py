"""One frozen result type for every method.

An :class:`Estimate` holds numbers, never data: O(terms), not O(rows), because results
cross process boundaries thousands of times in a Monte Carlo run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import special

TERM_COLUMNS = (
    "term",
    "estimate",
    "std_error",
    "statistic",
    "p_value",
    "conf_low",
    "conf_high",
)


def _empty_terms() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object if c == "term" else float) for c in TERM_COLUMNS})


@dataclass(frozen=True, eq=False)
class Estimate:
    """The result of any didlab estimator.

    Attributes
    ----------
    estimator
        Label of the estimator that produced it (``twfe``, ``event_study``, ...).
    term
        Name of the headline quantity (``ATT``, ``ATT_post``...).
    estimate, std_error, p_value, conf_low, conf_high
        Headline estimate and its inference at level ``1 - alpha``.
    alpha
        Significance level of the interval; a result never relabels its interval.
    n_obs, n_units, n_clusters
        Sample sizes of the fit (``n_clusters`` is 0 without clustering).
    inference
        How the SE and p-value were obtained, e.g. ``"cluster(unit), ssc=stata, t(29)"``.
    terms
        Tidy detail (``term, estimate, std_error, statistic, p_value, conf_low, conf_high``
        and method-specific columns): coefficients, event-time effects, etc.
    diagnostics
        Scalars such as the pre-trend p-value.
    notes
        Human-readable remarks (absorbed regressors, dropped rows...).
    event_cov
        Covariance matrix of the event-time terms (``ev-k`` ... ``ev+k``), what honest
        sensitivity analysis (:mod:`estimators.sensitivity`) needs.
    """

    estimator: str
    term: str
    estimate: float
    std_error: float
    p_value: float
    conf_low: float
    conf_high: float
    alpha: float
    n_obs: int
    n_units: int
    n_clusters: int
    inference: str
    terms: pd.DataFrame = field(default_factory=_empty_terms)
    diagnostics: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    #: covariance of the event-time terms (labelled by term), for sensitivity analysis;
    #: None where the method has no event-time terms
    event_cov: pd.DataFrame | None = None

    @property
    def statistic(self) -> float:
        """The headline t (or z) statistic, estimate / std_error."""
        return self.estimate / self.std_error if self.std_error > 0 else float("nan")

    def headline(self) -> dict[str, Any]:
        """The headline as one flat record (what a Monte Carlo run stores per fit)."""
        return {
            "estimator": self.estimator,
            "term": self.term,
            "estimate": self.estimate,
            "std_error": self.std_error,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "conf_low": self.conf_low,
            "conf_high": self.conf_high,
            "alpha": self.alpha,
            "n_obs": self.n_obs,
            "n_units": self.n_units,
            "n_clusters": self.n_clusters,
            "inference": self.inference,
        }

    def tidy(self) -> pd.DataFrame:
        """Headline row followed by the detail rows, with the tidy column set."""
        head = pd.DataFrame([{c: self.headline()[c] for c in TERM_COLUMNS}])
        head["role"] = "headline"
        detail = self.terms.copy()
        detail["role"] = "detail"
        out = pd.concat([head, detail], ignore_index=True) if len(detail) else head
        out.insert(0, "estimator", self.estimator)
        return out

    def __repr__(self) -> str:
        return (
            f"Estimate({self.estimator}: {self.term}={self.estimate:.4g}, "
            f"se={self.std_error:.3g}, p={self.p_value:.3g}, n={self.n_obs})"
        )

    def __str__(self) -> str:
        level = int(round(100 * (1 - self.alpha)))
        lines = [
            f"{self.estimator}: {self.term}",
            f"  estimate {self.estimate: .5f}   std. error {self.std_error:.5f}   "
            f"p-value {self.p_value:.4f}",
            f"  {level}% CI [{self.conf_low: .5f}, {self.conf_high: .5f}]",
            f"  n_obs {self.n_obs}, units {self.n_units}, clusters {self.n_clusters}; "
            f"inference: {self.inference}",
        ]
        if len(self.terms):
            cols = [c for c in TERM_COLUMNS if c in self.terms.columns]
            with pd.option_context("display.width", 120, "display.max_rows", 60):
                body = self.terms[cols].to_string(index=False, float_format=lambda x: f"{x: .4f}")
            lines.append("  terms:")
            lines.extend("    " + ln for ln in body.splitlines())
        for k, v in self.diagnostics.items():
            lines.append(f"  {k}: {v:.4g}" if isinstance(v, (int, float)) else f"  {k}: {v}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


# scipy.special rather than scipy.stats: the distribution objects cost ~100 us a call, which
# dominates a 30x19 fit inside Monte Carlo and permutation loops.
def critical_value(alpha: float, df: float | None) -> float:
    """Two-sided critical value: Student t with ``df`` degrees of freedom, normal if None."""
    if df is None:
        return float(special.ndtri(1 - alpha / 2))
    return float(special.stdtrit(df, 1 - alpha / 2))


def p_value(stat: np.ndarray | float, df: float | None) -> np.ndarray | float:
    """Two-sided p-value of a t (``df`` given) or z statistic."""
    stat = np.abs(stat)
    if df is None:
        return 2 * special.ndtr(-stat)
    return 2 * special.stdtr(df, -stat)


def terms_frame(
    names: list[str],
    est: np.ndarray,
    se: np.ndarray,
    alpha: float,
    df: float | None,
    **extra: Any,
) -> pd.DataFrame:
    """Build a tidy ``terms`` frame from estimates and SEs with a common reference law."""
    est = np.asarray(est, dtype=float)
    se = np.asarray(se, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.where(se > 0, est / se, np.nan)
    crit = critical_value(alpha, df)
    # one constructor call over plain arrays: inserting columns one by one costs ~50 us each
    cols: dict[str, Any] = {
        "term": np.asarray(names, dtype=object),
        "estimate": est,
        "std_error": se,
        "statistic": stat,
        "p_value": p_value(stat, df),
        "conf_low": est - crit * se,
        "conf_high": est + crit * se,
    }
    cols.update({k: np.asarray(v) for k, v in extra.items()})
    return pd.DataFrame(cols, copy=False)
