"""The catalog as small integers, so that the big stages sort, group and join numbers, not text.

- ``fl``: a flow's place in the catalog (every flow the catalog names, active or not);
- ``gs``: a step's place in the catalog's list of all steps of active flows, flow by flow in step
  order, so a flow's steps are ``offset[fl] .. offset[fl] + count[fl] - 1`` and a step's index in its
  flow is ``gs - offset[fl]``;
- ``act``: an action's place in ``ACTIONS``.

Text comes back only where a person or the API reads it, by gathering from these short lists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from frigade.rules import Action

ACTIONS: tuple[str, ...] = tuple(a.value for a in Action)
STEP_ACTION_CODES: tuple[int, ...] = tuple(i for i, a in enumerate(Action) if a.is_step)


def act_code(action: Action) -> int:
    return ACTIONS.index(action.value)


def enum_index(expr: pl.Expr, keys: Sequence[str]) -> pl.Expr:
    """The position of each value of ``expr`` in ``keys`` (unique texts), null where it is none of them.

    An Enum cast, which polars' streaming engine runs batch by batch; ``replace_strict`` (polars 2.1)
    collects the whole column first, which held 2 GiB per 10M rows of an export's events in memory."""
    return _named(expr.cast(pl.Enum(list(keys)), strict=False).to_physical(), expr)


def gather(values: Sequence[Any], index: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """``values[index]`` of each row (null where ``index`` is null), streamed like ``enum_index``;
    ``index`` must be below ``len(values)`` or null."""
    return _named(pl.lit(pl.Series(list(values), dtype=dtype)).gather(index), index)


def lookup(expr: pl.Expr, table: Mapping[str, Any], dtype: pl.DataType) -> pl.Expr:
    """``table[value]`` of each value of ``expr``, null where the table has none."""
    if not table:
        return _named(pl.lit(None, dtype), expr)
    return gather(list(table.values()), enum_index(expr, list(table)), dtype)


def _named(out: pl.Expr, like: pl.Expr) -> pl.Expr:
    """``out`` under ``like``'s output name, as ``replace_strict`` kept it."""
    try:
        return out.alias(like.meta.output_name())
    except pl.exceptions.ComputeError:
        return out


@dataclass(frozen=True)
class Codes:
    slugs: tuple[str, ...]
    statuses: tuple[str, ...]
    #: per flow code: index of its first step in ``step_ids`` and its number of steps (0 if inactive)
    offsets: tuple[int, ...]
    counts: tuple[int, ...]
    step_ids: tuple[str, ...]

    @classmethod
    def from_frames(cls, flows: pl.LazyFrame, steps: pl.LazyFrame) -> Codes:
        """From the catalog frames of ``transforms.validate.catalog_frames`` (small: collected here)."""
        f, s = pl.collect_all([flows, steps.sort("flow_slug", "step_index")])
        slugs = f.get_column("flow_slug").to_list()
        statuses = f.get_column("flow_status").to_list()
        for extra in s.get_column("flow_slug").unique(maintain_order=True).to_list():
            if extra not in slugs:
                slugs.append(extra)
                statuses.append("ACTIVE")
        by_flow: dict[str, list[str]] = {}
        for slug, sid in s.select("flow_slug", "step_id").iter_rows():
            by_flow.setdefault(slug, []).append(sid)
        offsets: list[int] = []
        counts: list[int] = []
        ids: list[str] = []
        for slug in slugs:
            offsets.append(len(ids))
            counts.append(len(by_flow.get(slug, [])))
            ids.extend(by_flow.get(slug, []))
        return cls(tuple(slugs), tuple(statuses), tuple(offsets), tuple(counts), tuple(ids))

    def digest(self, *extra: object) -> int:
        """A number that changes whenever the catalog does (flows, statuses, steps, their order), or
        ``extra``."""
        catalog = (self.slugs, self.statuses, self.step_ids, self.counts, extra)
        digest = hashlib.sha256(repr(catalog).encode()).digest()
        return int.from_bytes(digest[:8], "big") >> 1

    # ---------------------------------------------------------------- text -> codes

    def flow(self, slug: pl.Expr) -> pl.Expr:
        return enum_index(slug, self.slugs).cast(pl.UInt32)

    def flow_attr(self, fl: pl.Expr, values: tuple[int, ...] | tuple[str, ...], dtype: pl.DataType) -> pl.Expr:
        return gather(values, fl, dtype)

    def step_by_id(self, fl: pl.Expr, step_id: pl.Expr) -> pl.Expr:
        """``gs`` of the step named ``step_id`` in flow ``fl`` (null when the flow has no such step).
        Ids are looked up alone, then (flow, id) as one integer: no text is joined or concatenated."""
        number = {sid: i for i, sid in enumerate(dict.fromkeys(self.step_ids))}
        sid = enum_index(step_id, list(number)).cast(pl.UInt64)
        keys = [
            fl_ * len(number) + number[self.step_ids[g]]
            for fl_, (off, n) in enumerate(zip(self.offsets, self.counts, strict=True))
            for g in range(off, off + n)
        ]
        gs = [g for off, n in zip(self.offsets, self.counts, strict=True) for g in range(off, off + n)]
        if not keys:
            return pl.lit(None, pl.UInt32)
        key = fl.cast(pl.UInt64) * len(number) + sid
        # a dense table over every (flow, id) pair: flows x distinct step ids entries, small
        dense: list[int | None] = [None] * (len(self.slugs) * len(number))
        for k, g in zip(keys, gs, strict=True):
            dense[k] = g
        return gather(dense, key, pl.UInt32())

    def step_by_index(self, fl: pl.Expr, index: pl.Expr) -> pl.Expr:
        """``gs`` of the step at 0-based ``index`` of flow ``fl`` (null when out of range)."""
        count = self.flow_attr(fl, self.counts, pl.Int64())
        offset = self.flow_attr(fl, self.offsets, pl.Int64())
        ok = (index >= 0) & (index < count)
        return pl.when(ok).then(offset + index).cast(pl.UInt32)

    def action(self, name: pl.Expr) -> pl.Expr:
        return enum_index(name, list(ACTIONS)).cast(pl.UInt8)

    # ---------------------------------------------------------------- codes -> text

    def slug_series(self) -> pl.Series:
        return pl.Series("flow_slug", self.slugs, dtype=pl.String)

    def step_series(self) -> pl.Series:
        return pl.Series("step_id", self.step_ids, dtype=pl.String)

    def slug_of(self, fl: pl.Series) -> pl.Series:
        return self.slug_series().gather(fl)

    def step_of(self, gs: pl.Series) -> pl.Series:
        return self.step_series().gather(gs) if self.step_ids else pl.Series("step_id", [None] * len(gs), pl.String)

    def action_of(self, act: pl.Series) -> pl.Series:
        return pl.Series("action", ACTIONS, dtype=pl.String).gather(act)

    def offset_of(self, fl: pl.Expr) -> pl.Expr:
        return self.flow_attr(fl, self.offsets, pl.Int64())
