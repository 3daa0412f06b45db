"""Real panels: read a CSV / Parquet / Stata file, map its columns onto the canonical
names, derive variables, filter, and check it through the panel contract.

Every defect becomes one :class:`~estimators.panel.PanelError` line that names the file
column, unit or year at fault.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from estimators.panel import (COHORT, D, TIME, UNIT, OptionError, PanelError, check_choice,
                              safe_log, show, treatment_from_cohort, check_panel)

FORMATS = ("csv", "parquet", "dta")
EXTENSIONS = {".csv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet", ".dta": "dta"}
FUNCTIONS = ("log", "exp", "lag", "lead", "diff")


def read_table(path: str | Path, fmt: str | None = None) -> pd.DataFrame:
    """Read a file by its extension (or ``fmt``)."""
    p = Path(path)
    if not p.exists():
        raise PanelError(f"data file {str(p)!r} does not exist")
    fmt = fmt or EXTENSIONS.get(p.suffix.lower())
    if fmt is None:
        raise PanelError(f"cannot tell the format of {p.name!r}; use a .csv, .parquet or .dta "
                         "file or set data.format")
    check_choice("data.format", fmt, FORMATS)
    try:
        if fmt == "csv":
            return pd.read_csv(p)
        if fmt == "parquet":
            return pd.read_parquet(p)
        return pd.read_stata(p)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PanelError(f"cannot read {p.name!r} as {fmt}: {first}") from None


# --- derived variables ----------------------------------------------------------------------

class _Evaluator(ast.NodeVisitor):
    """Evaluate a derived-variable expression over a panel sorted by unit and time.

    Allowed: column names, numbers, + - * /, and log(x), exp(x), lag(x, k), lead(x, k),
    diff(x) -- lags and leads within unit.
    """

    def __init__(self, frame: pd.DataFrame, name: str):
        self.frame = frame
        self.name = name

    def fail(self, what: str) -> PanelError:
        return PanelError(f"data.derive.{self.name}: {what}; allowed: column names, numbers, "
                          f"+ - * /, and {', '.join(f + '()' for f in FUNCTIONS)}")

    def visit_Expression(self, node: ast.Expression) -> Any:
        return self.visit(node.body)

    def visit_Name(self, node: ast.Name) -> pd.Series:
        if node.id not in self.frame.columns:
            raise PanelError(f"data.derive.{self.name} uses column {node.id!r}, which is not in "
                             f"the data; columns: {list(self.frame.columns)[:25]}")
        s = self.frame[node.id]
        if not pd.api.types.is_numeric_dtype(s):
            raise PanelError(f"data.derive.{self.name} uses column {node.id!r}, which is not numeric")
        return s.astype(float)

    def visit_Constant(self, node: ast.Constant) -> float:
        if not isinstance(node.value, (int, float)):
            raise self.fail(f"constant {node.value!r} is not a number")
        return float(node.value)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        if isinstance(node.op, ast.USub):
            return -self.visit(node.operand)
        raise self.fail("unsupported unary operator")

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        a, b = self.visit(node.left), self.visit(node.right)
        ops = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide}
        op = ops.get(type(node.op))
        if op is None:
            raise self.fail(f"operator {type(node.op).__name__} is not supported")
        with np.errstate(divide="ignore", invalid="ignore"):
            out = op(a, b)
        if isinstance(node.op, ast.Div) and isinstance(out, pd.Series) and np.isinf(out).any():
            raise PanelError(f"data.derive.{self.name}: division by zero in {int(np.isinf(out).sum())} row(s)")
        return out

    def visit_Call(self, node: ast.Call) -> Any:
        fn = node.func.id if isinstance(node.func, ast.Name) else None
        if fn not in FUNCTIONS:
            raise self.fail(f"function {fn!r} is not supported")
        args = [self.visit(a) for a in node.args]
        if fn == "log":
            x = args[0]
            return pd.Series(safe_log(x, f"{self.name} (log argument)"), index=x.index)
        if fn == "exp":
            return np.exp(args[0])
        k = int(args[1]) if len(args) > 1 else 1
        grouped = args[0].groupby(self.frame[UNIT], sort=False)
        if fn == "lag":
            return grouped.shift(k)
        if fn == "lead":
            return grouped.shift(-k)
        return args[0] - grouped.shift(k)

    def generic_visit(self, node: ast.AST) -> Any:
        raise self.fail(f"{type(node).__name__} is not allowed")


def derive(frame: pd.DataFrame, name: str, expression: str) -> pd.Series:
    """Evaluate one derived-variable expression (see :class:`_Evaluator`)."""
    try:
        tree = ast.parse(str(expression), mode="eval")
    except SyntaxError:
        raise PanelError(f"data.derive.{name}={expression!r} is not a valid expression") from None
    return _Evaluator(frame, name).visit(tree)


# --- loading --------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileSpec:
    """How to read a user's panel (mirrors the ``data=file`` config)."""

    path: str
    format: str | None = None
    unit: str = "unit"
    time: str = "time"
    cohort: str | None = None           # file column: first treated period (0/NaN = never)
    treatment: str | None = None        # file column: 0/1 treatment indicator
    treated_units: Sequence[Any] = ()   # or: these units ...
    treatment_year: int | None = None   # ... are treated from this year
    derive: Mapping[str, str] = field(default_factory=dict)
    # composite indices by the entropy-weight method: name -> {indicator: +1 or -1}
    indices: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    filter: str | None = None
    outcomes: Sequence[str] = ()
    controls: Sequence[str] = ()
    allow_gaps: bool = False
    drop_missing: bool = False          # drop rows with missing values in the used columns
    # a 0/1 treatment may switch off (set when every configured estimator accepts it)
    allow_switching: bool = False


