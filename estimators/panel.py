"""The panel contract: canonical column names, validation and the didlab error types.

Every estimator, the simulators and the real-data loader go through :func:`validate_panel`,
so a defect in a panel is reported once, the same way, naming the column and the rows.

A panel is a long :class:`pandas.DataFrame`, one row per (unit, period), with

========  =====================================================================
``unit``    unit id (province, city, firm)
``time``    integer period (year)
``cohort``  first treated period; 0 for never treated (the convention of R ``did``)
``d``       1 if the unit is treated in that period (the studies' ``policytime``)
========  =====================================================================

plus outcome and covariate columns. Simulated panels add ``y0_<outcome>`` (the untreated
potential outcome) and ``te_<outcome>`` (the unit-period treatment effect).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np
import pandas as pd

UNIT = "unit"
TIME = "time"
COHORT = "cohort"
D = "d"
KEYS = (UNIT, TIME)
CANONICAL = (UNIT, TIME, COHORT, D)


class DidlabError(ValueError):
    """Base class of every error didlab raises for bad data, options or configuration.

    The message names the column, key or value at fault and what would be accepted; the
    command line prints it as one line and exits with status 2.
    """


class PanelError(DidlabError):
    """A panel violates the data contract."""


class OptionError(DidlabError):
    """An estimator or simulator option has a value outside the accepted set."""


class EstimationError(DidlabError):
    """An estimator cannot produce an estimate on this panel (no variation, singular design)."""


def show(value: object) -> str:
    """A value as the user wrote it: numpy scalars as plain numbers (``0``, not
    ``np.int64(0)``), strings quoted."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def check_choice(name: str, value: object, allowed: Iterable[object]) -> None:
    """Raise :class:`OptionError` unless ``value`` is one of ``allowed``, listing them."""
    allowed = tuple(allowed)
    if value not in allowed:
        shown = ", ".join(show(a) for a in allowed)
        raise OptionError(f"{name}={show(value)} is not accepted; use one of {shown}")


def check_alpha(alpha: float, name: str = "alpha") -> None:
    """Raise :class:`OptionError` unless ``0 < alpha < 1``."""
    if not isinstance(alpha, (int, float, np.floating)) or not 0 < alpha < 1:
        raise OptionError(f"{name}={show(alpha)} must lie strictly between 0 and 1")


