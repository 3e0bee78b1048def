"""Generated long-format exports with realistic onboarding histories, built by polars expressions.

Every user gets some of the sample catalog's active flows; every user-flow follows one history template
(viewed only, partway, finished, finished and revisited, a skipped step, a dismissed flow, a reset and
redo, a step reset, a bare completion), at its own start time and pace. On top: exact duplicate rows
(re-exported events) and late rows written out of time order. Randomness is a hash of ids and the seed,
so the same seed gives the same export, and nothing is built as Python rows: the template table has a
few dozen rows, everything else is joins and expressions over integer ranges.

Columns are those of the ``long`` preset: user_id, group_id, flow_slug, step_id, action, created_at,
data. ``created_at`` is a UTC timestamp in Parquet and ISO-8601 text in CSV.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from frigade.catalog import Catalog, CatalogFlow

__all__ = ["ROWS_PER_USER", "TEMPLATE_WEIGHTS", "export_frame", "templates", "write_export"]

#: (template name, weight in percent); the weights sum to 100
TEMPLATE_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("viewed", 20),
    ("partway", 20),
    ("finished", 24),
    ("finished_revisited", 8),
    ("skipped_step", 8),
    ("dismissed", 8),
    ("reset_redo", 5),
    ("step_reset", 4),
    ("bare_completion", 3),
)
#: share (per mille) of users who have each flow, by position in the catalog's active flows
FLOW_SHARE = (800, 600, 500, 400, 400, 400)
DUPLICATE_PER_MILLE = 20
LATE_PER_MILLE = 30
DATA_PER_MILLE = 100
GROUP_PER_MILLE = 150
#: measured average rows per user with the sample catalog (used to size a run to a row count)
ROWS_PER_USER = 10.4

_T0 = datetime(2023, 1, 1, tzinfo=UTC)
_YEAR_US = 365 * 24 * 3600 * 1_000_000
_US = 1_000_000

E = tuple[str, int | None]


def _steps(n: int, upto: int) -> list[E]:
    out: list[E] = []
    for i in range(min(upto, n)):
        out += [("STARTED_STEP", i), ("COMPLETED_STEP", i)]
    return out


def templates(n: int) -> dict[str, list[E]]:
    """History templates for a flow of ``n`` steps: (action, step index or None) in time order."""
    last = n - 1
    half = max(1, n // 2)
    second = min(1, last)
    return {
        "viewed": [("STARTED_FLOW", None), ("STARTED_STEP", 0), ("STARTED_STEP", 0)],
        "partway": [("STARTED_FLOW", None), *_steps(n, half), ("STARTED_STEP", min(half, last))],
        "finished": [("STARTED_FLOW", None), *_steps(n, n), ("COMPLETED_FLOW", None)],
        "finished_revisited": [
            ("STARTED_FLOW", None),
            *_steps(n, n),
            ("COMPLETED_FLOW", None),
            ("STARTED_STEP", 0),
            ("COMPLETED_STEP", 0),
        ],
        "skipped_step": [
            ("STARTED_FLOW", None),
            ("STARTED_STEP", 0),
            ("SKIPPED_STEP", 0),
            ("STARTED_STEP", second),
            ("COMPLETED_STEP", second),
        ],
        "dismissed": [("STARTED_FLOW", None), ("STARTED_STEP", 0), ("SKIPPED_FLOW", None)],
        "reset_redo": [
            ("STARTED_STEP", 0),
            ("COMPLETED_STEP", 0),
            ("NOT_STARTED_FLOW", None),
            ("STARTED_FLOW", None),
            ("STARTED_STEP", 0),
            ("COMPLETED_STEP", 0),
            ("STARTED_STEP", second),
        ],
        "step_reset": [("STARTED_STEP", 0), ("COMPLETED_STEP", 0), ("NOT_STARTED_STEP", 0), ("STARTED_STEP", 0)],
        "bare_completion": [("COMPLETED_FLOW", None)],
    }


def _template_table(flows: Sequence[CatalogFlow]) -> pl.DataFrame:
    """One row per (flow, template, position): the few dozen rows every user-flow is expanded from."""
    rows: list[dict[str, object]] = []
    for f in flows:
        table = templates(len(f.step_ids))
        for t, (name, _) in enumerate(TEMPLATE_WEIGHTS):
            for pos, (action, idx) in enumerate(table[name]):
                rows.append(
                    {
                        "flow_slug": f.slug,
                        "template": t,
                        "pos": pos,
                        "action": action,
                        "step_id": f.step_ids[idx] if idx is not None else None,
                    }
                )
    return pl.DataFrame(
        rows,
        schema={
            "flow_slug": pl.String,
            "template": pl.Int32,
            "pos": pl.Int32,
            "action": pl.String,
            "step_id": pl.String,
        },
    )


def _rand(key: pl.Expr, seed: int, salt: int, modulo: int) -> pl.Expr:
    """A deterministic pseudo-random integer in [0, modulo) from an integer key."""
    return ((key.cast(pl.UInt64) * 0x9E3779B1 + salt).hash(seed) % modulo).cast(pl.Int64)


def _template_of(rand_pct: pl.Expr) -> pl.Expr:
    """Template number from a draw in [0, 100), by the cumulative weights."""
    bound = 0
    chain: pl.Expr | None = None
    for t, (_, weight) in enumerate(TEMPLATE_WEIGHTS[:-1]):
        bound += weight
        cond, value = rand_pct < bound, pl.lit(t, pl.Int32)
        chain = pl.when(cond).then(value) if chain is None else chain.when(cond).then(value)  # type: ignore[attr-defined]
    last = pl.lit(len(TEMPLATE_WEIGHTS) - 1, pl.Int32)
    return last if chain is None else chain.otherwise(last)  # type: ignore[attr-defined]


def export_frame(
    catalog: Catalog, users: int, seed: int, rows: int | None = None, *, user_offset: int = 0
) -> pl.LazyFrame:
    """The export as a lazy frame in export order (by ingestion time), ``rows`` rows when given.

    Users are numbered from ``user_offset``: exports generated with offsets ``users`` apart have no
    user in common (the parts of one export too big to generate at once); offset 0 is the export as
    it has always been."""
    flows = catalog.active
    table = _template_table(flows).lazy()
    uid = pl.col("uid")
    base = pl.LazyFrame({"uid": pl.int_range(user_offset, user_offset + users, dtype=pl.Int64, eager=True)})
    per_flow = []
    for k, f in enumerate(flows):
        share = FLOW_SHARE[k % len(FLOW_SHARE)]
        per_flow.append(
            base.filter(_rand(uid, seed, 11 + k, 1000) < share).select(
                uid, pl.lit(f.slug).alias("flow_slug"), pl.lit(k, pl.Int64).alias("fk")
            )
        )
    uf = (
        pl.concat(per_flow)
        .with_columns(
            (uid * 16 + pl.col("fk")).alias("ufk"),
        )
        .with_columns(
            _template_of(_rand(pl.col("ufk"), seed, 3, 100)).alias("template"),
            # start anywhere in the year; events 1 minute to 6 hours apart, one pace per user-flow
            (_rand(pl.col("ufk"), seed, 5, _YEAR_US)).alias("t_start"),
            (60 * _US + _rand(pl.col("ufk"), seed, 7, 6 * 3600 * _US)).alias("gap"),
        )
    )
    events = uf.join(table, on=["flow_slug", "template"], how="inner").with_columns(
        (pl.col("t_start") + pl.col("pos") * pl.col("gap")).alias("t_us"),
        (pl.col("ufk") * 64 + pl.col("pos")).alias("ek"),
    )
    dup = events.filter(_rand(pl.col("ek"), seed, 13, 1000) < DUPLICATE_PER_MILLE).with_columns(
        pl.lit(1, pl.Int64).alias("copy")
    )
    allrows = pl.concat([events.with_columns(pl.lit(0, pl.Int64).alias("copy")), dup])
    ek = pl.col("ek") * 2 + pl.col("copy")
    late = _rand(ek, seed, 17, 1000) < LATE_PER_MILLE
    ingest = pl.col("t_us") + pl.when(late).then(_rand(ek, seed, 19, 3 * 24 * 3600 * _US)).otherwise(0)
    out = (
        allrows.with_columns(ingest.alias("_ingest"), ek.alias("_ek"))
        .sort("_ingest", "_ek")
        .select(
            pl.format("user-{}", uid.cast(pl.String).str.zfill(7)).alias("user_id"),
            pl.when(_rand(uid, seed, 23, 1000) < GROUP_PER_MILLE)
            .then(pl.format("org-{}", (uid // 50).cast(pl.String)))
            .otherwise(None)
            .alias("group_id"),
            "flow_slug",
            "step_id",
            "action",
            (pl.lit(_T0) + pl.duration(microseconds=pl.col("t_us") // 1000 * 1000))
            .dt.cast_time_unit("ms")
            .alias("created_at"),
            pl.when(_rand(pl.col("ek"), seed, 29, 1000) < DATA_PER_MILLE)
            .then(pl.format('{{"source":"legacy","attempt":{}}}', pl.col("pos")))
            .otherwise(None)
            .alias("data"),
        )
    )
    return out.head(rows) if rows is not None else out


def users_for_rows(rows: int) -> int:
    """Users to generate so that the export has at least ``rows`` rows."""
    return max(10, int(rows / ROWS_PER_USER * 1.08) + 10)


def write_export(catalog: Catalog, path: Path, rows: int, seed: int, *, user_offset: int = 0) -> int:
    """Write an export of exactly ``rows`` rows (Parquet or CSV by suffix); returns the row count. Its
    users are numbered from ``user_offset`` (see ``export_frame``)."""
    lf = export_frame(catalog, users_for_rows(rows), seed, rows, user_offset=user_offset)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        lf.sink_parquet(path)
    elif path.suffix == ".csv":
        lf.with_columns(pl.col("created_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")).sink_csv(path)
    else:
        raise ValueError(f"unsupported export type {path.suffix!r}")
    return (
        int(pl.scan_parquet(path).select(pl.len()).collect().item())
        if path.suffix == ".parquet"
        else int(pl.scan_csv(path).select(pl.len()).collect().item())
    )
