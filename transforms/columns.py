"""Column resolution and time parsing shared by the mapping stages (pure polars expressions).

Column references may be nested: ``properties.flow_id`` reads field ``flow_id`` of a struct column
``properties`` or of a JSON-text column of that name; a column literally named ``properties.flow_id``
(a flattened CSV header) wins over both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import polars as pl

from transforms.schema import InputError

TIME_FORMATS = ("iso", "epoch_s", "epoch_ms", "epoch_us")
NAIVE_REASON = "time has no zone and the source declares none (set timezone)"
_UTC = pl.Datetime("us", "UTC")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _json_path(parts: Sequence[str]) -> str:
    """A JSONPath for nested keys; keys such as ``$insert_id`` use bracket notation."""
    return "$" + "".join(f".{p}" if _IDENT.match(p) else f'["{p}"]' for p in parts)


def dtype_of(schema: pl.Schema, name: str) -> pl.DataType | None:
    """The dtype a column reference resolves to (String for a field of a JSON-text column), or None
    when it does not exist."""
    if name in schema:
        return schema[name]
    head, _, rest = name.partition(".")
    if not rest or head not in schema:
        return None
    dtype: pl.DataType = schema[head]
    if dtype == pl.String:
        return pl.String()
    for part in rest.split("."):
        if not isinstance(dtype, pl.Struct):
            return None
        found = {f.name: f.dtype for f in dtype.fields}
        if part not in found:
            return None
        nxt = found[part]
        dtype = nxt() if isinstance(nxt, type) else nxt
    return dtype


def resolve_column(schema: pl.Schema, name: str) -> pl.Expr | None:
    """The expression for one column reference, or None when the file has no such column."""
    if name in schema:
        return pl.col(name)
    head, _, rest = name.partition(".")
    if not rest or dtype_of(schema, name) is None:
        return None
    if schema[head] == pl.String:
        return pl.col(head).str.json_path_match(_json_path(rest.split(".")))
    expr = pl.col(head)
    for part in rest.split("."):
        expr = expr.struct.field(part)
    return expr


def existing(schema: pl.Schema, candidates: Sequence[str]) -> list[str]:
    """The candidate references that exist in the file, in the mapping's order."""
    return [c for c in candidates if resolve_column(schema, c) is not None]


def chosen(schema: pl.Schema, names: Sequence[str], *, coalesce: bool) -> list[str]:
    """Of the existing references, those read: the first, or (``coalesce``) all, first non-empty per
    row. A path into JSON text may be absent on any row, as the schema cannot tell: it is read with
    the references after it, up to the first column or struct field, first non-empty per row."""
    if coalesce:
        return list(names)
    for i, name in enumerate(names):
        if name in schema or schema.get(name.partition(".")[0]) != pl.String:
            return list(names[: i + 1])
    return list(names)


def text(expr: pl.Expr, *, strip: bool = True) -> pl.Expr:
    """Trimmed text, with empty strings as null: an empty id is no id. ``strip=False`` keeps the text
    exactly as written (still null when it is empty or only whitespace)."""
    t = expr.cast(pl.String)
    stripped = t.str.strip_chars()
    return pl.when(stripped.str.len_chars() > 0).then(stripped if strip else t)


def text_of(
    schema: pl.Schema, candidates: Sequence[str], *, coalesce: bool = False, strip: bool = True
) -> pl.Expr | None:
    """Text of the first candidate that exists, or (``coalesce``) of the first non-empty one per row."""
    names = chosen(schema, existing(schema, candidates), coalesce=coalesce)
    if not names:
        return None
    exprs = [text(e, strip=strip) for n in names if (e := resolve_column(schema, n)) is not None]
    return pl.coalesce(exprs) if len(exprs) > 1 else exprs[0]


# ---------------------------------------------------------------- time


