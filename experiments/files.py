"""Atomic output files: every table, figure, chunk and report is written to a temporary
name beside its final one and renamed when complete.

A run killed mid-write, or one that hits a full or read-only disk, therefore never leaves a
truncated file under a final name, and an interrupted write removes its temporary file
(a full disk left an orphan ``.tmp`` chunk and a truncated ``results.csv`` before).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import pandas as pd


@contextlib.contextmanager
def atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; rename it to ``path`` when the
    block ends normally, remove it when the block raises (and re-raise).

    The temporary name keeps ``path``'s suffix, so writers that infer the format from it
    (``savefig``) work unchanged.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` as CSV (no index) atomically."""
    with atomic(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` as Parquet (no index) atomically."""
    with atomic(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(path)
