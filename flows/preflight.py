"""Input checks that run before Prefect or any server starts, so that a bad path, preset, mapping,
catalog or column answers in about a second instead of after tens of seconds of start-up.

They read only the files' schemas and first rows; the run's own analysis still checks every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flows.exports import check_exports
from flows.job import load_catalog_file, mapping_of
from flows.pipeline import analyze, scan_export
from flows.settings import Settings
from frigade.catalog import Catalog
from transforms.mapping import map_events
from transforms.schema import InputError
from transforms.validate import catalog_frames

#: rows of each export analysed up front: enough for a column-wide problem (a naive time, an
#: unparseable format) to show, little enough to answer at once on any size of file
SAMPLE_ROWS = 10_000


def preflight_catalog(settings: Settings) -> Catalog | None:
    """The catalog the run will use when it can be known without the API (a file, or the bundled
    sample on the embedded emulator); None when it comes from the API."""
    if settings.catalog and settings.catalog != "api":
        return load_catalog_file(settings.catalog)
    if settings.embedded and settings.catalog is None:
        from emulator.sample import sample_catalog

        return sample_catalog()
    return None


def check_inputs(exports: Sequence[str], settings: Settings, overrides: dict[str, Any] | None = None) -> None:
    """Raise InputError (exit 2) for the first problem a run would stop on: no such file, an unreadable
    one, an unknown preset, a malformed mapping or catalog, a missing column, a naive time."""
    if not exports:
        raise InputError("no export files given", hint="name at least one CSV, TSV, Parquet or JSONL file")
    paths = [Path(p) for p in exports]
    settings.rules_profile()
    mapping = mapping_of(settings, overrides)
    check_exports(paths, mapping)
    catalog = preflight_catalog(settings)
    if catalog is not None:
        analyze(paths, mapping, catalog, head=SAMPLE_ROWS)
        return
    # Without the catalog, the mapping can still be held against every file's columns.
    steps = catalog_frames([], {})[1]
    for p in paths:
        map_events(scan_export(p), mapping, str(p), steps=steps).collect_schema()
