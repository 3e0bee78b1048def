"""Checks that every export can be read whole, before anything is sent: each failure is an ``InputError``
(exit 2) naming the file, the row or line where there is one, and what to do.

``check_exports`` is the pre-flight check (the CLI may call it before Prefect starts); the pipeline
runs its cheap part (``full=False``) before every analysis, and its full part when polars fails to read
an export, to say where and why.

Malformed CSV rows (a row with more or fewer fields than the header, which is also what an unbalanced
quote leaves) stop the file rather than being quarantined: the fields of such a row cannot be assigned
to columns without guessing, and an unbalanced quote shifts every row after it.
"""

from __future__ import annotations

import codecs
import csv
import glob
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from transforms.mapping import SourceMapping, map_events
from transforms.schema import InputError

__all__ = ["CSV_SUFFIXES", "JSONL_SUFFIXES", "check_exports", "jsonl_text_columns", "resolve_path", "scan_jsonl"]

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
SUFFIXES = (*CSV_SUFFIXES, ".parquet", *JSONL_SUFFIXES)
#: malformed rows named in one message
_SHOWN = 5
_CHUNK = 1 << 24


def resolve_path(path: Path) -> None:
    """Refuse a path that is not one readable export file of a supported type."""
    name = str(path)
    if not path.exists():
        if glob.has_magic(name):
            matches = glob.glob(name)
            if matches:
                raise InputError(
                    f"is a pattern (it matches {len(matches)} file(s)): patterns are not expanded here; "
                    "give the files themselves (a shell expands an unquoted pattern)",
                    file=name,
                )
            raise InputError(
                "no file matches this pattern: give the export files (check the folder and the pattern)", file=name
            )
        raise InputError("file not found", file=name)
    if path.is_dir():
        raise InputError(
            "is a folder, not an export file: give the files inside it (e.g. DIR/*.csv)",
            file=name,
        )
    if path.suffix.lower() not in SUFFIXES:
        raise InputError("unsupported file type (use .csv, .tsv, .parquet or .jsonl)", file=name)


def check_exports(paths: Sequence[Path | str], mapping: SourceMapping | None = None, *, full: bool = True) -> None:
    """Raise ``InputError`` unless every export is a readable file of its type whose columns the
    mapping can read.

    Always: the path is one file of a supported type; the header or schema reads; no two columns share
    a name; every CSV row has as many fields as the header and every quote is closed (one pass of
    pyarrow's CSV parser and one count of quotes, about 0.15 s per million rows); the mapping finds its
    required columns. ``full`` also reads every value
    (UTF-8 of a CSV, every Parquet row group, every JSONL line), which is what polars would trip on
    mid-run; a pipeline run does this only when polars fails, to say where."""
    for raw in paths:
        path = Path(raw)
        resolve_path(path)
        suffix = path.suffix.lower()
        if suffix in CSV_SUFFIXES:
            _check_csv(path, "\t" if suffix == ".tsv" else ",", full=full)
        elif suffix == ".parquet":
            _check_parquet(path, full=full)
        else:
            _check_jsonl(path, mapping, full=full)
        if mapping is not None:
            _check_mapping(path, mapping)


def _check_mapping(path: Path, mapping: SourceMapping) -> None:
    from flows.pipeline import scan_export
    from transforms.derive import STEP_TABLE_SCHEMA

    # Only the plan: no data is read. An empty step table stands in for the catalog.
    map_events(scan_export(path, mapping), mapping, str(path), steps=pl.LazyFrame(schema=STEP_TABLE_SCHEMA))


# ---------------------------------------------------------------- CSV


def _header(path: Path, sep: str) -> list[str]:
    with path.open("rb") as fh:
        first = fh.readline()
    if not first.strip():
        raise InputError("the file is empty: a CSV export starts with a header row", file=str(path))
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"the header is not UTF-8 text (byte {exc.start}): save the export as UTF-8", file=str(path)
        ) from exc
    names = next(csv.reader([text], delimiter=sep))
    seen: dict[str, int] = {}
    for i, name in enumerate(names, start=1):
        if name in seen:
            raise InputError(
                f"two columns are named {name!r} (columns {seen[name]} and {i}): rename or remove one "
                "(which one holds the value is not guessed)",
                file=str(path),
                field=name,
            )
        seen[name] = i
    return names


def _csv_read(path: Path, sep: str, names: list[str]) -> list[pacsv.InvalidRow]:
    bad: list[pacsv.InvalidRow] = []

    def handler(row: pacsv.InvalidRow) -> str:
        bad.append(row)
        return "skip"

    # Every field is parsed (to count them) but only the first column is built, as bytes, one block at a
    # time (memory stays at a few blocks whatever the size of the file). One thread: it numbers the rows,
    # is as fast on two cores, and pyarrow's threaded reader sometimes aborted the process at exit
    # ("terminate called without an active exception"; 3 times in 20 runs).
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=False, column_names=names, skip_rows=1, block_size=1 << 22),
        parse_options=pacsv.ParseOptions(delimiter=sep, newlines_in_values=True, invalid_row_handler=handler),
        convert_options=pacsv.ConvertOptions(column_types={names[0]: pa.binary()}, include_columns=[names[0]]),
    )
    for _ in reader:
        pass
    # pyarrow's allocator keeps freed blocks: hand them back before the export is loaded
    pa.default_memory_pool().release_unused()
    return bad


