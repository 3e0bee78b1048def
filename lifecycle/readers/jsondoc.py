"""JSON documents: a top-level array of records, or an API response whose records are a list under a
key (Pendo's ``{"results": [...]}``, Chameleon's ``{"interactions": [...], "cursor": ...}``), pretty
or compact. Several pages of one API are several files.

The records are under the mapping's ``records:`` path (dotted, ``data.items``), else the one list of
objects in the document, found at any depth; a document without one is one record. They are written
once as JSON lines (``lifecycle.readers.staging``) and read from there as a JSON-lines export, so rows
are numbered by record. A document is parsed whole: it is one API page, not a bulk export (those come
as JSON lines, which are streamed).
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from lifecycle.readers.base import Export, Format, rows_from_size
from lifecycle.readers.errors import reading
from lifecycle.readers.jsonlines import JSONL, lists_of_objects
from lifecycle.readers.staging import identity, staged
from transforms.schema import InputError
from transforms.spec import SourceMapping

__all__ = ["JSON", "records_of"]

_HINT = "name the list of records with `records: KEY` in a --mapping file"


def records_of(doc: Any, path: str | None, name: str) -> list[Any]:
    """The document's records: under ``path``, else its one list of objects (or itself)."""
    if path:
        value = doc
        for i, key in enumerate(path.split(".")):
            if not isinstance(value, dict) or key not in value:
                at = ".".join(path.split(".")[:i]) or "the top level"
                keys = ", ".join(map(str, value)) if isinstance(value, dict) else "none: it is not an object"
                raise InputError(f"no records at {path!r}: {at} has no key {key!r} (keys: {keys})", file=name)
            value = value[key]
        if not isinstance(value, list):
            raise InputError(f"the records at {path!r} are not a list", file=name, hint=_HINT)
        return value
    if isinstance(doc, list):
        return doc
    found = dict(lists_of_objects(doc))
    if len(found) > 1:
        raise InputError(f"the document holds several lists of records ({', '.join(found)})", file=name, hint=_HINT)
    return next(iter(found.values())) if found else [doc]


def _lines(export: Export, mapping: SourceMapping | None) -> Export:
    """The document's records as a JSON-lines export of the same name."""
    path = mapping.records if mapping is not None else None

    def write(dest: Any) -> None:
        with reading(export.name, "not a readable JSON document"), export.local.open("rb") as fh:
            doc = json.load(fh)
        with dest.open("w", encoding="utf-8") as out:
            for record in records_of(doc, path, export.name):
                out.write(json.dumps(record, ensure_ascii=False) + "\n")

    lines = Export(export.name, staged(("records", *identity(export.local), path), ".jsonl", write), JSONL, "record")
    _copies.setdefault(identity(export.local), set()).add(lines)
    return lines


#: per document (``staging.identity``), its records' JSON-lines copies (one per records path asked for)
_copies: dict[tuple[str, int, int], set[Export]] = {}


def _relax(export: Export) -> bool:
    return any([lines.relax() for lines in _copies.get(identity(export.local), set())])


def _scan(export: Export, mapping: SourceMapping | None) -> pl.LazyFrame:
    return _lines(export, mapping).scan(mapping)


def _check(export: Export, mapping: SourceMapping | None, full: bool) -> None:
    _lines(export, mapping).check(mapping, full=full)


def _estimate(export: Export) -> int:
    try:
        return _lines(export, None).estimate()
    except InputError:  # several lists: the mapping names one, and the check says so
        return rows_from_size(export.local, header=False)


JSON = Format(
    "JSON document",
    (".json", ".jsonl", ".ndjson"),
    lambda head: head.lstrip()[:1] in (b"[", b"{"),
    _scan,
    _check,
    _estimate,
    _relax,
)
