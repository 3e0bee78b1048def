"""The export files: scanned lazily into the analysis' ``Source``s, and checked that every one can be
read whole before anything is sent: each failure is an ``InputError``
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
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import polars as pl

from frigade.catalog import Catalog
from frigade.rules import DEFAULT_RULES, Rules
from lifecycle.params import Mode
from transforms.analysis import (
    EVENT_COLUMNS,
    Analysis,
    Prepared,
    Source,
    UnreadableSourceError,
    analyze,
    analyze_encoded,
    encode_sources,
    plan_requests,
    shard_of,
)
from transforms.derive import STEP_TABLE_SCHEMA
from transforms.mapping import map_events
from transforms.schema import InputError
from transforms.spec import SourceMapping
from transforms.sync import StateFrames
from transforms.validate import VALID

__all__ = [
    "CSV_SUFFIXES",
    "JSONL_SUFFIXES",
    "analyze_exports",
    "analyze_split",
    "check_exports",
    "explain_unreadable",
    "jsonl_text_columns",
    "plan_exports",
    "resolve_path",
    "scan_export",
    "scan_jsonl",
    "sources_of",
    "split_events",
]

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
SUFFIXES = (*CSV_SUFFIXES, ".parquet", *JSONL_SUFFIXES)
#: malformed rows named in one message
_SHOWN = 5
_CHUNK = 1 << 24


def scan_export(path: Path, mapping: SourceMapping | None = None) -> pl.LazyFrame:
    """A lazy scan of one export. CSV columns stay text: each mapping parses its own types; JSONL
    ``data`` fields are read as JSON text (``jsonl_text_columns``)."""
    resolve_path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.scan_parquet(path)
        if suffix in JSONL_SUFFIXES:
            return scan_jsonl(path, mapping)
        sep = "\t" if suffix == ".tsv" else ","
        lf = pl.scan_csv(path, infer_schema=False, separator=sep)
        lf.collect_schema()
        return lf
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"unreadable: {exc}", file=str(path)) from exc


def sources_of(paths: Sequence[Path], mapping: SourceMapping | None = None) -> list[Source]:
    return [Source(str(p), scan_export(p, mapping)) for p in paths]


def analyze_exports(
    paths: Sequence[Path],
    mapping: SourceMapping,
    catalog: Catalog,
    *,
    hash_events: bool = False,
    known: pl.DataFrame | None = None,
    head: int | None = None,
    rules: Rules = DEFAULT_RULES,
) -> Analysis:
    """``transforms.analysis.analyze`` over the export files. When polars cannot read one, the full
    check says which file, line and value (exit 2), else the polars error is the message."""
    check_exports(paths, full=False)
    try:
        return analyze(
            sources_of(paths, mapping), mapping, catalog, hash_events=hash_events, known=known, head=head, rules=rules
        )
    except UnreadableSourceError as exc:
        explain_unreadable(paths, mapping, exc)


def explain_unreadable(paths: Sequence[Path], mapping: SourceMapping, error: UnreadableSourceError) -> NoReturn:
    """Polars failed on the exports: the full check says which file, line and value (exit 2), else
    the file polars fails on alone, else the polars error is the message."""
    check_exports(paths, mapping, full=True)
    for p in paths:
        try:
            scan_export(p, mapping).collect(engine="streaming")
        except pl.exceptions.PolarsError as own:
            raise InputError(f"cannot be read: {own}", file=str(p)) from own
    raise error


def split_events(paths: Sequence[Path], mapping: SourceMapping, catalog: Catalog, shards: int, dest: Path) -> None:
    """Stream the exports' encoded events into shards by ``shard_of`` their user, in one pass: only
    polars' batches are held, whatever the export's size. The valid events go to
    ``dest/shard=<k>/valid=true/``, the others to ``dest/shard=<k>/valid=false/``: a shard's valid
    events are read without the message text, null on them, which costs its full length when read
    back (a shard with no events has no folder)."""
    check_exports(paths, full=False)
    encoded = encode_sources(sources_of(paths, mapping), mapping, catalog)
    events = encoded.events.with_columns(
        shard_of(pl.col("user_id"), shards).alias("shard"), (pl.col("problem") == VALID).alias("valid")
    )
    dest.mkdir(parents=True, exist_ok=True)
    try:
        # one sink: polars does not share a scan between two (the export would be mapped twice)
        events.sink_parquet(pl.PartitionBy(dest, key=["shard", "valid"], include_key=False))
    except pl.exceptions.PolarsError as exc:
        explain_unreadable(paths, mapping, UnreadableSourceError(exc))


def analyze_split(
    paths: Sequence[Path],
    mapping: SourceMapping,
    catalog: Catalog,
    split: Path,
    shard: int,
    *,
    hash_events: bool = False,
    known: pl.DataFrame | None = None,
    rules: Rules = DEFAULT_RULES,
) -> Analysis:
    """One shard's analysis, from its cut of the exports' events (``split_events``; a shard may have
    none). The exports name the rows in messages and the quarantine."""
    encoded = encode_sources(sources_of(paths, mapping), mapping, catalog)
    schema = encoded.events.collect_schema()

    def cut(valid: bool, columns: Sequence[str]) -> pl.LazyFrame:
        files = sorted((split / f"shard={shard}" / f"valid={str(valid).lower()}").glob("*.parquet"))
        if not files:
            return pl.LazyFrame(schema={c: schema[c] for c in columns})
        return pl.scan_parquet(files, hive_partitioning=False).select(columns)

    valid, invalid = cut(True, [*EVENT_COLUMNS, "problem"]), cut(False, list(schema.names()))
    shard_events = replace(encoded, events=valid, invalid=invalid)
    return analyze_encoded(shard_events, mapping, hash_events=hash_events, known=known, rules=rules)


def plan_exports(
    paths: Sequence[Path],
    mapping: SourceMapping,
    catalog: Catalog,
    *,
    mode: Mode = "state",
    baseline: StateFrames | None = None,
    rules: Rules = DEFAULT_RULES,
) -> Prepared:
    """The export files analysed and planned: what the dry run shows (nothing written, nothing sent)."""
    return plan_requests(
        analyze_exports(paths, mapping, catalog, rules=rules), mode=mode, baseline=baseline, rules=rules
    )


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
    a name; every CSV row has as many fields as the header and every quote is closed (one polars pass
    over the file's lines, about 0.15 s per million rows); the mapping finds its required columns.
    ``full`` also reads every value (UTF-8 of a CSV, every Parquet page, every JSONL line), which is
    what polars would trip on mid-run; a pipeline run does this only when polars fails, to say where.

    Only polars reads the files: pyarrow's CSV reader was tried and dropped, as its thread pools
    sometimes abort the process at exit ("terminate called without an active exception", apache/arrow
    issue 34314)."""
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


