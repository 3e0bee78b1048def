"""Parquet exports: typed columns (a struct's fields are read by dotted paths, ``profile.uid``), a
check that decodes every page, and the row count from the footer."""

from __future__ import annotations

import re

import polars as pl

from lifecycle.readers.base import Export, Format
from lifecycle.readers.errors import READ_ERRORS, reading
from transforms.schema import InputError
from transforms.spec import SourceMapping

__all__ = ["PARQUET"]

_AGAIN = "the file is damaged; export it again"


def _scan(export: Export, mapping: SourceMapping | None) -> pl.LazyFrame:
    with reading(export.name, "unreadable"):
        return pl.scan_parquet(export.local)


def _check(export: Export, mapping: SourceMapping | None, full: bool) -> None:
    lf = pl.scan_parquet(export.local)
    try:
        lf.collect_schema()
    except pl.exceptions.DuplicateError as exc:
        name = re.search(r"name '([^']*)'", str(exc))
        raise InputError(
            f"two columns are named {name.group(1) if name else '?'!r}: rename or remove one (which one "
            "holds the value is not guessed)",
            file=export.name,
            field=name.group(1) if name else None,
        ) from exc
    except READ_ERRORS as exc:
        raise InputError(
            f"not a readable Parquet file (truncated, or not Parquet): {exc}", file=export.name, hint=_AGAIN
        ) from exc
    if not full:
        return
    with reading(export.name, "its data cannot be read", _AGAIN):
        # every value decoded (a null count from the pages, not the footer's statistics)
        lf.select(pl.all().is_null().cast(pl.UInt8).sum()).collect(engine="streaming")


def _estimate(export: Export) -> int:
    with reading(export.name, "not a readable Parquet file (truncated, or not Parquet)", _AGAIN):
        return int(pl.scan_parquet(export.local).select(pl.len()).collect().item())


PARQUET = Format("Parquet", (".parquet",), lambda head: head.startswith(b"PAR1"), _scan, _check, _estimate)