def check_count(name: str, value: object, minimum: int = 0, optional: bool = False) -> None:
    """Raise :class:`OptionError` unless ``value`` is an integer >= ``minimum`` (or None
    when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        extra = " or None" if optional else ""
        raise OptionError(f"{name}={show(value)} must be an integer >= {minimum}{extra}")


@dataclass(frozen=True)
class PanelInfo:
    """What :func:`validate_panel` learned about a panel (no data, only its shape)."""

    n_obs: int
    n_units: int
    n_periods: int
    balanced: bool
    n_treated_units: int
    n_never_treated: int
    cohorts: tuple[int, ...]
    first_period: int
    last_period: int

    def describe(self) -> str:
        shape = "balanced" if self.balanced else "UNBALANCED"
        return (
            f"{self.n_obs} obs, {self.n_units} units x {self.n_periods} periods "
            f"({self.first_period}-{self.last_period}, {shape}); "
            f"{self.n_treated_units} treated units in cohorts {list(self.cohorts)}, "
            f"{self.n_never_treated} never treated"
        )


def _where(df: pd.DataFrame, mask: np.ndarray, limit: int = 3) -> str:
    rows = df.loc[mask, [c for c in KEYS if c in df.columns]].head(limit)
    if rows.empty:
        return ""
    pairs = ", ".join(
        "(" + ", ".join(f"{k}={show(v)}" for k, v in r.items()) + ")" for r in rows.to_dict("records")
    )
    more = " ..." if int(mask.sum()) > limit else ""
    return f" at {pairs}{more}"


def validate_panel(
    panel: pd.DataFrame,
    outcomes: Sequence[str] = (),
    covariates: Sequence[str] = (),
    *,
    require_treatment: bool = True,
    require_controls: bool = True,
) -> PanelInfo:
    """Check a panel against the data contract and describe it (see :func:`check_panel`)."""
    return check_panel(panel, outcomes, covariates, require_treatment=require_treatment,
                       require_controls=require_controls)[0]


def check_panel(
    panel: pd.DataFrame,
    outcomes: Sequence[str] = (),
    covariates: Sequence[str] = (),
    *,
    require_treatment: bool = True,
    require_controls: bool = True,
    absorbing: bool = True,
) -> tuple[PanelInfo, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Check a panel against the data contract and describe it.

    Parameters
    ----------
    panel
        Long panel with the canonical columns.
    outcomes, covariates
        Columns the caller will use; each must exist, be numeric and have no missing value.
    require_treatment, require_controls
        Demand at least one treated unit / at least one never-treated or not-yet-treated
        comparison unit.
    absorbing
        Demand that treatment never switches off (``d == 1`` exactly from ``cohort`` on).
        ``False`` is for estimators of non-absorbing designs (``estimators.dcdh``): ``d``
        may switch off and on again, and ``cohort`` must be the first period with
        ``d == 1`` (0 if never treated).

    Returns
    -------
    info : PanelInfo
        Shape of the panel. Unbalanced panels are accepted and reported (``balanced``), never
        silently balanced.
    unit_codes, time_codes : numpy.ndarray
        Integer codes (0..n-1, sorted levels) of ``unit`` and ``time`` for each row, so that
        callers do not factorise the keys twice.
    arrays : dict
        The checked numeric columns as float arrays (``time``, ``cohort``, ``d``, outcomes,
        covariates), for the same reason.

    Raises
    ------
    PanelError
        Missing column, duplicate (unit, time) rows, non-numeric or missing values, ``d``
        inconsistent with ``cohort``, no treated or no control units.
    """
    if not isinstance(panel, pd.DataFrame):
        raise PanelError(f"a panel must be a pandas DataFrame, got {type(panel).__name__}")
    if len(panel) == 0:
        raise PanelError("the panel has no rows")

    def missing_error() -> PanelError:
        needed = list(CANONICAL) + [c for c in (*outcomes, *covariates) if c not in CANONICAL]
        missing = [c for c in needed if c not in panel.columns]
        return PanelError(
            f"column {missing[0]!r} is missing from the panel"
            + (f" (also missing: {missing[1:]})" if len(missing) > 1 else "")
            + f"; columns present: {list(panel.columns)[:20]}"
        )

    arrays: dict[str, np.ndarray] = {}
    if UNIT not in panel.columns:
        raise missing_error()
    for col in (TIME, COHORT, D, *outcomes, *covariates):
        if col in arrays:
            continue
        try:  # one lookup per column: a membership test first would double the cost
            s = panel[col]
        except KeyError:
            raise missing_error() from None
        dt = s.dtype
        if isinstance(dt, np.dtype) and dt.kind in "biuf":  # plain numpy: the common, fast case
            arrays[col] = s.to_numpy() if dt == np.float64 else s.to_numpy().astype(float)
            continue
        if not (pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt)):
            bad = pd.to_numeric(s, errors="coerce").isna() & s.notna()
            example = s[bad].iloc[0] if bad.any() else s.iloc[0]
            raise PanelError(
                f"column {col!r} must be numeric but holds text such as {example!r}"
                f"{_where(panel, bad.to_numpy())}"
            )
        arrays[col] = s.to_numpy(dtype=float, na_value=np.nan)
    unit_raw = panel[UNIT].to_numpy()
    if unit_raw.dtype.kind not in "biu" and pd.isna(unit_raw).any():
        na = pd.isna(unit_raw)
        raise PanelError(f"column {UNIT!r} has {int(na.sum())} missing value(s){_where(panel, na)}")
    for col, v in arrays.items():
        if np.isfinite(v).all():
            continue
        na = np.isnan(v)
        if na.any():
            raise PanelError(
                f"column {col!r} has {int(na.sum())} missing value(s){_where(panel, na)}; "
                "drop or impute them explicitly before estimation"
            )
        inf = np.isinf(v)
        raise PanelError(
            f"column {col!r} has {int(inf.sum())} infinite value(s){_where(panel, inf)}"
        )

    time = arrays[TIME]
    if not np.all(time == np.round(time)):
        raise PanelError(f"column {TIME!r} must hold integer periods (years)")
    unit, n_units = _codes(unit_raw)
    tcode, n_periods = _codes(time)
    key = unit * n_periods + tcode
    counts = np.bincount(key, minlength=n_units * n_periods)
    if (counts > 1).any():
        dup = counts[key] > 1
        raise PanelError(
            f"{int(dup.sum())} rows share a (unit, time) key{_where(panel, dup)}; "
            "each unit may appear once per period"
        )

    cohort = arrays[COHORT]
    d = arrays[D]
    if not ((d == 0) | (d == 1)).all():
        bad = ~((d == 0) | (d == 1))
        raise PanelError(f"column {D!r} must be 0 or 1{_where(panel, bad)}")
    if (cohort < 0).any() or not np.all(cohort == np.round(cohort)):
        raise PanelError(
            f"column {COHORT!r} must be a non-negative integer period (0 = never treated)"
        )
    unit_cohort = np.zeros(n_units)
    unit_cohort[unit] = cohort  # any row's value; consistency is checked next
    varies = unit_cohort[unit] != cohort
    if varies.any():
        u = unit_raw[varies][0]
        raise PanelError(f"unit {show(u)} has more than one {COHORT!r} value; a cohort is per unit")
    if not absorbing:  # switching off allowed: cohort is still the first treated period
        first = np.full(n_units, np.inf)
        np.minimum.at(first, unit[d == 1], time[d == 1])
        bad = np.where(np.isfinite(first), first, 0)[unit] != cohort
        if bad.any():
            raise PanelError(f"{COHORT!r} must be each unit's first period with {D!r} = 1 "
                             f"(0 if never treated){_where(panel, bad)}")
    expected = (cohort > 0) & (time >= cohort)
    bad = (expected != (d == 1)) if absorbing else np.zeros(0, dtype=bool)
    if bad.any():
        raise PanelError(
            f"{int(bad.sum())} row(s) have {D!r} inconsistent with {COHORT!r} "
            f"(d must be 1 exactly when cohort > 0 and time >= cohort){_where(panel, bad)}; "
            "treatment that switches off is not supported"
        )

    n_treated = int((unit_cohort > 0).sum())
    n_never = int((unit_cohort == 0).sum())
    if require_treatment and n_treated == 0:
        raise PanelError("no treated unit: every unit has cohort 0 (never treated)")
    if require_treatment and not d.any():
        raise PanelError("no treated observation: no unit is observed at or after its cohort")
    if require_controls and n_never == 0:
        # a comparison exists if some unit is untreated in a period where another is treated
        treated_t = np.zeros(n_periods, dtype=bool)
        treated_t[tcode[d == 1]] = True
        if not treated_t[tcode[d == 0]].any():
            raise PanelError(
                "no control unit: every unit is treated whenever any unit is treated"
            )
    info = PanelInfo(
        n_obs=len(panel),
        n_units=int(n_units),
        n_periods=int(n_periods),
        balanced=len(panel) == n_units * n_periods,
        n_treated_units=n_treated,
        n_never_treated=n_never,
        cohorts=tuple(int(c) for c in np.unique(unit_cohort[unit_cohort > 0])),
        first_period=int(time.min()),
        last_period=int(time.max()),
    )
    return info, unit, tcode, arrays


