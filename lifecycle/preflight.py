"""Input checks that run before Prefect or any server starts, so that a bad path, preset, mapping,
catalog or column answers in about a second instead of after tens of seconds of start-up.

They read only the files' schemas and first rows; the run's own analysis still checks every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lifecycle.catalogs import catalog_source, local_catalog
from lifecycle.exports import analyze_exports, check_exports, sources_of
from lifecycle.job import mapping_of
from lifecycle.prepare import refuse_nothing_to_migrate, refuse_too_many_quarantined
from lifecycle.readers import KINDS, open_exports
from lifecycle.settings import Settings
from transforms.analysis import Analysis, plan_requests
from transforms.mapping import map_events
from transforms.schema import InputError
from transforms.validate import ROW_SPAN, VALID, catalog_frames

#: rows of each export analysed up front: enough for a column-wide problem (a naive time, an
#: unparseable format) to show, little enough to answer at once on any size of file
SAMPLE_ROWS = 10_000


def check_inputs(exports: Sequence[str], settings: Settings, overrides: dict[str, Any] | None = None) -> None:
    """Raise InputError (exit 2) for the first problem a run would stop on: no such file, an unreadable
    one, an unknown preset, a malformed mapping or catalog, a missing column, a naive time."""
    if not exports:
        raise InputError("no export files given", hint=f"name at least one export ({KINDS}), folder or bucket")
    paths = [Path(p) for p in exports]
    settings.rules_profile()
    mapping = mapping_of(settings, overrides)
    check_exports(paths, mapping)
    catalog = local_catalog(catalog_source(settings.catalog, settings.embedded))
    if catalog is not None:
        sample = analyze_exports(paths, mapping, catalog, head=SAMPLE_ROWS)
        files = len(open_exports(paths))  # a folder or an archive is several
        _refuse_if_nothing_to_migrate(sample, files)
        if settings.max_quarantined is not None and _whole(sample, files):
            planned = plan_requests(sample, mode=settings.mode, rules=settings.rules_profile())
            refuse_too_many_quarantined(planned.counts, planned.quarantine, settings.max_quarantined)
        return
    # Without the catalog, the mapping can still be held against every file's columns.
    steps = catalog_frames([], {})[1]
    for source in sources_of(paths, mapping):
        map_events(source.scan, mapping, source.name, steps=steps).collect_schema()


def _refuse_if_nothing_to_migrate(sample: Analysis, files: int) -> None:
    """When the sample is the whole export (every file shorter than it) and not one of its rows can
    be migrated, say why now rather than after Prefect and the emulator have started."""
    problems = sample.rows.get_column("problem")
    quarantined = int((problems > VALID).sum())
    if not _whole(sample, files) or not quarantined or bool((problems == VALID).any()):
        return
    counts = {"rows_in": sample.rows.height, "rows_quarantined": quarantined}
    refuse_nothing_to_migrate(counts, sample.quarantine)


def _whole(sample: Analysis, files: int) -> bool:
    """Whether the sample is the whole export: every file shorter than it."""
    per_file = (sample.rows.get_column("row_key") // ROW_SPAN).value_counts()
    return per_file.height <= files and bool((per_file.get_column("count") < SAMPLE_ROWS).all())