def _check_csv(path: Path, sep: str, *, full: bool) -> None:
    names = _header(path, sep)
    # the quote count runs beside pyarrow's parser, which does not hold the GIL
    with ThreadPoolExecutor(max_workers=1) as pool:
        odd_quotes = pool.submit(_odd_quotes, path)
        try:
            bad = _csv_read(path, sep, names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"not a readable CSV file: {exc}", file=str(path)) from exc
        if odd_quotes.result():
            _name_unclosed_quote(path)
    if bad:
        first = bad[0]
        rows = "; ".join(
            f"row {r.number - 1 if r.number is not None else '?'} has {r.actual_columns} fields ({_excerpt(r.text)})"
            for r in bad[:_SHOWN]
        )
        more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        raise InputError(
            f"{len(bad)} malformed row(s), the header has {first.expected_columns} fields: {rows}{more}. "
            "A row with the wrong number of fields (or an unbalanced quote, which runs into the rows "
            "after it) cannot be split into columns without guessing: fix or remove these rows",
            file=str(path),
            row=first.number - 1 if first.number is not None else None,
        )
    if full:
        _check_utf8(path)


def _odd_quotes(path: Path) -> bool:
    """Whether the file has an odd number of quote characters: a quote never closed (doubled quotes
    inside a quoted field come in pairs)."""
    odd = False
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            odd ^= chunk.count(b'"') % 2 == 1
    return odd


def _name_unclosed_quote(path: Path) -> None:
    """Raise naming the line the unclosed quote opens on (a second pass, only for such files)."""
    opened, inside = 0, False
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if line.count(b'"') % 2:
                if not inside:
                    opened = number
                inside = not inside
    raise InputError(
        f"a quote opened on line {opened} is never closed, so the rest of the file would be read as one "
        "field: fix the quoting",
        file=str(path),
        row=opened - 1,
    )


def _excerpt(text: str, width: int = 60) -> str:
    flat = text.replace("\r", "").replace("\n", "\\n")
    return repr(flat if len(flat) <= width else flat[:width] + "...")


def _check_utf8(path: Path) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line = lines + chunk.count(b"\n", 0, max(0, exc.start)) + 1
                raise InputError(
                    f"line {line} is not UTF-8 text (byte {offset + exc.start} of the file): save the export as UTF-8",
                    file=str(path),
                    row=line - 1,
                ) from exc
            offset += len(chunk)
            lines += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise InputError("the file ends inside a UTF-8 character: it is truncated", file=str(path)) from exc


# ---------------------------------------------------------------- Parquet


def _check_parquet(path: Path, *, full: bool) -> None:
    try:
        meta = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"not a readable Parquet file (truncated, or not Parquet): {exc}: export it again", file=str(path)
        ) from exc
    names = meta.schema_arrow.names
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(
            f"two columns are named {dup[0]!r}: rename or remove one (which one holds the value is not guessed)",
            file=str(path),
            field=dup[0],
        )
    if not full:
        return
    start = 1
    for group in range(meta.num_row_groups):
        n = meta.metadata.row_group(group).num_rows
        try:
            meta.read_row_group(group)
            pa.default_memory_pool().release_unused()
        except (pa.ArrowException, OSError) as exc:
            raise InputError(
                f"row group {group} (rows {start}-{start + n - 1}) cannot be read: {exc}: the file is "
                "damaged; export it again",
                file=str(path),
                row=start,
            ) from exc
        start += n


# ---------------------------------------------------------------- JSONL


def jsonl_text_columns(mapping: SourceMapping | None) -> dict[str, pl.DataType]:
    """Top-level JSONL fields read as JSON text whatever their values: ``data`` may hold objects on some
    lines and other values on others (each row's own value is then judged by validation)."""
    if mapping is None:
        return {}
    return {c: pl.String() for c in mapping.data if "." not in c}


def scan_jsonl(path: Path, mapping: SourceMapping | None) -> pl.LazyFrame:
    """A lazy JSONL scan with the mapping's data fields (those the file has) read as JSON text."""
    lf = pl.scan_ndjson(path, infer_schema_length=10_000)
    names = set(lf.collect_schema().names())
    overrides = {c: t for c, t in jsonl_text_columns(mapping).items() if c in names}
    return pl.scan_ndjson(path, infer_schema_length=10_000, schema_overrides=overrides) if overrides else lf


_JSON_TYPES = {dict: "an object", list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number"}


def _check_jsonl(path: Path, mapping: SourceMapping | None, *, full: bool) -> None:
    overrides = jsonl_text_columns(mapping)
    try:
        lf = scan_jsonl(path, mapping)
        lf.collect_schema()
        if full:
            lf.select(pl.all().null_count()).collect()
    except pl.exceptions.PolarsError as exc:
        _find_jsonl_line(path, set(overrides))
        raise InputError(f"not a readable JSONL file: {exc}", file=str(path)) from exc


def _find_jsonl_line(path: Path, as_text: set[str]) -> None:
    """The first line that is not a JSON object, or whose field has another type than before."""
    kinds: dict[str, tuple[str, int]] = {}
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            if number == 1 and raw.lstrip().startswith(b"["):
                raise InputError(
                    "the file is one JSON array, not JSON Lines: export one JSON object per line",
                    file=str(path),
                )
            try:
                value: Any = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                raise InputError(
                    f"line {number} is not valid JSON ({exc}): fix or remove the line", file=str(path), row=number
                ) from None
            if not isinstance(value, dict):
                raise InputError(f"line {number} is not a JSON object", file=str(path), row=number)
            for key, v in value.items():
                if v is None or key in as_text:
                    continue
                kind = _JSON_TYPES.get(type(v), type(v).__name__)
                seen = kinds.setdefault(key, (kind, number))
                if seen[0] != kind:
                    raise InputError(
                        f"line {number}: field {key!r} is {kind} here but {seen[0]} on line {seen[1]}: one "
                        "field must hold one type of value",
                        file=str(path),
                        row=number,
                        field=key,
                    )
