"""Source mappings: how an export's columns become canonical events, lazily, in three stages.

1. rows -> events: columns, event names, times (``transforms.rows``); or, for a wide table, the
   unpivot of the columns that ``wide`` rules match (``transforms.wide``); or, for a state table
   (one row per user and item), of its status columns (``transforms.state_table``);
2. derivations (``transforms.derive``): one row into several events (``A+B`` in an action map),
   inferred completions, state rows into the events that produce the state, declared conflations;
3. the canonical frame of ``transforms.schema``.

The mapping itself is plain data (``transforms.spec``); the expressions over the export's columns
are ``transforms.source``. This module is the top of that stack: nothing in ``transforms`` imports it.
"""

from __future__ import annotations

import polars as pl

from transforms.derive import derive
from transforms.rows import row_events
from transforms.schema import InputError, conform
from transforms.source import refuse_aggregates
from transforms.spec import SourceMapping
from transforms.state_table import state_table_events
from transforms.wide import wide_events

# Re-exported: lifecycle (job, pipeline, exports) and transforms.presets name them from here.
__all__ = ["map_events"]


def map_events(
    lf: pl.LazyFrame, mapping: SourceMapping, source_file: str, *, steps: pl.LazyFrame | None = None
) -> pl.LazyFrame:
    """Map one export (lazily) into the canonical event frame. Raises InputError, naming the file
    and field, when a required column is missing, when the file holds only aggregates, or when a
    derivation needs the catalog's step order and ``steps`` (the catalog step table: flow_slug,
    step_id, step_index, step_count) is not given.

    One source row may become several events (they share source_file / source_row), or, in a wide
    table, none (a user with no progress)."""
    schema = lf.collect_schema()
    refuse_aggregates(schema, mapping, source_file)
    try:
        if mapping.wide:
            events = wide_events(lf, schema, mapping, source_file)
        elif mapping.state_table:
            events = state_table_events(lf, schema, mapping, source_file)
        else:
            events = row_events(lf, schema, mapping, source_file)
        events = derive(events, mapping, steps)
    except InputError as exc:
        if exc.file is None:
            bare = str(exc).removeprefix(f"field {exc.field!r}: ") if exc.field else str(exc)
            raise InputError(bare, file=source_file, field=exc.field) from exc
        raise
    return conform(events)
