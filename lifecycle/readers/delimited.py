"""CSV and TSV exports: columns read as text (each mapping parses its own types), and a check that
every record has as many fields as the header and every quote is closed, naming the row.

Malformed rows (a row with more or fewer fields than the header, which is also what an unbalanced
quote leaves) stop the file rather than being quarantined: the fields of such a row cannot be assigned
to columns without guessing, and an unbalanced quote shifts every row after it.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Callable
from pathlib import Path

import polars as pl

from lifecycle.readers.base import Export, Format, rows_from_size
from lifecycle.readers.errors import reading
from transforms.schema import InputError
from transforms.spec import SourceMapping

__all__ = ["CSV", "TSV"]

#: malformed rows named in one message
_SHOWN = 5
_CHUNK = 1 << 24


def _scan(sep: str) -> Callable[[Export, SourceMapping | None], pl.LazyFrame]:
    def scan(export: Export, mapping: SourceMapping | None) -> pl.LazyFrame:
        with reading(export.name, "unreadable"):
            lf = pl.scan_csv(export.local, infer_schema=False, separator=sep)
            lf.collect_schema()
        return lf

    return scan


def _looks_delimited(sep: str) -> Callable[[bytes], bool]:
    """Text whose first line holds the separator (a one-column CSV is only found by its name)."""

    def sniff(head: bytes) -> bool:
        first = head.split(b"\n", 1)[0]
        return b"\x00" not in first and sep.encode() in first

    return sniff


def _header(path: Path, name: str, sep: str) -> list[str]:
    with path.open("rb") as fh:
        first = fh.readline()
    if not first.strip():
        raise InputError("the file is empty: a CSV export starts with a header row", file=name)
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"the header is not UTF-8 text (byte {exc.start}): save the export as UTF-8", file=name
        ) from exc
    names = next(csv.reader([text], delimiter=sep))
    seen: dict[str, int] = {}
    for i, column in enumerate(names, start=1):
        if column in seen:
            raise InputError(
                f"two columns are named {column!r} (columns {seen[column]} and {i}): rename or remove one "
                "(which one holds the value is not guessed)",
                file=name,
                field=column,
            )
        seen[column] = i
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


def _csv_structure(path: Path, name: str, sep: str, expected: int) -> None:
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
            file=name,
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
        file=name,
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


def _check(export: Export, sep: str, full: bool) -> None:
    path, name = export.local, export.name
    names = _header(path, name, sep)
    with reading(name, "not a readable CSV file"):
        _csv_structure(path, name, sep, len(names))
    if full:
        _check_utf8(path, name)


def _excerpt(text: str, width: int = 60) -> str:
    flat = text.replace("\r", "").replace("\n", "\\n")
    return repr(flat if len(flat) <= width else flat[:width] + "...")


def _check_utf8(path: Path, name: str) -> None:
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
                    file=name,
                    row=line - 1,
                ) from exc
            offset += len(chunk)
            lines += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise InputError("the file ends inside a UTF-8 character: it is truncated", file=name) from exc


def _estimate(export: Export) -> int:
    return rows_from_size(export.local, header=True)


CSV = Format(
    "CSV",
    (".csv", ".txt"),
    _looks_delimited(","),
    _scan(","),
    lambda export, mapping, full: _check(export, ",", full),
    _estimate,
)
TSV = Format(
    "TSV",
    (".tsv",),
    _looks_delimited("\t"),
    _scan("\t"),
    lambda export, mapping, full: _check(export, "\t", full),
    _estimate,
)
