"""Inspect a sample of an export: which preset fits, the column profile, the time range and the
first events the mapping would produce. Pure: a LazyFrame sample (the file's first rows) in, plain
data and small polars frames out; reading the file and printing is ``cli.inspect``'s job.

A preset fits when every column it requires exists (its required fields resolve, or its wide rules
match columns). Fitting presets are ranked by score: the share of the sample's event names the preset
knows (its action maps, entity maps, non-state patterns, or the Frigade action names), then how many
of its column fields the file has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

import polars as pl

from frigade.rules import Action
from transforms.columns import existing
from transforms.derive import catalog_features
from transforms.mapping import map_events
from transforms.quarantine import catalog_hints
from transforms.schema import DROP, InputError
from transforms.source import refuse_aggregates
from transforms.spec import SourceMapping
from transforms.validate import classify
from transforms.wide import match_columns

__all__ = ["Inspection", "PresetFit", "column_profile", "inspect_sample", "score_preset"]

_KNOWN = [a.value for a in Action] + [DROP]
_COLUMN_FIELDS = ("user", "group", "flow", "step", "action", "time", "event_id", "entity", "record_type")


@dataclass(frozen=True, slots=True)
class PresetFit:
    """How well one preset fits the sample."""

    name: str
    fits: bool
    score: float
    #: field -> the column the preset would read
    columns: Mapping[str, str]
    #: share of distinct sampled event names the preset knows (None: the shape has no event column)
    vocabulary: float | None
    why: str


@dataclass(frozen=True, slots=True)
class Inspection:
    source_file: str
    rows: int
    columns: int
    fits: tuple[PresetFit, ...]
    #: the best-fitting preset, or None
    preset: str | None
    #: why that preset, or why none fits
    why: str
    #: the mapping the events were produced with (the given one, else the best fit), or None
    mapping: str | None
    #: column, dtype, null_share, distinct, examples
    profile: pl.DataFrame
    time_range: tuple[datetime | None, datetime | None]
    #: the first events (canonical columns, plus status / reason when a catalog was given)
    events: pl.DataFrame
    notes: tuple[str, ...]
    #: what the sample names that the catalog does not have, with the mapping key that would fix it
    catalog_gaps: tuple[str, ...] = ()


def _example(value: object) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def column_profile(df: pl.DataFrame, examples: int = 3) -> pl.DataFrame:
    """One row per column: dtype, share of nulls (empty text counts as null), distinct values, examples."""
    rows = []
    n = max(df.height, 1)
    for name, dtype in df.schema.items():
        col = df.get_column(name)
        nulls = col.null_count()
        if dtype == pl.String:
            nulls += int((col.str.strip_chars() == "").sum())
        distinct = col.drop_nulls().unique(maintain_order=True)
        shown = [_example(v) for v in distinct.head(examples).to_list()]
        rows.append(
            {
                "column": name,
                "dtype": str(dtype),
                "null_share": round(nulls / n, 3),
                "distinct": int(col.n_unique()),
                "examples": ", ".join(shown),
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "column": pl.String,
            "dtype": pl.String,
            "null_share": pl.Float64,
            "distinct": pl.Int64,
            "examples": pl.String,
        },
    )


def _without_catalog(mapping: SourceMapping) -> SourceMapping:
    """The mapping with the derivations that need the catalog switched off."""
    return replace(
        mapping,
        infer_previous_step_completed=mapping.infer_previous_step_completed and mapping.step_by != "id",
        last_step_completes_flow=False,
        all_steps_complete_flow=False,
        completed_flow_completes_last_step=False,
        progress_step=(),
    )


_PLACEHOLDER_TIME = "1970-01-01T00:00:00Z"


def _previewable(mapping: SourceMapping, schema: pl.Schema) -> tuple[SourceMapping, list[str]]:
    """The mapping with placeholders for what only the user can declare, so a preview can run."""
    notes = []
    if not mapping.flow_constant and "flow" in mapping.required and not existing(schema, mapping.flow):
        mapping = replace(mapping, flow_constant="(flow_constant)")
        notes.append("the file names no flow: events show '(flow_constant)'; set flow_constant in a mapping")
    if mapping.default_time is None and (mapping.wide or not existing(schema, mapping.time)):
        mapping = replace(mapping, default_time=_PLACEHOLDER_TIME)
        notes.append(
            f"no default_time is declared: events without a time show {_PLACEHOLDER_TIME}; "
            "declare default_time in a mapping"
        )
    return mapping, notes


def score_preset(name: str, mapping: SourceMapping, df: pl.DataFrame) -> PresetFit:
    """Whether ``mapping`` fits the sample ``df`` and how well."""
    schema = df.schema
    found = {key: cols[0] for key in _COLUMN_FIELDS if (cols := existing(schema, getattr(mapping, key) or ()))}
    if mapping.wide:
        matched = match_columns(schema, mapping)
        if "user" not in found:
            return PresetFit(name, False, 0.0, found, None, f"no user id column (tried {', '.join(mapping.user)})")
        if not matched:
            return PresetFit(name, False, 0.0, found, None, "no column matches its wide rules")
        share = len(matched) / max(len(schema), 1)
        return PresetFit(
            name,
            True,
            1.0 + 3.0 * share + 0.5 * len(found),
            {**found, "wide": ", ".join(w.column for w in matched[:5])},
            None,
            f"{len(matched)} columns match its wide rules",
        )
    constants = {"flow": mapping.flow_constant, "action": mapping.action_constant}
    needs: list[str] = []
    for key in mapping.required:
        if key not in found and not constants.get(key) and not (key == "time" and mapping.default_time):
            tried = ", ".join(getattr(mapping, key)) or "none"
            if key == "flow" and "user" in found and "action" in found:
                needs.append(f"no flow column (tried {tried}): name the flow with flow_constant in a mapping")
                continue
            return PresetFit(name, False, 0.0, found, None, f"no {key} column (tried {tried})")
    vocabulary: float | None = None
    known = pl.col("action").is_in(_KNOWN)
    if mapping.action_map or mapping.entity_action_map:
        # a preset with its own vocabulary is not recognised by Frigade's action names alone
        known = known & ~pl.col("raw_event").is_in([a.value for a in Action])
    try:
        trial = replace(_previewable(_without_catalog(mapping), df.schema)[0], unmapped="quarantine")
        events = map_events(df.lazy(), trial, "sample")
        names = (
            events.filter(pl.col("raw_event").is_not_null())
            .group_by("raw_event")
            .agg(known.all().alias("known"))
            .collect()
        )
    except (InputError, pl.exceptions.PolarsError) as exc:
        return PresetFit(name, False, 0.0, found, None, f"mapping fails: {exc}")
    if names.height:
        vocabulary = names.filter(pl.col("known")).height / names.height
    elif df.height and not mapping.action_constant:
        # a dotted candidate can resolve into any JSON text column (`data.object.name` into a `data`
        # column) and read nothing: a preset that finds no event name in a sample of rows does not fit
        tried = ", ".join(mapping.action)
        return PresetFit(name, False, 0.0, found, None, f"no event names in the sample (tried {tried})")
    score = len(found) * 0.5 + 3.0 * (vocabulary if vocabulary is not None else 0.5) - len(needs)
    why = "; ".join([*needs, f"columns {', '.join(f'{k}={v}' for k, v in found.items())}"])
    if vocabulary is not None:
        why += f"; knows {vocabulary:.0%} of the event names"
    fits = vocabulary is None or vocabulary >= 0.3
    if not fits:
        why = f"knows only {vocabulary:.0%} of the event names; " + why
    return PresetFit(name, fits, round(score, 3), found, vocabulary, why)


def inspect_sample(
    sample: pl.LazyFrame,
    source_file: str,
    presets: Mapping[str, SourceMapping],
    *,
    mapping: SourceMapping | None = None,
    steps: pl.LazyFrame | None = None,
    flows: pl.LazyFrame | None = None,
    events: int = 10,
) -> Inspection:
    """Inspect a sample (the file's first rows). ``mapping`` is the user's choice (preset and/or
    mapping file); without it the events come from the best-fitting preset. With ``steps`` (and
    ``flows``), the catalog is used for derivations and the events are classified."""
    df = sample.collect()
    profile = column_profile(df)
    notes: list[str] = []
    empty = pl.DataFrame()
    try:
        users = [m.user for m in (*presets.values(), *([mapping] if mapping else []))]
        if not any(existing(df.schema, u) for u in users):
            refuse_aggregates(df.schema, mapping or SourceMapping(), source_file)
    except InputError as exc:
        return Inspection(source_file, df.height, df.width, (), None, str(exc), None, profile, (None, None), empty, ())
    fits = sorted(
        (score_preset(name, m, df) for name, m in presets.items()),
        key=lambda f: (not f.fits, -f.score, f.name),
    )
    best = fits[0] if fits and fits[0].fits else None
    if best is not None:
        why = f"{best.name}: {best.why}"
    else:
        closest = "; ".join(f"{f.name}: {f.why}" for f in fits[:3])
        why = f"no preset fits (closest: {closest}); write a mapping file (--mapping)"
    chosen = mapping if mapping is not None else presets[best.name] if best is not None else None
    produced = empty
    gaps: list[str] = []
    lo: datetime | None = None
    hi: datetime | None = None
    if chosen is not None:
        use, placeholders = _previewable(chosen, df.schema)
        notes += placeholders
        if steps is None and catalog_features(chosen):
            use = _without_catalog(use)
            notes.append(f"without a catalog, these inferences are not shown: {', '.join(catalog_features(chosen))}")
        try:
            mapped = map_events(df.lazy(), use, source_file, steps=steps)
            if steps is not None and flows is not None:
                mapped = classify(mapped, flows, steps)
            mapped_df = mapped.collect()
            if steps is not None and flows is not None:
                gaps = catalog_hints(mapped_df, _catalog_steps(steps))
            produced = mapped_df.sort("source_row", "ts", nulls_last=True).head(events)
            ts = mapped_df.get_column("ts")
            lo, hi = ts.min(), ts.max()  # type: ignore[assignment]
            naive = mapped_df.filter(pl.col("map_reason").str.starts_with("time has no zone"))
            if naive.height:
                notes.append(
                    f"{naive.height} sampled rows have times without a zone and the mapping declares "
                    "none: set timezone (nothing is guessed)"
                )
        except InputError as exc:
            notes.append(f"the mapping cannot run: {exc}")
    return Inspection(
        source_file=source_file,
        rows=df.height,
        columns=df.width,
        fits=tuple(fits),
        preset=best.name if best is not None else None,
        why=why,
        mapping=chosen.name if chosen is not None else None,
        profile=profile,
        time_range=(lo, hi),
        events=produced,
        notes=tuple(notes),
        catalog_gaps=tuple(gaps),
    )


def _catalog_steps(steps: pl.LazyFrame) -> dict[str, list[str]]:
    table = steps.sort("flow_slug", "step_index").group_by("flow_slug", maintain_order=True).agg("step_id").collect()
    return {str(f): list(ids) for f, ids in table.iter_rows()}