def _codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer codes 0..n-1 of a column's sorted levels, and the number of levels.

    Integer-valued columns with a compact range (years, numeric ids) are coded in O(N)
    through a presence table; anything else goes through a sort (``np.unique``).
    """
    if values.dtype.kind in "iuf" and values.size:
        lo, hi = values.min(), values.max()
        span = hi - lo
        if span <= 4 * values.size + 64 and (values.dtype.kind != "f" or np.all(values == np.round(values))):
            offset = (values - lo).astype(np.intp)
            present = np.zeros(int(span) + 1, dtype=bool)
            present[offset] = True
            lookup = np.cumsum(present) - 1
            return lookup[offset], int(lookup[-1]) + 1
    uniq, inv = np.unique(values, return_inverse=True)
    return inv.astype(np.intp).ravel(), int(uniq.size)


def safe_log(values: np.ndarray | pd.Series, name: str) -> np.ndarray:
    """Natural log that refuses non-positive input, naming the column."""
    v = np.asarray(values, dtype=float)
    bad = ~(v > 0)
    if bad.any():
        raise PanelError(
            f"cannot take the log of {name!r}: {int(bad.sum())} value(s) are zero, negative "
            f"or missing (smallest {np.nanmin(v):g}); use levels or add an explicit offset"
        )
    return np.log(v)


def treatment_from_cohort(cohort: np.ndarray, time: np.ndarray) -> np.ndarray:
    """The treatment indicator ``d`` implied by a cohort column (absorbing treatment)."""
    cohort = np.asarray(cohort)
    return ((cohort > 0) & (np.asarray(time) >= cohort)).astype(np.int8)


def treated_att(panel: pd.DataFrame, outcome: str) -> dict[str, float]:
    """The ATT over treated cells of a simulated panel: ``mean te_<outcome>`` over the
    ``d == 1`` rows (the estimand of TWFE, PSM-DID and DR-DID)."""
    te = panel[f"te_{outcome}"].to_numpy()
    return {"ATT": float(te[panel[D].to_numpy() == 1].mean())}


def always_treated(panel: pd.DataFrame) -> np.ndarray:
    """Rows of units treated in the panel's first period or before (``0 < cohort <= first
    period``): they are never observed untreated."""
    cohort = panel[COHORT].to_numpy()
    return (cohort > 0) & (cohort <= panel[TIME].min())


def drop_always_treated(panel: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The panel without always-treated units, and a note naming how many were excluded.

    A unit treated from the first observed period has no untreated period: it identifies no
    treatment effect and, kept as a comparison, it is an already-treated unit whose effect
    leaks into the estimate. R's ``did`` drops such units with a warning and fixest's
    ``sunab`` bins them out of the interactions; didlab excludes them in every estimator
    and says so in the Estimate's notes.
    """
    if COHORT not in panel.columns or TIME not in panel.columns or not len(panel):
        return panel, None
    mask = always_treated(panel)
    if not mask.any():
        return panel, None
    units = np.unique(panel.loc[mask, UNIT].to_numpy())
    first = panel[TIME].min()
    note = (f"{units.size} always-treated unit(s) (treated in or before the first period, "
            f"{show(first)}) excluded: they have no untreated period (as R's did and fixest do)")
    return panel.loc[~mask], note


_F = TypeVar("_F", bound=Callable[..., Any])


def excluding_always_treated(method: _F) -> _F:
    """Decorator for ``fit``, ``estimand`` and the like: run ``method`` on the panel without
    always-treated units; an Estimate returned gets the note naming how many."""

    @functools.wraps(method)
    def wrapper(self: Any, panel: pd.DataFrame, *args: Any, **kwargs: Any) -> Any:
        kept, note = drop_always_treated(panel)
        if note and not kept[COHORT].gt(0).any():
            raise EstimationError(f"{note}; no other treated unit is left")
        out = method(self, kept, *args, **kwargs)
        if note and dataclasses.is_dataclass(out) and hasattr(out, "notes"):
            out = dataclasses.replace(out, notes=(*out.notes, note))
        return out

    return wrapper  # type: ignore[return-value]