def parse_instant(value: str, where: str) -> datetime:
    """A literal ISO-8601 time that must carry its zone (used for ``default_time``)."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"{where}: {value!r} is not an ISO-8601 time") from exc
    if parsed.tzinfo is None:
        raise InputError(f"{where}: {value!r} has no zone; write it with one, e.g. 2024-01-01T00:00:00Z")
    return parsed.astimezone(UTC)


def _localize(naive: pl.Expr, tz: str | None) -> tuple[pl.Expr, pl.Expr]:
    if tz:
        ts = naive.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")
        return ts.dt.cast_time_unit("us"), pl.lit(None, pl.String)
    return pl.lit(None, _UTC), pl.when(naive.is_not_null()).then(pl.lit(NAIVE_REASON))


def time_exprs(schema: pl.Schema, col: pl.Expr, name: str, fmt: str, tz: str | None) -> tuple[pl.Expr, pl.Expr]:
    """(ts as UTC datetime, reason when it cannot be trusted) for a time column of any dtype.

    Naive times become UTC only through a declared zone: nothing is guessed silently."""
    dtype = dtype_of(schema, name) or pl.String()
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone:
            return col.dt.convert_time_zone("UTC").dt.cast_time_unit("us"), pl.lit(None, pl.String)
        return _localize(col, tz)
    if isinstance(dtype, pl.Date):
        return _localize(col.cast(pl.Datetime("us")), tz)
    if dtype.is_numeric() and fmt == "iso":
        return by_magnitude(col, integer=dtype.is_integer()), pl.lit(None, pl.String)
    if dtype.is_numeric() and not fmt.startswith("epoch_"):
        raise InputError(
            f"the time column is numeric and time_format is the pattern {fmt!r}; use iso (epoch units "
            "told apart by size) or declare the unit: epoch_s, epoch_ms or epoch_us",
            field=name,
        )
    attempts = text_attempts(fmt)
    txt = col.cast(pl.String).str.strip_chars()
    iso = iso_text(txt)
    parsed = [(parse(iso if needs_iso else txt), aware) for parse, aware, needs_iso in attempts]
    aware_ts = pl.coalesce([e for e, aware in parsed if aware]) if any(a for _, a in parsed) else pl.lit(None, _UTC)
    naive = [e for e, aware in parsed if not aware]
    if not naive:
        return aware_ts, pl.lit(None, pl.String)
    local_ts, local_reason = _localize(pl.coalesce(naive), tz)
    return pl.coalesce(aware_ts, local_ts), pl.when(aware_ts.is_null() & pl.coalesce(naive).is_not_null()).then(
        local_reason
    )


#: (parse text into a datetime, whether the result is aware (UTC), whether it reads ``iso_text``)
Attempt = tuple[Callable[[pl.Expr], pl.Expr], bool, bool]
_ISO_AWARE = ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%:z")
_ISO_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")


#: a zone written as a word after the time (BigQuery's ``... UTC``, ``Z``): all mean UTC
_UTC_WORD = r"\s*(?:[Zz]|UTC|GMT|UCT)$"


def iso_text(txt: pl.Expr) -> pl.Expr:
    """ISO-8601 text in the one shape the ISO attempts read: a ``Z`` or a trailing ``UTC`` (BigQuery)
    as ``+00:00``, ``T`` between date and time, and an hour-only offset (Postgres ``timestamptz``
    text: ``+00``, ``-07``) with its minutes."""
    return (
        txt.str.replace(_UTC_WORD, "+00:00")
        .str.replace(" ", "T", literal=True)
        .str.replace(r"(:\d{2}(?:\.\d+)?[+-]\d{2})$", "${1}:00")
    )


def _strptime(fmt: str, utc: bool) -> Callable[[pl.Expr], pl.Expr]:
    def parse(t: pl.Expr) -> pl.Expr:
        return t.str.to_datetime(fmt, strict=False, time_zone="UTC" if utc else None, time_unit="us")

    return parse


def _strptime_zone_word(fmt: str) -> Callable[[pl.Expr], pl.Expr]:
    """A pattern with ``%Z``: the parser skips any word there, so the word is read here. UTC, GMT or
    Z make the time UTC; any other word (``PST`` names no one offset) leaves it unread."""
    plain = _strptime(fmt, True)

    def parse(t: pl.Expr) -> pl.Expr:
        return pl.when(t.str.contains(_UTC_WORD)).then(plain(t))

    return parse


def _epoch(fmt: str) -> Callable[[pl.Expr], pl.Expr]:
    scale = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1}[fmt]

    def parse(t: pl.Expr) -> pl.Expr:
        numeric = pl.when(t.str.contains(r"^-?\d+(\.\d+)?$")).then(t)
        micros = (numeric.cast(pl.Float64, strict=False) * scale).round(0)
        return pl.from_epoch(micros.cast(pl.Int64, strict=False), time_unit="us").dt.replace_time_zone("UTC")

    return parse


def by_magnitude(value: pl.Expr, *, integer: bool) -> pl.Expr:
    """Epoch seconds, milliseconds, microseconds or nanoseconds told apart by size: each unit's values
    for the years 1973-5138 lie in their own band (below 1e11 seconds, 1e14 ms, 1e17 µs)."""
    size = value.abs()
    if integer:
        micros = (
            pl.when(size < 10**11)
            .then(value * 1_000_000)
            .when(size < 10**14)
            .then(value * 1_000)
            .when(size < 10**17)
            .then(value)
            .otherwise(value // 1_000)
        )
    else:
        scale = pl.when(size < 1e11).then(1e6).when(size < 1e14).then(1e3).when(size < 1e17).then(1.0).otherwise(1e-3)
        micros = (value * scale).round(0).cast(pl.Int64, strict=False)
    return pl.from_epoch(micros.cast(pl.Int64), time_unit="us").dt.replace_time_zone("UTC")


def _epoch_any(t: pl.Expr) -> pl.Expr:
    """Numeric text as epoch time in the unit its size says (integers exactly, decimals as floats)."""
    whole = pl.when(t.str.contains(r"^-?\d{1,19}$")).then(t).cast(pl.Int64, strict=False)
    decimal = pl.when(t.str.contains(r"^-?\d+\.\d+$")).then(t).cast(pl.Float64, strict=False)
    return pl.coalesce(by_magnitude(whole, integer=True), by_magnitude(decimal, integer=False))


def _utc_z(t: pl.Expr) -> pl.Expr:
    return t.str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", strict=False, time_unit="us").dt.replace_time_zone("UTC")


def text_attempts(fmt: str) -> list[Attempt]:
    """The parses one declared format tries on text, in order; the first that reads a value wins.
    ISO first tries the most common shape (``...T...Z``) on the text as it is, then every other ISO
    shape (``transforms.columns.iso_text``), then numbers as epoch time in the unit their size says:
    the common text forms need no format flag."""
    if fmt.startswith("epoch_"):
        return [(_epoch(fmt), True, False)]
    if "%" in fmt:
        if "%Z" in fmt:
            return [(_strptime_zone_word(fmt), True, False)]
        aware = "%z" in fmt or "%:z" in fmt or "%#z" in fmt
        return [(_strptime(fmt, aware), aware, False)]
    return [
        (_utc_z, True, False),
        *((_strptime(f, True), True, True) for f in _ISO_AWARE),
        *((_strptime(f, False), False, True) for f in _ISO_NAIVE),
        (_epoch_any, True, False),
    ]


def stage_text_time(
    lf: pl.LazyFrame, txt: pl.Expr, formats: Sequence[str], tz: str | None, prefix: str
) -> tuple[pl.LazyFrame, pl.Expr, pl.Expr]:
    """(frame with helper columns, ts, reason) for a text time column tried against ``formats``.

    Each parse is its own column and reads only the rows every earlier one left without a usable time
    (polars would run every branch of a ``coalesce`` on every row), so a column in the first format
    costs one parse, not one per format. Every parse reads the text as it was, or for the ISO parses
    its ISO shape; a naive time is usable only with a declared zone, so without one a later format
    may still read the row."""
    rest, iso = f"{prefix}rest", None
    lf = lf.with_columns(txt.alias(rest))
    got: list[pl.Expr] = []
    naive: list[pl.Expr] = []
    for k, (parse, is_aware, needs_iso) in enumerate(a for f in formats for a in text_attempts(f)):
        if needs_iso and iso is None:
            iso = f"{prefix}iso{k}"
            lf = lf.with_columns(iso_text(pl.col(rest)).alias(iso))
        value = parse(pl.col(iso if needs_iso and iso else rest))
        if not is_aware:
            lf = lf.with_columns(value.alias(f"{prefix}naive{k}"))
            naive.append(pl.col(f"{prefix}naive{k}"))
            value = _localize(naive[-1], tz)[0]
        lf = lf.with_columns(value.alias(f"{prefix}{k}"))
        unread = pl.col(f"{prefix}{k}").is_null()
        got.append(pl.col(f"{prefix}{k}"))
        lf = lf.with_columns(
            pl.when(unread).then(pl.col(rest)).alias(f"{prefix}rest{k}"),
            *([pl.when(unread).then(pl.col(iso)).alias(f"{prefix}iso_rest{k}")] if iso else []),
        )
        rest, iso = f"{prefix}rest{k}", (f"{prefix}iso_rest{k}" if iso else None)
    ts = pl.coalesce(got)
    if tz or not naive:
        return lf, ts, pl.lit(None, pl.String)
    return lf, ts, pl.when(ts.is_null() & pl.any_horizontal(n.is_not_null() for n in naive)).then(pl.lit(NAIVE_REASON))


def time_multi(
    schema: pl.Schema, col: pl.Expr, name: str, formats: Sequence[str], tz: str | None
) -> tuple[pl.Expr, pl.Expr]:
    """Like ``time_exprs`` but trying each declared format in turn (e.g. ISO, then epoch ms)."""
    dtype = dtype_of(schema, name) or pl.String()
    if dtype.is_numeric():
        epoch = [f for f in formats if f.startswith("epoch_")]
        formats = epoch[:1] or formats[:1]
    parsed = [time_exprs(schema, col, name, f, tz) for f in formats]
    if len(parsed) == 1:
        return parsed[0]
    ts = pl.coalesce([p[0] for p in parsed])
    reason = pl.when(ts.is_null()).then(pl.coalesce([p[1] for p in parsed]))
    return ts, reason


def time_columns(
    lf: pl.LazyFrame,
    schema: pl.Schema,
    candidates: Sequence[str],
    formats: Sequence[str],
    tz: str | None,
    *,
    coalesce: bool,
    default: datetime | None,
) -> tuple[pl.LazyFrame, pl.Expr, pl.Expr, pl.Expr]:
    """(frame with helper columns, ts, ts_raw, map_reason) for a mapping's time candidates.

    Without ``coalesce`` the first existing column is the time; with it, the first non-empty one per
    row. ``default`` (a declared instant) stands in where a row has no time at all."""
    names = chosen(schema, existing(schema, candidates), coalesce=coalesce)
    # (ts, raw text, present, reason) per column. Only a text column keeps its raw text (for messages
    # about rows that fail); a typed column's value is the time itself, and formatting every row of it
    # as text would cost more than the rest of the mapping.
    parts: list[tuple[pl.Expr, pl.Expr, pl.Expr, pl.Expr]] = []
    for i, n in enumerate(names):
        col = resolve_column(schema, n)
        assert col is not None
        if (dtype_of(schema, n) or pl.String()) == pl.String:
            raw_name = f"__time{i}_raw"
            lf = lf.with_columns(text(col).alias(raw_name))
            raw = pl.col(raw_name)
            lf, ts, reason = stage_text_time(lf, raw, formats, tz, f"__time{i}_")
            parts.append((ts, raw, raw.is_not_null(), reason))
        else:
            ts, reason = time_multi(schema, col, n, formats, tz)
            parts.append((ts, pl.lit(None, pl.String), col.is_not_null(), reason))
    if not parts:
        if default is None:
            return lf, pl.lit(None, _UTC), pl.lit(None, pl.String), pl.lit("no time column")
        return lf, pl.lit(default, _UTC), pl.lit(default.isoformat(), pl.String), pl.lit(None, pl.String)
    raw = pl.coalesce([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    present = pl.any_horizontal([p[2] for p in parts]) if len(parts) > 1 else parts[0][2]
    ts = pl.coalesce([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    chained: pl.Expr = pl.lit(None, pl.String)
    for _ts, _raw, p_present, p_reason in reversed(parts):
        chained = pl.when(p_present).then(p_reason).otherwise(chained)
    missing: pl.Expr
    if default is not None:
        ts = pl.when(~present).then(pl.lit(default, _UTC)).otherwise(ts)
        missing = pl.lit(None, pl.String)
        raw = pl.when(~present).then(pl.lit(default.isoformat(), pl.String)).otherwise(raw)
    else:
        missing = pl.lit("missing time")
    reason = (
        pl.when(~present)
        .then(missing)
        .when(ts.is_null() & chained.is_null())
        .then(pl.lit("unparseable time"))
        .otherwise(pl.when(ts.is_null()).then(chained))
    )
    return lf, ts, raw, reason