def load_panel(spec: FileSpec) -> tuple[pd.DataFrame, list[str]]:
    """Read, map, derive, filter and check a user's panel.

    Returns the canonical panel and a list of notes (rows dropped, lags that shortened the
    sample) to print beside the results.
    """
    raw = read_table(spec.path, spec.format)
    if len(raw) == 0:
        raise PanelError(f"{Path(spec.path).name!r} has no rows")
    notes: list[str] = [f"read {len(raw)} rows x {raw.shape[1]} columns from {Path(spec.path).name}"]
    for role, col in (("unit", spec.unit), ("time", spec.time), ("cohort", spec.cohort),
                      ("treatment", spec.treatment)):
        if col is not None and col not in raw.columns:
            raise PanelError(f"data.{role}={col!r} is not a column of {Path(spec.path).name}; "
                             f"columns: {list(raw.columns)[:25]}")
    ways = sum(x is not None and x != () and x != [] for x in
               (spec.cohort, spec.treatment, list(spec.treated_units) or None))
    if ways != 1:
        raise OptionError("give exactly one of data.cohort (first treated year), data.treatment "
                          "(0/1 column) or data.treated_units with data.treatment_year")
    df = raw.copy()
    df = df.rename(columns={spec.unit: UNIT, spec.time: TIME})
    for canon in (COHORT, D):
        if canon in df.columns and canon not in (spec.cohort, spec.treatment):
            df = df.rename(columns={canon: f"{canon}_original"})
    if df[UNIT].isna().any():
        raise PanelError(f"column {spec.unit!r} (unit) has {int(df[UNIT].isna().sum())} missing value(s)")
    t = pd.to_numeric(df[TIME], errors="coerce")
    if t.isna().any():
        bad = df.loc[t.isna(), TIME].iloc[0]
        raise PanelError(f"column {spec.time!r} (time) must hold integer years; found {bad!r}")
    if not np.all(t == np.round(t)):
        raise PanelError(f"column {spec.time!r} (time) must hold integer years")
    df[TIME] = t.astype(np.int64)
    if (df[TIME] <= 0).any():
        # cohort 0 means "never treated" in the data contract, so a year 0 (or a negative
        # one) would read as "treatment switches off" further down
        raise PanelError(f"column {spec.time!r} (time) holds {int(df[TIME].min())}: years must "
                         "be positive (cohort 0 codes never treated): relabel them in the file, "
                         "e.g. add 2000")
    if df[TIME].nunique() < 2:
        raise PanelError(f"column {spec.time!r} (time) has one period ({int(df[TIME].iloc[0])}): "
                         "a difference-in-differences needs at least two")
    dup = df.duplicated([UNIT, TIME], keep=False)
    if dup.any():
        r = df.loc[dup, [UNIT, TIME]].iloc[0]
        raise PanelError(f"{int(dup.sum())} rows share a (unit, time) key, e.g. "
                         f"({spec.unit}={r[UNIT]!r}, {spec.time}={r[TIME]}); each unit may appear once a year")
    df = df.sort_values([UNIT, TIME], kind="stable").reset_index(drop=True)
    if not spec.allow_gaps:
        span = df.groupby(UNIT, sort=False)[TIME].agg(["min", "max", "size"])
        gaps = span[span["max"] - span["min"] + 1 != span["size"]]
        if len(gaps):
            u = gaps.index[0]
            years = set(df.loc[df[UNIT] == u, TIME])
            missing = [y for y in range(int(gaps.loc[u, "min"]), int(gaps.loc[u, "max"]) + 1) if y not in years]
            raise PanelError(f"unit {u!r} has gaps in {spec.time!r}: no row for {missing[:5]}; "
                             "fill or drop them, or set data.allow_gaps=true")

    # treatment -> cohort and d
    if spec.treatment is not None:
        d = pd.to_numeric(df[spec.treatment], errors="coerce")
        if d.isna().any() or not d.isin([0, 1]).all():
            raise PanelError(f"column {spec.treatment!r} (treatment) must be 0 or 1 in every row")
        first = df.loc[d == 1].groupby(UNIT)[TIME].min()
        df[COHORT] = df[UNIT].map(first).fillna(0).astype(np.int64)
        implied = treatment_from_cohort(df[COHORT].to_numpy(), df[TIME].to_numpy())
        off = implied != d.to_numpy()
        if off.any() and not spec.allow_switching:
            unit, year = df.loc[off, UNIT].iloc[0], int(df.loc[off, TIME].iloc[0])
            raise PanelError(f"treatment switches off: unit {show(unit)} has {spec.treatment}=0 in "
                             f"{year} after being treated; only estimators for non-absorbing "
                             f"treatment accept it: estimator=[{','.join(switching_kinds())}]")
        if off.any():
            notes.append(f"treatment switches off for {df.loc[off, UNIT].nunique()} unit(s): "
                         f"d is the file's {spec.treatment!r}, cohort its first treated year")
    elif spec.cohort is not None:
        c = pd.to_numeric(df[spec.cohort], errors="coerce").fillna(0)
        if (c < 0).any() or not np.all(c == np.round(c)):
            raise PanelError(f"column {spec.cohort!r} (cohort) must be a year or 0/empty for never treated")
        per_unit = c.groupby(df[UNIT]).nunique()
        if (per_unit > 1).any():
            raise PanelError(f"column {spec.cohort!r} varies within unit {per_unit.index[per_unit > 1][0]!r}")
        df[COHORT] = c.astype(np.int64)
    else:
        if spec.treatment_year is None:
            raise OptionError("data.treated_units needs data.treatment_year")
        # compare as text: a config lists units as strings, a file may hold numbers
        names = df[UNIT].astype(str)
        units = set(names.unique())
        wanted = [str(u) for u in spec.treated_units]
        unknown = [u for u in wanted if u not in units]
        if unknown:
            raise PanelError(f"data.treated_units lists {unknown[0]!r}, which is not a unit of the "
                             f"data; units look like {sorted(units)[:5]}")
        first, last = int(df[TIME].min()), int(df[TIME].max())
        if not first < int(spec.treatment_year) <= last:
            raise PanelError(f"data.treatment_year={spec.treatment_year} must lie after the "
                             f"first year ({first}) and no later than the last ({last}) of the "
                             "data: the treated units need years before and after it")
        df[COHORT] = np.where(names.isin(wanted), int(spec.treatment_year), 0)
    if spec.treatment is not None and spec.allow_switching:
        df[D] = d.to_numpy().astype(np.int64)  # may switch off: not implied by the cohort
    else:
        df[D] = treatment_from_cohort(df[COHORT].to_numpy(), df[TIME].to_numpy())

    for name, expr in dict(spec.derive).items():
        df[name] = derive(df, name, expr).to_numpy()
    for name, directions in dict(spec.indices).items():
        from simulate.index import entropy_weights

        index, weights = entropy_weights(df, {k: int(v) for k, v in dict(directions).items()})
        df[name] = index.to_numpy()
        notes.append(f"index {name!r} (entropy weights): "
                     + ", ".join(f"{k} {v:.3f}" for k, v in weights.items()))
    if spec.filter:
        try:
            # the file's own names for unit and time work as well as `unit` and `time`
            own = {name: df[col] for name, col in ((spec.unit, UNIT), (spec.time, TIME))
                   if name not in df.columns}
            kept = df.query(spec.filter, resolvers=(own,) if own else None)
        except Exception as exc:  # pandas raises many types for a bad query
            raise PanelError(f"data.filter={spec.filter!r} cannot be applied: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        notes.append(f"filter {spec.filter!r} kept {len(kept)} of {len(df)} rows")
        df = kept.reset_index(drop=True)
    used = [*spec.outcomes, *spec.controls]
    for col in used:
        if col not in df.columns:
            raise PanelError(f"column {col!r} (outcome or control) is not in the data or data.derive; "
                             f"columns: {list(df.columns)[:25]}")
    if spec.drop_missing and used:
        na = df[used].isna().any(axis=1)
        if na.any():
            notes.append(f"dropped {int(na.sum())} row(s) with missing values in {used} "
                         "(lags shorten each unit's series)")
            df = df.loc[~na].reset_index(drop=True)
    info = check_panel(df, tuple(spec.outcomes), tuple(spec.controls),
                       absorbing=not spec.allow_switching)[0]
    notes.append(info.describe())
    return df, notes


def switching_kinds() -> list[str]:
    """Catalogue estimators that accept a treatment switching off."""
    from estimators import catalog

    return [e.kind for e in catalog.entries() if e.capabilities.switching]
