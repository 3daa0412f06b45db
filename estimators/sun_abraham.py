"""Sun and Abraham (2021) interaction-weighted event study."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .design import codes_of, event_time, fe_arrays
from .catalog import renamed
from .panel import excluding_always_treated, COHORT, EstimationError, OptionError, check_choice, check_panel
from .result import Estimate, critical_value, p_value
from .regression import InferenceOptions, fit_fe

#: comparison groups: never-treated units, or the last-treated cohort (fixest's sunab
#: default when there is no never-treated unit); R did's spelling
CONTROL_GROUPS = ("nevertreated", "lasttreated")
#: old spellings of control_group (one release)
_OLD_CONTROL = {"never": "nevertreated", "last": "lasttreated"}


def _cells(cohort: np.ndarray, rel: np.ndarray, ref: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The cohort x event-time cells of the treated rows (event time ``ref`` excluded),
    sorted by cohort then event time, and each row's cell index (-1: in no cell)."""
    cohort = np.asarray(cohort, dtype=float)
    inside = (cohort > 0) & ~np.isnan(rel) & (rel != ref)
    cell_of = np.full(cohort.size, -1, dtype=np.intp)
    if not inside.any():
        return [], cell_of
    g_codes, _ = codes_of(cohort[inside])
    e = rel[inside].astype(np.int64)
    e_min = int(e.min())
    span = int(e.max()) - e_min + 1
    key = g_codes * span + (e - e_min)
    uniq, idx = np.unique(key, return_inverse=True)
    cell_of[inside] = idx.ravel()
    g_levels = np.unique(cohort[inside])
    cells = [(int(g_levels[k // span]), int(k % span) + e_min) for k in uniq]
    return cells, cell_of


@renamed(control=("control_group", lambda old, new: _OLD_CONTROL.get(old, old)))
@dataclass(frozen=True)
class SunAbraham(InferenceOptions):
    """Interaction-weighted (IW) event study of Sun and Abraham (2021).

    Regress the outcome on unit and period effects and a full set of cohort x relative-time
    indicators (reference ``ref``), estimated with a clean comparison cohort
    (never-treated units, or the last-treated cohort when ``control_group="lasttreated"``; its
    periods from its own treatment on are dropped). Each event-time effect is the average
    of the cohort-specific effects CATT(g, e) weighted by the cohorts' shares of the
    observations at that event time; the headline ``ATT`` weights every post-treatment
    cell by its number of observations (fixest's ``sunab(..., att = TRUE)``). With
    ``weights`` (a column of observation weights) the regression is weighted and each cell
    counts by its total weight.

    Notes
    -----
    Identification: parallel trends between every treated cohort and the comparison
    cohort, no anticipation. Standard errors treat the cohort shares as fixed (as fixest's
    aggregation does) and use the cluster-robust covariance of the interaction
    coefficients (``ssc`` as in :class:`~estimators.twfe.TWFE`). The inference options
    ``cluster``, ``se``, ``ssc``, ``dist`` and ``alpha`` are keyword only
    (:class:`~estimators.regression.InferenceOptions`).
    """

    outcome: str
    controls: Sequence[str] = ()
    control_group: str = "nevertreated"
    ref: int = -1
    weights: str | None = None
    label: str = "sun_abraham"

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        self.check_inference()
        check_choice("control_group", self.control_group, CONTROL_GROUPS)
        if self.ref >= 0:
            raise OptionError(f"ref={self.ref} must be a pre-treatment event time (negative)")

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Estimate the interaction-weighted event study; ``rng`` is not used."""
        self.check()
        cluster = self.cluster_column
        check_panel(panel, (self.outcome,), tuple(self.controls))
        data, notes = self._comparison_sample(panel)
        cohort = data[COHORT].to_numpy()
        rel = event_time(data)
        cells, cell_of = _cells(cohort, rel, self.ref)
        if not cells:
            raise EstimationError("no treated cohort-period cell to estimate")
        cell_names = [f"g{g}:e{e:+d}" for g, e in cells]
        rows = np.flatnonzero(cell_of >= 0)
        mat = np.zeros((cell_of.size, len(cells)))
        mat[rows, cell_of[rows]] = 1.0
        arrays = fe_arrays(data, self.outcome, tuple(self.controls), cluster=cluster,
                           extra_matrix=(cell_names, mat), validate=False, extra_first=True,
                           weights=self.weights)
        del mat  # fe_arrays holds it (as x, or copied into x)
        res = fit_fe(arrays, self.se, self.ssc, self.dist)
        ids = res.identified
        coef = dict(zip(ids, res.fit.coef))
        # each cell's share in an aggregate: its number of observations, or with weights
        # its total weight
        wt = data[self.weights].to_numpy(float) if self.weights else None
        tally = np.bincount(cell_of[rows], weights=None if wt is None else wt[rows],
                            minlength=len(cells)).astype(float)
        counts = dict(zip(cell_names, tally))
        events = sorted({e for _, e in cells})
        rows, weights = [], []
        for e in events:
            names = [f"g{g}:e{e:+d}" for g, ee in cells if ee == e and f"g{g}:e{e:+d}" in coef]
            if not names:
                continue
            w = np.zeros(len(ids))
            total = sum(counts[n] for n in names)
            for n in names:
                w[ids.index(n)] = counts[n] / total
            rows.append(e)
            weights.append(w)
        post = [n for n in ids if n.startswith("g") and int(n.split(":e")[1]) >= 0]
        if not post:
            raise EstimationError("no post-treatment cell is identified")
        w_att = np.zeros(len(ids))
        total = sum(counts[n] for n in post)
        for n in post:
            w_att[ids.index(n)] = counts[n] / total
        wmat = np.vstack(weights + [w_att])
        est = wmat @ res.fit.coef
        se = np.sqrt(np.einsum("ij,jk,ik->i", wmat, res.cov, wmat))
        crit = critical_value(self.alpha, res.df)
        stat = est / se
        names = [f"ev{e:+d}" for e in rows] + ["ATT"]
        terms = pd.DataFrame({
            "term": names, "estimate": est, "std_error": se, "statistic": stat,
            "p_value": p_value(stat, res.df), "conf_low": est - crit * se,
            "conf_high": est + crit * se,
            "event_time": np.r_[np.asarray(rows, dtype=float), np.nan],
        })
        ev_cov = wmat[:-1] @ res.cov @ wmat[:-1].T
        ev_names = [f"ev{e:+d}" for e in rows]
        cell_terms = res.terms(self.alpha)
        terms = pd.concat([terms, cell_terms.assign(event_time=np.nan)], ignore_index=True)
        return Estimate(
            estimator=self.label, term="ATT", estimate=float(est[-1]), std_error=float(se[-1]),
            p_value=float(terms["p_value"].iloc[len(rows)]), conf_low=float(est[-1] - crit * se[-1]),
            conf_high=float(est[-1] + crit * se[-1]), alpha=self.alpha, n_obs=res.dof.n_obs,
            n_units=res.dof.n_units, n_clusters=res.dof.n_clusters,
            inference=self.describe_inference(res.df)
            + ", cohort shares fixed",
            terms=terms, diagnostics={"n_cells": float(len(cells))}, notes=tuple(notes),
            event_cov=pd.DataFrame(ev_cov, index=ev_names, columns=ev_names),
        )

    def _comparison_sample(self, panel: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        """The rows the regression uses: all of them with a never-treated comparison;
        otherwise (or with ``control_group="lasttreated"``) the periods before the last
        cohort's adoption, that cohort relabelled as the comparison (cohort 0). Sun and
        Abraham (2021, sec. 4.1): the last-treated cohort is a valid comparison only
        until it is treated, so later periods identify no effect."""
        cohort = panel[COHORT].to_numpy()
        if not (self.control_group == "lasttreated" or not (cohort == 0).any()):
            return panel, []
        last = cohort.max()
        notes = []
        if not (cohort == 0).any():
            notes.append(f"no never-treated unit: the last cohort ({last}) is the comparison")
        data = panel.loc[panel["time"].to_numpy() < last].copy()
        data[COHORT] = np.where(data[COHORT] == last, 0, data[COHORT])
        return data, notes

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True effects on a simulated panel (``te_<outcome>``) over the cells the
        regression estimates (:meth:`_comparison_sample`), weighted as its aggregation:
        ``ev+k`` the mean effect at event time k (minus that at ``ref``), ``ATT`` the mean
        over every post-treatment cell's observations (with ``weights``, weighted means)."""
        self.check()
        data, _ = self._comparison_sample(panel)
        te = data[f"te_{self.outcome}"].to_numpy(float)
        wt = (data[self.weights].to_numpy(float) if self.weights
              else np.ones(te.size))
        rel = event_time(data)
        inside = ~np.isnan(rel) & (data[COHORT].to_numpy() > 0)

        def mean(m: np.ndarray) -> float:
            return float((wt[m] * te[m]).sum() / wt[m].sum())

        ev = {int(k): mean(inside & (rel == k)) for k in np.unique(rel[inside])}
        base = ev.get(self.ref, 0.0)
        out = {f"ev{k:+d}": v - base for k, v in ev.items()}
        out["ATT"] = mean(inside & (rel >= 0))
        return out
