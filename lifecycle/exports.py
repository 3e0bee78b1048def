"""The exports: scanned lazily into the analysis' ``Source``s, and checked that every one can be
read whole before anything is sent: each failure is an ``InputError`` (exit 2) naming the file (the
member of an archive), the row or line where there is one, and what to do.

What a path may be (a file, folder, glob or bucket; gzip and zip; CSV, TSV, Parquet, JSON lines, JSON
documents) is ``lifecycle.readers``' registry; this module runs the analysis over what it opens.

``check_exports`` is the pre-flight check (the CLI may call it before Prefect starts); the pipeline
runs its cheap part (``full=False``) before every analysis, and its full part when polars fails to read
an export, to say where and why.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import polars as pl

from frigade.catalog import Catalog
from frigade.rules import DEFAULT_RULES, Rules
from lifecycle.params import Mode
from lifecycle.readers import Export, input_files, open_exports, reading
from lifecycle.runfolder import file_digest
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
from transforms.spec import SourceMapping
from transforms.sync import StateFrames
from transforms.validate import VALID

__all__ = [
    "analyze_exports",
    "analyze_split",
    "check_exports",
    "estimated_rows",
    "explain_unreadable",
    "input_digests",
    "plan_exports",
    "relax",
    "resolve_path",
    "scan_export",
    "sources_of",
    "split_events",
]


def scan_export(path: Path | str, mapping: SourceMapping | None = None) -> pl.LazyFrame:
    """A lazy scan of what one path names (a folder's or an archive's files one after another). CSV
    columns stay text: each mapping parses its own types."""
    scans = [e.scan(mapping) for e in open_exports([path])]
    return scans[0] if len(scans) == 1 else pl.concat(scans, how="diagonal_relaxed")


def sources_of(paths: Sequence[Path | str], mapping: SourceMapping | None = None) -> list[Source]:
    """One ``Source`` per file of rows: a folder, glob or archive is several, each named for messages."""
    return [Source(e.name, e.scan(mapping)) for e in open_exports(paths)]


def estimated_rows(paths: Sequence[Path | str]) -> int:
    """The exports' rows, cheaply: a Parquet file's from its footer, a text file's from its size and
    the length of its first lines (only the shard count rests on this)."""
    return sum(e.estimate() for e in open_exports(paths))


def relax(paths: Sequence[Path | str]) -> bool:
    """After the exports' rows failed to read: whether a format learnt what to read more leniently
    (a JSON field of several kinds, read as text: the odd rows are then quarantined), so that reading
    them again is worth it."""
    return any([e.relax() for e in open_exports(paths)])


def input_digests(paths: Sequence[Path | str]) -> list[dict[str, Any]]:
    """Each file's digest (an archive's own, an object's downloaded copy's), named as given, so a
    resume can refuse other inputs."""
    return [file_digest(local) | {"path": name} for name, local in input_files(paths)]


def analyze_exports(
    paths: Sequence[Path | str],
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
    check_exports(paths, mapping, full=False)
    while True:
        try:
            return analyze(
                sources_of(paths, mapping),
                mapping,
                catalog,
                hash_events=hash_events,
                known=known,
                head=head,
                rules=rules,
            )
        except UnreadableSourceError as exc:
            if not relax(paths):
                explain_unreadable(paths, mapping, exc)


def explain_unreadable(paths: Sequence[Path | str], mapping: SourceMapping, error: UnreadableSourceError) -> NoReturn:
    """Polars failed on the exports: the full check says which file, line and value (exit 2), else
    the file polars fails on alone, else the polars error is the message."""
    check_exports(paths, mapping, full=True)
    for e in open_exports(paths):
        with reading(e.name):
            e.scan(mapping).collect(engine="streaming")
    raise error


def split_events(
    paths: Sequence[Path | str], mapping: SourceMapping, catalog: Catalog, shards: int, dest: Path
) -> None:
    """Stream the exports' encoded events into shards by ``shard_of`` their user, in one pass: only
    polars' batches are held, whatever the export's size. The valid events go to
    ``dest/shard=<k>/valid=true/``, the others to ``dest/shard=<k>/valid=false/``: a shard's valid
    events are read without the message text, null on them, which costs its full length when read
    back (a shard with no events has no folder)."""
    check_exports(paths, mapping, full=False)
    while True:
        encoded = encode_sources(sources_of(paths, mapping), mapping, catalog)
        events = encoded.events.with_columns(
            shard_of(pl.col("user_id"), shards).alias("shard"), (pl.col("problem") == VALID).alias("valid")
        )
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        try:
            # one sink: polars does not share a scan between two (the export would be mapped twice)
            events.sink_parquet(pl.PartitionBy(dest, key=["shard", "valid"], include_key=False))
            return
        except pl.exceptions.PolarsError as exc:
            if not relax(paths):
                explain_unreadable(paths, mapping, UnreadableSourceError(exc))


def analyze_split(
    paths: Sequence[Path | str],
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
    paths: Sequence[Path | str],
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


def resolve_path(path: Path | str) -> None:
    """Refuse a path that names no readable export of a supported type (``lifecycle.readers``)."""
    open_exports([path])


def check_exports(paths: Sequence[Path | str], mapping: SourceMapping | None = None, *, full: bool = True) -> None:
    """Raise ``InputError`` unless every export is a readable file of its type whose columns the
    mapping can read.

    Always: the path names files of a supported type; the header or schema reads; no two columns
    share a name; every CSV row has as many fields as the header and every quote is closed (one polars
    pass over the file's lines, about 0.15 s per million rows); the mapping finds its required columns.
    ``full`` also reads every value (UTF-8 of a CSV, every Parquet page, every JSONL line), which is
    what polars would trip on mid-run; a pipeline run does this only when polars fails, to say where.

    Only polars reads the rows: pyarrow's CSV reader was tried and dropped, as its thread pools
    sometimes abort the process at exit ("terminate called without an active exception", apache/arrow
    issue 34314)."""
    for export in open_exports(paths):
        export.check(mapping, full=full)
        if mapping is not None:
            _check_mapping(export, mapping)


def _check_mapping(export: Export, mapping: SourceMapping) -> None:
    # Only the plan: no data is read. An empty step table stands in for the catalog.
    map_events(export.scan(mapping), mapping, export.name, steps=pl.LazyFrame(schema=STEP_TABLE_SCHEMA))
