"""A gzip stream of any one export (Mixpanel's ``.jsonl.gz``, Segment's ``<time>.<uuid>.gz``, an
Amplitude archive's hourly files): decompressed in chunks to a local copy, never held in memory. Its
format is the name's without ``.gz`` or, when that says nothing, found from the content."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

from lifecycle.readers.base import Container, Member
from lifecycle.readers.errors import reading
from lifecycle.readers.staging import copy_stream, identity, staged

__all__ = ["GZIP"]

_SUFFIXES = (".gz", ".gzip")


def _members(name: str, kind: str, local: Path) -> Iterator[Member]:
    inner = next((kind[: -len(s)] for s in _SUFFIXES if kind.lower().endswith(s)), kind)

    def write(dest: Path) -> None:
        with reading(name, "not a readable gzip file (truncated, or not gzip)"), gzip.open(local, "rb") as src:
            copy_stream(src, dest)  # type: ignore[arg-type]

    yield Member(name, inner, staged(("gunzip", *identity(local)), "", write))


GZIP = Container("gzip", _SUFFIXES, b"\x1f\x8b", _members)
