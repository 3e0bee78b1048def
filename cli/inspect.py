"""``frigade-migrate inspect EXPORT``: read the first rows of an export, say which preset fits, show
the column profile and the first events it would produce. No Prefect, no network: reading the file and
printing are the only effects; the analysis is ``transforms.inspect``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from frigade.catalog import Catalog
from frigade.documents import DocumentError, load_mapping
from frigade.errors import CatalogError
from lifecycle.catalogs import SAMPLE_LABEL, catalog_source, local_catalog
from lifecycle.exitcodes import ExitCode
from lifecycle.exports import check_exports, scan_export
from lifecycle.settings import Settings
from transforms.accounting import ALSO_NOT_MIGRATED
from transforms.analysis import Source, export_coverage
from transforms.inspect import Inspection, inspect_sample
from transforms.presets import PRESETS, resolve_mapping
from transforms.schema import InputError, input_error
from transforms.spec import SourceMapping
from transforms.validate import catalog_frames

__all__ = ["coverage_table", "main", "read_sample"]

_EVENT_COLUMNS = ["source_row", "user_id", "flow_slug", "step_id", "action", "raw_event", "ts", "status", "reason"]


def read_sample(path: Path, rows: int) -> pl.LazyFrame:
    """The first ``rows`` rows of an export, read as the pipeline reads it (CSV all text, Parquet,
    JSON lines)."""
    return scan_export(path).head(rows)


def _mapping_doc(path: str) -> Mapping[str, Any]:
    try:
        return load_mapping(path, "a mapping file: a YAML mapping of field: value")
    except DocumentError as exc:
        raise input_error(exc) from exc


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = str(value)
    return text if len(text) <= 48 else text[:45] + "..."


#: coverage lines shown; the rest are counted
COVERAGE_LINES = 40


def coverage_table(cov: pl.DataFrame, rows_in: int, title: str) -> Table:
    """What each event name of the export becomes, with its rows and users, and the rows in by kind:
    they add up to the row accounting (a row counts once, under the event that decided its fate)."""
    t = Table(title=title)
    t.add_column("event (or state value)", overflow="fold")
    t.add_column("rows", justify="right")
    t.add_column("users", justify="right")
    t.add_column("becomes", overflow="fold")
    for event, rows, users, becomes, _ in cov.head(COVERAGE_LINES).iter_rows():
        t.add_row(str(event), str(rows), str(users), str(becomes))
    if cov.height > COVERAGE_LINES:
        more = cov.slice(COVERAGE_LINES)
        t.add_row(f"... {more.height} more", str(more["rows"].sum()), "", "")
    by_kind = {str(k): int(n) for k, n in cov.group_by("kind").agg(pl.col("rows").sum()).iter_rows()}
    also = by_kind.pop(ALSO_NOT_MIGRATED, 0)
    # rows that gave no event at all (a wide row with no progress) are dropped by the accounting too
    no_event = rows_in - sum(by_kind.values())
    if no_event:
        t.add_row("(rows with no event)", str(no_event), "", "dropped: nothing to migrate in the row")
    t.caption = (
        f"{rows_in} rows in = {by_kind.get('action', 0)} become actions + "
        f"{by_kind.get('dropped', 0) + no_event} not onboarding state + {by_kind.get('not_a_user', 0)} not a user "
        f"+ {by_kind.get('not_migrated', 0)} progress not migrated"
    )
    if also:
        t.caption += (
            f"; besides, {also} rows counted above under another of their events also carry progress not "
            "migrated, listed too (so this table of events adds up to more than its rows)"
        )
    return t


def render(result: Inspection, console: Console, catalog_label: str = "") -> None:
    """Summary first, then the preset scores, the column profile and the first events."""
    summary = Table(title=f"inspect {result.source_file}", show_header=False)
    summary.add_column("what", style="bold")
    summary.add_column("value")
    summary.add_row("rows sampled", str(result.rows))
    summary.add_row("columns", str(result.columns))
    fits = result.preset or "none"
    if result.preset and result.catalog_gaps:
        fits += " (its columns fit, but the export's ids do not all match the catalog: see below)"
    summary.add_row("preset that fits", fits)
    summary.add_row("why", result.why)
    summary.add_row("events shown with", result.mapping or "-")
    lo, hi = result.time_range
    summary.add_row("time range", f"{lo.isoformat() if lo else '-'} .. {hi.isoformat() if hi else '-'}")
    if catalog_label:
        summary.add_row("catalog", catalog_label)
    for note in result.notes:
        summary.add_row("note", note)
    for gap in result.catalog_gaps:
        summary.add_row("not in the catalog", gap)
    console.print(summary)
    if result.fits:
        scores = Table(title="presets")
        for name in ("preset", "fits", "score", "vocabulary", "why"):
            scores.add_column(name)
        for f in result.fits:
            vocab = "" if f.vocabulary is None else f"{f.vocabulary:.0%}"
            scores.add_row(f.name, "yes" if f.fits else "no", f"{f.score:.2f}", vocab, f.why)
        console.print(scores)
    profile = Table(title="columns")
    for name in result.profile.columns:
        profile.add_column(name)
    for row in result.profile.iter_rows():
        profile.add_row(*(_cell(v) for v in row))
    console.print(profile)
    if result.events.height:
        cols = [c for c in _EVENT_COLUMNS if c in result.events.columns]
        events = Table(title=f"first {result.events.height} events")
        for name in cols:
            events.add_column(name)
        for row in result.events.select(cols).iter_rows():
            events.add_row(*(_cell(v) for v in row))
        console.print(events)


def main(
    path: str,
    *,
    preset: str | None,
    mapping: str | None,
    catalog: str | None,
    rows: int,
    console: Console | None = None,
) -> int:
    """Inspect an export; 0 when done (whether or not a preset fits), 2 on bad input."""
    console = console or Console()
    err = Console(stderr=True, soft_wrap=True) if console.file is sys.stdout else console
    try:
        # the same refusals as a run's (a folder, a truncated Parquet, a ragged row), in the same words
        check_exports([Path(path)], full=False)
        doc = _mapping_doc(mapping) if mapping else None
        steps = flows = None
        cat, label = _catalog(catalog)
        if cat is not None:
            flows, steps = catalog_frames(cat.step_table(), {f.slug: f.status for f in cat.flows})
        sample = read_sample(Path(path), rows)
        base = preset
        if doc is not None and base is None:
            # a mapping file without --preset: apply it over the preset the file looks like
            base = inspect_sample(sample, path, PRESETS).preset
            if base is not None:
                console.print(f"mapping {mapping} applied over preset {base!r} (pass --preset {base} to backfill)")
        chosen = resolve_mapping(base, doc) if base or doc else None
        result = inspect_sample(sample, path, PRESETS, mapping=chosen, steps=steps, flows=flows)
        cov = _coverage(path, sample, chosen or PRESETS.get(result.preset or ""), cat)
    except (InputError, CatalogError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        return ExitCode.INPUT
    except pl.exceptions.PolarsError as exc:
        err.print(f"[red]error:[/red] file {path}: cannot be read: {exc}".splitlines()[0], highlight=False)
        return ExitCode.INPUT
    render(result, console, label)
    if cov is not None:
        title = f"coverage of the {result.rows} rows sampled: what each event becomes"
        console.print(coverage_table(cov, result.rows, title))
    return ExitCode.OK


def _coverage(
    path: str, sample: pl.LazyFrame, mapping: SourceMapping | None, cat: Catalog | None
) -> pl.DataFrame | None:
    """The sample's coverage table, when a mapping and a catalog say what its events become."""
    if mapping is None or cat is None:
        return None
    try:
        return export_coverage([Source(path, sample)], mapping, cat)
    except InputError:
        # a mapping that cannot run on this file: the notes above say why
        return None


def _catalog(path: str | None) -> tuple[Catalog | None, str]:
    """The catalog to hold the sample's ids against: the one a run would use when it is known without
    the API (the file given, or the bundled sample on the embedded emulator), else none."""
    source = catalog_source(path, Settings.resolve({}).embedded)
    if source.kind == "api":
        return None, "none given: pass --catalog FILE (a saved GET /v1/public/flows) to check flow and step ids"
    return local_catalog(source), source.path or SAMPLE_LABEL