#: a quoted stretch of a line: its separators are text, not field boundaries
_QUOTED = r'"(?:[^"]|"")*"'


def _lines(path: Path) -> pl.LazyFrame:
    """The file's physical lines (``line``, 1-based; ``text``), read by polars without quoting or
    splitting, with each line's count of quote characters (``quotes``) and whether it begins inside a
    quoted field that an earlier line opened (``inside``)."""
    text = pl.col("text").fill_null("")
    quotes = pl.col("quotes")
    return (
        pl.scan_csv(
            path,
            has_header=False,
            separator="\x1f",  # the ASCII unit separator: never a column separator, rare in text
            quote_char=None,
            new_columns=["text"],
            infer_schema=False,
            encoding="utf8-lossy",
            truncate_ragged_lines=True,
            raise_if_empty=False,
        )
        .with_row_index("line", offset=1)
        .with_columns(text.alias("text"), text.str.count_matches('"', literal=True).cast(pl.Int64).alias("quotes"))
        .with_columns(((quotes.cum_sum() - quotes) % 2 == 1).alias("inside"))
    )


def _fields(text: pl.Expr, sep: str) -> pl.Expr:
    return (text.str.replace_all(_QUOTED, "").str.count_matches(sep, literal=True) + 1).cast(pl.Int64)


#: (record, first line, fields, text) of a malformed record; record 1 is the header
Malformed = tuple[int, int, int, str]


