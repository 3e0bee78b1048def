"""The canonical event frame every source is mapped into, and the input error type.

One row per source event. Columns (all present after mapping, nullable unless said):
- source_file (str, not null), source_row (int, 1-based data row of that file, not null)
- user_id, group_id, flow_slug, step_id (str); step_index (int, 0-based, when the source
  refers to steps by position; validation resolves it into step_id with the catalog)
- action (str): a Frigade action name, DROP for a known non-state event, or the raw name when unknown
- raw_event (str): the source's own event name or status, for messages and reports
- ts (datetime us UTC); ts_raw (str): the source text, for messages
- data (str): a JSON object as text
- event_id (str): the source's own event id, when it has one (de-duplication key)
- map_reason (str): a reason found while mapping (bad time, naive time), null when fine
"""

from __future__ import annotations

import polars as pl

from frigade.documents import DocumentError

DROP = "DROP"
#: the action of an event the mapping itself drops: an ``action_map`` entry mapped to DROP, or a flow
#: whose ``flow_map`` entry is DROP (a flow the user chose to leave out). Counted apart from DROP's
#: non-state events, and never quarantined.
MAPPED_DROP = "DROP:action_map"
FLOW_DROP = "DROP:flow_map"

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "source_row": pl.Int64(),
    "user_id": pl.String(),
    "group_id": pl.String(),
    "flow_slug": pl.String(),
    "step_id": pl.String(),
    "step_index": pl.Int64(),
    "action": pl.String(),
    "raw_event": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "ts_raw": pl.String(),
    "data": pl.String(),
    "event_id": pl.String(),
    "map_reason": pl.String(),
}


class InputError(ValueError):
    """Bad input found before anything is sent: the run stops with exit code 2.

    The message names the file, and the row and field where there is one; ``hint`` says what to do."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = ", ".join(
            p for p in (file and f"file {file}", row is not None and f"row {row}", field and f"field {field!r}") if p
        )
        text = f"{where}: {message}" if where else message
        super().__init__(f"{text} ({hint})" if hint else text)
        self.file, self.row, self.field, self.hint = file, row, field, hint


def input_error(exc: DocumentError, hint: str | None = None) -> InputError:
    """A malformed or missing document (mapping, config file, preset) as the input error it is."""
    return InputError(exc.problem, file=exc.file, hint=hint)


def conform(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Select the canonical columns in order, adding missing ones as nulls of the right type."""
    names = lf.collect_schema().names()
    return lf.select([(pl.col(c) if c in names else pl.lit(None)).cast(t).alias(c) for c, t in EVENT_SCHEMA.items()])
