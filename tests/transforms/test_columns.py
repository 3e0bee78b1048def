"""transforms.columns: column references (nested, JSON text, flattened headers), text and times."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from transforms.columns import (
    NAIVE_REASON,
    dtype_of,
    existing,
    iso_text,
    parse_instant,
    resolve_column,
    text,
    text_of,
    time_columns,
    time_exprs,
    time_multi,
)
from transforms.schema import InputError

NESTED = pl.DataFrame(
    {
        "properties": [{"flow_id": "from-struct", "step": {"id": "s1"}}],
        "props": ['{"a": {"b": 1}, "$insert_id": "x"}'],
        "properties.flow_id": ["flat"],
    }
)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def times(
    values: list[str | None], formats: tuple[str, ...], tz: str | None = None, default: datetime | None = None
) -> list[tuple[datetime | None, str | None, str | None]]:
    frame = pl.DataFrame({"t": values}, schema={"t": pl.String})
    lf, ts, raw, reason = time_columns(frame.lazy(), frame.schema, ["t"], formats, tz, coalesce=False, default=default)
    return lf.select(ts, raw.alias("raw"), reason.alias("reason")).collect().rows()


def test_dtype_of_follows_structs_and_reads_json_text_fields_as_text() -> None:
    schema = NESTED.schema
    assert dtype_of(schema, "properties.flow_id") == pl.String
    assert dtype_of(schema, "properties.step.id") == pl.String
    assert dtype_of(schema, "props.a.b") == pl.String
    assert dtype_of(schema, "properties.nope") is None
    assert dtype_of(schema, "nope.x") is None
    assert dtype_of(schema, "nope") is None


def test_a_flattened_header_wins_and_json_keys_may_need_brackets() -> None:
    schema = NESTED.schema
    exprs = {
        "flat": resolve_column(schema, "properties.flow_id"),
        "step": resolve_column(schema, "properties.step.id"),
        "insert": resolve_column(schema, "props.$insert_id"),
        "ab": resolve_column(schema, "props.a.b"),
    }
    assert resolve_column(schema, "properties.missing") is None
    got = NESTED.select(e.alias(k) for k, e in exprs.items() if e is not None)
    assert got.rows() == [("flat", "s1", "x", "1")]
    assert existing(schema, ["nope", "props.a.b", "properties", "x.y"]) == ["props.a.b", "properties"]


def test_text_trims_and_treats_blank_as_no_value_unless_kept_as_written() -> None:
    frame = pl.DataFrame({"v": ["  u1 ", "", "   ", None, "u2"]})
    got = frame.select(text(pl.col("v")).alias("trim"), text(pl.col("v"), strip=False).alias("kept"))
    assert got.rows() == [("u1", "  u1 "), (None, None), (None, None), (None, None), ("u2", "u2")]


def test_text_of_takes_the_first_existing_column_or_coalesces_per_row() -> None:
    frame = pl.DataFrame({"userId": [" ", "u2"], "anonymousId": ["a1", "a2"], "n": [1, 2]})
    first = text_of(frame.schema, ["user_id", "userId", "anonymousId"])
    each = text_of(frame.schema, ["userId", "anonymousId"], coalesce=True)
    number = text_of(frame.schema, ["n"])
    assert text_of(frame.schema, ["nope"]) is None
    assert first is not None
    assert each is not None
    assert number is not None
    got = frame.select(first.alias("first"), each.alias("each"), number.alias("n"))
    assert got.rows() == [(None, "a1", "1"), ("u2", "u2", "2")]


def test_parse_instant_needs_a_zone() -> None:
    assert parse_instant(" 2024-03-01T10:00:00+02:00 ", "default_time") == at(2024, 3, 1, 8)
    assert parse_instant("2024-03-01T10:00:00Z", "x") == at(2024, 3, 1, 10)
    with pytest.raises(InputError, match="has no zone"):
        parse_instant("2024-03-01T10:00:00", "default_time")
    with pytest.raises(InputError, match="default_time: 'soon' is not an ISO-8601 time"):
        parse_instant("soon", "default_time")


def test_iso_text_reads_z_and_a_space_separator() -> None:
    frame = pl.DataFrame(
        {"t": ["2024-03-01 10:00:00Z", "2024-03-01T10:00:00z", "2024-03-01", "2024-03-01 10:00:00.5+00", "x UTC"]}
    )
    assert frame.select(iso_text(pl.col("t"))).to_series().to_list() == [
        "2024-03-01T10:00:00+00:00",
        "2024-03-01T10:00:00+00:00",
        "2024-03-01",
        "2024-03-01T10:00:00.5+00:00",
        "x+00:00",
    ]


def test_each_format_is_tried_in_turn_and_each_failure_has_its_reason() -> None:
    values = [
        "2024-03-01T10:00:00Z",
        "1709287200000",
        "2024-03-01 11:00:00",
        "",
        "nope",
        None,
        "2024-03-01T12:00+02:00",
    ]
    assert times(values, ("iso", "epoch_ms")) == [
        (at(2024, 3, 1, 10), "2024-03-01T10:00:00Z", None),
        (at(2024, 3, 1, 10), "1709287200000", None),
        (None, "2024-03-01 11:00:00", NAIVE_REASON),
        (None, None, "missing time"),
        (None, "nope", "unparseable time"),
        (None, None, "missing time"),
        (at(2024, 3, 1, 10), "2024-03-01T12:00+02:00", None),
    ]


def test_a_declared_zone_places_naive_times_and_a_default_fills_missing_ones() -> None:
    default = at(2024, 4, 1)
    got = times(["2024-03-01 11:00:00", "", "2024-07-01T11:00:00", "x"], ("iso",), "Europe/Paris", default)
    assert got == [
        (at(2024, 3, 1, 10), "2024-03-01 11:00:00", None),
        (default, "2024-04-01T00:00:00+00:00", None),
        (at(2024, 7, 1, 9), "2024-07-01T11:00:00", None),
        (None, "x", "unparseable time"),
    ]


def test_epoch_units_and_strftime_patterns() -> None:
    assert times(["1709287200", "1709287200.5", "-1"], ("epoch_s",)) == [
        (at(2024, 3, 1, 10), "1709287200", None),
        (datetime(2024, 3, 1, 10, 0, 0, 500000, tzinfo=UTC), "1709287200.5", None),
        (datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), "-1", None),
    ]
    assert times(["1709287200000000", "12abc"], ("epoch_us",)) == [
        (at(2024, 3, 1, 10), "1709287200000000", None),
        (None, "12abc", "unparseable time"),
    ]
    assert times(["01/03/2024 10:00"], ("%d/%m/%Y %H:%M",), "UTC") == [(at(2024, 3, 1, 10), "01/03/2024 10:00", None)]


def test_a_numeric_time_column_is_epoch_time_in_the_unit_its_size_says() -> None:
    frame = pl.DataFrame({"t": [1709287200, 1709287200_000, 1709287200_000_000, 1709287200_000_000_000]})
    ts, reason = time_exprs(frame.schema, pl.col("t"), "t", "iso", None)
    assert frame.select(ts, reason.alias("r")).rows() == [(at(2024, 3, 1, 10), None)] * 4
    floats = pl.DataFrame({"t": [1709287200.5, 1709287200_000.0]})
    ts, _ = time_exprs(floats.schema, pl.col("t"), "t", "iso", None)
    assert floats.select(ts).to_series().to_list() == [
        datetime(2024, 3, 1, 10, 0, 0, 500000, tzinfo=UTC),
        at(2024, 3, 1, 10),
    ]
    with pytest.raises(InputError, match="declare the unit"):
        time_exprs(frame.schema, pl.col("t"), "t", "%Y%m%d", None)
    ts, reason = time_multi(frame.schema, pl.col("t"), "t", ("iso", "epoch_s"), None)
    assert frame.head(1).select(ts, reason.alias("r")).rows() == [(at(2024, 3, 1, 10), None)]


def test_common_time_texts_need_no_format_flag() -> None:
    """ISO 8601, Postgres timestamptz text, BigQuery's UTC suffix and epoch numbers as text, all under
    the default ``iso``; a zone written in the value is used, and a naive time still needs one."""
    frac = datetime(2024, 9, 8, 2, 46, 23, 116739, tzinfo=UTC)
    cases = {
        "2024-09-08T02:46:23.116739Z": frac,
        "2024-09-08T02:46:23.116739+00:00": frac,
        "2024-09-08T02:46:23.116739+0000": frac,
        "2024-09-08 02:46:23.116739+00": frac,
        "2024-09-08 02:46:23+00": at(2024, 9, 8, 2, 46, 23),
        "2024-09-08 02:46:23.1+00": datetime(2024, 9, 8, 2, 46, 23, 100000, tzinfo=UTC),
        "2024-09-08 04:46:23+02": at(2024, 9, 8, 2, 46, 23),
        "2024-09-07 21:46:23-05": at(2024, 9, 8, 2, 46, 23),
        "2024-09-08 08:16:23+05:30": at(2024, 9, 8, 2, 46, 23),
        "2024-03-01 19:00:14.999000 UTC": datetime(2024, 3, 1, 19, 0, 14, 999000, tzinfo=UTC),
        "2024-03-01 19:00:14 UTC": at(2024, 3, 1, 19, 0, 14),
        "1709287200": at(2024, 3, 1, 10),
        "1709287200000": at(2024, 3, 1, 10),
        "1709287200000000": at(2024, 3, 1, 10),
        "1709287200000000000": at(2024, 3, 1, 10),
        "1709287200.25": datetime(2024, 3, 1, 10, 0, 0, 250000, tzinfo=UTC),
    }
    got = times(list(cases), ("iso",))
    assert [(g[0], g[2]) for g in got] == [(want, None) for want in cases.values()]
    assert times(["2024-09-08 02:46:23.116739", "2024-09-08"], ("iso",)) == [
        (None, "2024-09-08 02:46:23.116739", NAIVE_REASON),
        (None, "2024-09-08", NAIVE_REASON),
    ]


def test_a_zone_word_in_a_strftime_pattern_is_read_not_called_missing() -> None:
    fmt = ("%Y-%m-%d %H:%M:%S%.f %Z",)
    assert times(["2024-03-01 19:00:14.999000 UTC", "2024-03-01 19:00:14 GMT", "2024-03-01 19:00:14 PST"], fmt) == [
        (datetime(2024, 3, 1, 19, 0, 14, 999000, tzinfo=UTC), "2024-03-01 19:00:14.999000 UTC", None),
        (at(2024, 3, 1, 19, 0, 14), "2024-03-01 19:00:14 GMT", None),
        (None, "2024-03-01 19:00:14 PST", "unparseable time"),
    ]


def test_typed_time_columns_keep_no_text() -> None:
    frame = pl.DataFrame(
        {
            "aware": [datetime(2024, 3, 1, 11, tzinfo=UTC)],
            "naive": [datetime(2024, 3, 1, 11)],
        },
        schema={"aware": pl.Datetime("ms", "Europe/Paris"), "naive": pl.Datetime("us")},
    )
    for column, tz, want in (("aware", None, (at(2024, 3, 1, 11), None, None)), ("naive", None, None)):
        lf, ts, raw, reason = time_columns(
            frame.lazy(), frame.schema, [column], ("iso",), tz, coalesce=False, default=None
        )
        row = lf.select(ts, raw.alias("raw"), reason.alias("reason")).collect().row(0)
        assert row == (want or (None, None, NAIVE_REASON))


def test_coalesced_time_columns_take_the_first_present_one() -> None:
    frame = pl.DataFrame({"sent_at": [None, "2024-03-01T09:00:00Z"], "timestamp": ["2024-03-01T10:00:00Z", "bad"]})
    lf, ts, raw, reason = time_columns(
        frame.lazy(), frame.schema, ["sent_at", "timestamp"], ("iso",), None, coalesce=True, default=None
    )
    assert lf.select(ts, raw.alias("raw"), reason.alias("reason")).collect().rows() == [
        (at(2024, 3, 1, 10), "2024-03-01T10:00:00Z", None),
        (at(2024, 3, 1, 9), "2024-03-01T09:00:00Z", None),
    ]


def test_no_time_column_at_all() -> None:
    frame = pl.DataFrame({"x": [1]})
    lf, ts, raw, reason = time_columns(frame.lazy(), frame.schema, ["t"], ("iso",), None, coalesce=False, default=None)
    assert lf.select(ts, raw.alias("raw"), reason.alias("reason")).collect().rows() == [(None, None, "no time column")]
