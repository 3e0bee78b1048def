"""JSON-lines exports: one JSON object per line, nested objects read as structs (a dotted path,
``attributes.flow_id``, reads their fields).

One odd row is that row's quarantine, never the file's refusal: a field whose lines disagree on its
kind (an object on most, a list, a number or text on one) is read as JSON text, and a dotted path
then reads into each row's text (``transforms.columns``), so the odd row simply lacks the field.
Polars infers types from the first lines; a field found mixed there is text at once, and one found
mixed only further down (polars then fails mid-read) is learnt by one pass over the file
(``relax``), after which the read is tried again. The mapping's ``data`` fields are always text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice
from typing import Any

import polars as pl

from lifecycle.readers.base import Export, Format, rows_from_size
from lifecycle.readers.errors import READ_ERRORS, reading, unreadable
from lifecycle.readers.staging import identity
from transforms.schema import InputError
from transforms.spec import SourceMapping

__all__ = ["JSONL", "first_object", "jsonl_schema", "jsonl_text_columns", "lists_of_objects"]

#: lines polars infers the scalar fields' types from
INFER_ROWS = 10_000
_JSON_TYPES = {dict: "an object", list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number"}


def jsonl_text_columns(mapping: SourceMapping | None) -> set[str]:
    """Top-level fields read as JSON text whatever their values (the mapping's ``data``)."""
    return {c for c in (mapping or SourceMapping()).data if "." not in c}


#: per file (``staging.identity``), the fields found to hold values of several kinds
_MIXED: dict[tuple[str, int, int], set[str]] = {}


def jsonl_schema(export: Export, mapping: SourceMapping | None) -> dict[str, pl.DataType]:
    """The fields polars infers from the first lines, the mapping's data and mixed fields as text.
    Where the first lines disagree on a field's kind (an object here, a list there), polars cannot
    infer at all: the fields are then typed from those lines here, every mixed one as text."""
    text = jsonl_text_columns(mapping) | _MIXED.get(identity(export.local), set())
    try:
        inferred = dict(pl.scan_ndjson(export.local, infer_schema_length=INFER_ROWS).collect_schema())
    except pl.exceptions.PolarsError:
        inferred = _sampled(export)
    return {name: pl.String() if name in text or dtype == pl.Null else dtype for name, dtype in inferred.items()}


def _sampled(export: Export) -> dict[str, pl.DataType]:
    kinds: dict[str, set[type]] = {}
    with export.local.open("rb") as fh:
        for number, raw in enumerate(islice(fh, INFER_ROWS), start=1):
            if raw.strip():
                for key, v in _object(raw, number, export).items():
                    kinds.setdefault(key, set()).update(() if v is None else (type(v),))
    return {key: _dtype(k) for key, k in kinds.items()}


def _object(raw: bytes, number: int, export: Export) -> dict[str, Any]:
    try:
        value: Any = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InputError(
            f"line {number} is not valid JSON ({exc}): fix or remove the line", file=export.name, row=number
        ) from None
    if not isinstance(value, dict):
        raise InputError(f"{export.unit} {number} is not a JSON object", file=export.name, row=number)
    return value


def _dtype(kinds: set[type]) -> pl.DataType:
    if kinds == {bool}:
        return pl.Boolean()
    if kinds == {int}:
        return pl.Int64()
    if kinds and kinds <= {int, float}:
        return pl.Float64()
    return pl.String()


def _lazy(export: Export, mapping: SourceMapping | None) -> pl.LazyFrame:
    return pl.scan_ndjson(export.local, schema=jsonl_schema(export, mapping))


def _scan(export: Export, mapping: SourceMapping | None) -> pl.LazyFrame:
    with reading(export.name, "unreadable"):
        return _lazy(export, mapping)


def _read(export: Export, mapping: SourceMapping | None, full: bool) -> None:
    lf = _lazy(export, mapping)
    if full:
        lf.select(pl.all().null_count()).collect()


def _check(export: Export, mapping: SourceMapping | None, full: bool) -> None:
    try:
        try:
            _read(export, mapping, full)
        except READ_ERRORS:
            if not _relax(export):
                raise
            _read(export, mapping, full)
    except READ_ERRORS as exc:
        text = {n for n, t in jsonl_schema(export, mapping).items() if t == pl.String()}
        _find_line(export, text)
        raise unreadable(exc, export.name, "not a readable JSONL file") from exc


def _find_line(export: Export, as_text: set[str]) -> None:
    """The first line that is not a JSON object, or whose field has another type than before."""
    kinds: dict[str, tuple[str, int]] = {}
    with export.local.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            for key, v in _object(raw, number, export).items():
                if v is None or key in as_text:
                    continue
                kind = _JSON_TYPES.get(type(v), type(v).__name__)
                seen = kinds.setdefault(key, (kind, number))
                if seen[0] != kind:
                    raise InputError(
                        f"{export.unit} {number}: field {key!r} is {kind} here but {seen[0]} on {export.unit} "
                        f"{seen[1]}: one "
                        "field must hold one type of value",
                        file=export.name,
                        row=number,
                        field=key,
                    )


def _relax(export: Export) -> bool:
    """Learn the fields of several kinds in the whole file (they are then read as text); whether
    there were new ones, and so whether reading again may now succeed."""
    kinds: dict[str, set[str]] = {}
    with export.local.open("rb") as fh:
        for raw in fh:
            try:
                value: Any = json.loads(raw) if raw.strip() else None
            except (ValueError, RecursionError):
                continue  # the check names the line
            if isinstance(value, dict):
                for key, v in value.items():
                    if v is not None:
                        kinds.setdefault(key, set()).add(type(v).__name__)
    mixed = {key for key, k in kinds.items() if len(k) > 1}
    known = _MIXED.setdefault(identity(export.local), set())
    new = mixed - known
    known |= new
    return bool(new)


def first_object(head: bytes) -> tuple[dict[str, Any] | None, bool]:
    """(the first line's JSON object, whether another line follows it in ``head``)."""
    lines = [line for line in head.splitlines() if line.strip()]
    if not lines:
        return None, False
    try:
        value = json.loads(lines[0])
    except (ValueError, RecursionError):
        return None, False
    complete = len(lines) > 1 or head.endswith((b"\n", b"}"))
    return (value if isinstance(value, dict) and complete else None), len(lines) > 1


def lists_of_objects(value: Any, at: str = "") -> Iterator[tuple[str, list[Any]]]:
    """(dotted path, list) of every list of records in a document: a list that starts with an object."""
    if isinstance(value, dict):
        for key, v in value.items():
            path = f"{at}.{key}" if at else str(key)
            if isinstance(v, list) and v and isinstance(v[0], dict):
                yield path, v
            else:
                yield from lists_of_objects(v, path)


def _sniff(head: bytes) -> bool:
    """A JSON object on the first line, followed by another line, or one alone that is not an API
    envelope (a document whose records are a list of objects under a key)."""
    value, more = first_object(head)
    if value is None:
        return False
    return more or next(lists_of_objects(value), None) is None


JSONL = Format(
    "JSON lines",
    (".jsonl", ".ndjson", ".json"),
    _sniff,
    _scan,
    _check,
    lambda export: rows_from_size(export.local, header=False),
    _relax,
)