def _csv_structure(path: Path, sep: str, expected: int) -> None:
    """Every record has ``expected`` fields and every quote is closed, checked by polars over the file's
    lines: separators inside quotes are text, a record may span lines inside quotes, blank lines are
    skipped (as the reader skips them). One pass; a second only over records that span lines."""
    text = pl.col("text")
    lines = (
        _lines(path)
        .with_columns(
            (~pl.col("inside")).cum_sum().alias("record"),
            # the record is this line alone: it begins outside quotes and its quotes pair up
            (~pl.col("inside") & (pl.col("quotes") % 2 == 0)).alias("whole"),
            # the expression is quick on the (usual) lines without quotes
            _fields(text, sep).alias("fields"),
        )
        .with_columns(
            (pl.col("whole") & (pl.col("line") > 1) & ~text.is_in(["", "\r"])).alias("single"),
            (~pl.col("inside") & (pl.col("quotes") % 2 == 1)).alias("opens"),
        )
    )
    line, opens = pl.col("line"), pl.col("opens")
    bad = pl.col("single") & (pl.col("fields") != expected)
    info = (
        lines.select(
            (pl.col("quotes").sum() % 2 == 1).alias("odd"),
            line.filter(opens).last().alias("last_open"),
            pl.col("record").filter(opens).last().alias("last_open_record"),
            bad.sum().alias("n_bad"),
            line.filter(bad).head(_SHOWN).implode().alias("bad"),
            (opens & (line > 1)).any().alias("spans"),
        )
        .collect()
        .row(0, named=True)
    )
    if info["odd"]:
        record, line_no = info["last_open_record"], info["last_open"]
        raise InputError(
            f"a quote opened on line {line_no} is never closed, so the rest of the file would be read as one "
            "field: fix the quoting",
            file=str(path),
            row=record - 1,
        )
    shown_lines = info["bad"]
    found: list[Malformed] = []
    if shown_lines:
        picked = lines.filter(line.is_in(shown_lines)).select("record", "line", "fields", "text").collect()
        found = [(int(r), int(ln), int(f), str(t)) for r, ln, f, t in picked.iter_rows()]
    total = int(info["n_bad"])
    if info["spans"]:
        n, spanning = _malformed_spanning(lines, sep, expected)
        total += n
        found += spanning
    if not total:
        return
    found.sort()
    listed = "; ".join(
        f"row {record - 1} (line {line}) has {n_fields} fields ({_excerpt(body)})"
        for record, line, n_fields, body in found[:_SHOWN]
    )
    more = f" and {total - _SHOWN} more" if total > _SHOWN else ""
    raise InputError(
        f"{total} malformed row(s), the header has {expected} fields: {listed}{more}. A row with the wrong "
        "number of fields (or an unbalanced quote, which runs into the rows after it) cannot be split into "
        "columns without guessing: fix or remove these rows",
        file=str(path),
        row=found[0][0] - 1,
    )


def _malformed_spanning(lines: pl.LazyFrame, sep: str, expected: int) -> tuple[int, list[Malformed]]:
    """(how many, the first few) of the records whose quoted fields span lines and that have the wrong
    number of fields (such records are rare: they are joined and counted whole)."""
    spanning = (
        lines.filter((~pl.col("whole")).any().over("record") & (pl.col("record") > 1))
        .group_by("record")
        .agg(pl.col("line").min(), pl.col("text").str.strip_chars_end("\r").str.join("\n"))
        .with_columns(_fields(pl.col("text"), sep).alias("fields"))
        .filter(pl.col("fields") != expected)
        .sort("record")
        .collect()
    )
    first = spanning.head(_SHOWN).select("record", "line", "fields", "text").rows()
    return spanning.height, [(int(r), int(ln), int(f), str(t)) for r, ln, f, t in first]


def _check_csv(path: Path, sep: str, *, full: bool) -> None:
    names = _header(path, sep)
    try:
        _csv_structure(path, sep, len(names))
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"not a readable CSV file: {exc}", file=str(path)) from exc
    if full:
        _check_utf8(path)


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
    lf = pl.scan_parquet(path)
    try:
        lf.collect_schema()
    except pl.exceptions.DuplicateError as exc:
        name = re.search(r"name '([^']*)'", str(exc))
        raise InputError(
            f"two columns are named {name.group(1) if name else '?'!r}: rename or remove one (which one "
            "holds the value is not guessed)",
            file=str(path),
            field=name.group(1) if name else None,
        ) from exc
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(
            f"not a readable Parquet file (truncated, or not Parquet): {exc}: export it again", file=str(path)
        ) from exc
    if not full:
        return
    try:
        # every value decoded (a null count from the pages, not the footer's statistics)
        lf.select(pl.all().is_null().cast(pl.UInt8).sum()).collect(engine="streaming")
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(
            f"its data cannot be read: {exc}: the file is damaged; export it again", file=str(path)
        ) from exc


# ---------------------------------------------------------------- JSONL


def jsonl_text_columns(mapping: SourceMapping | None) -> dict[str, pl.DataType]:
    """Top-level JSONL fields read as JSON text whatever their values: ``data`` may hold objects on some
    lines and other values on others (each row's own value is then judged by validation)."""
    return {c: pl.String() for c in (mapping or SourceMapping()).data if "." not in c}


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
