"""The registry's two kinds of entry: a ``Format`` reads one file of rows, a ``Container`` holds
files (a gzip stream, a zip archive). ``Export`` is one file of rows as the run reads it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from transforms.spec import SourceMapping

__all__ = ["Container", "Export", "Format", "Member", "rows_from_size"]


@dataclass(frozen=True)
class Export:
    """One file of rows: ``name`` is how messages name it (``a.csv``, ``s3://b/k.gz``,
    ``export.zip!2024/part-1.json.gz``), ``local`` the plain local file its rows are read from (the
    file itself, or its decompressed or downloaded copy), ``format`` the reader of those rows."""

    name: str
    local: Path
    format: Format
    #: what a row is called in messages: a JSON document's rows are its records
    unit: str = "line"

    def scan(self, mapping: SourceMapping | None = None) -> pl.LazyFrame:
        return self.format.scan(self, mapping)

    def check(self, mapping: SourceMapping | None, *, full: bool) -> None:
        self.format.check(self, mapping, full)

    def estimate(self) -> int:
        return self.format.estimate(self)

    def relax(self) -> bool:
        return self.format.relax(self)


@dataclass(frozen=True)
class Format:
    """A format of rows: its file suffixes, a test of a file's first bytes (to find the format when the
    name does not say), a lazy scan, a check that names file and row, a cheap row count, and
    ``relax``: after its rows failed to read, learn what made them fail so that reading them again
    quarantines the odd rows instead (whether there was something to learn)."""

    name: str
    suffixes: tuple[str, ...]
    sniff: Callable[[bytes], bool]
    scan: Callable[[Export, SourceMapping | None], pl.LazyFrame]
    check: Callable[[Export, SourceMapping | None, bool], None]
    estimate: Callable[[Export], int]
    relax: Callable[[Export], bool] = lambda export: False


@dataclass(frozen=True)
class Member:
    """A file inside a container: its name in messages, the name its format is chosen by (a gzip's
    without ``.gz``), and its local copy."""

    name: str
    kind: str
    local: Path


@dataclass(frozen=True)
class Container:
    """Files holding files: ``members(name, kind, local)`` yields each one, staged to a local file."""

    name: str
    suffixes: tuple[str, ...]
    magic: bytes
    members: Callable[[str, str, Path], Iterator[Member]]


#: bytes sampled from the top of a text file to estimate its rows
_SAMPLE = 1 << 20


def rows_from_size(path: Path, header: bool) -> int:
    """A text file's lines from its size and the length of its first lines (only the shard count
    rests on this)."""
    with path.open("rb") as fh:
        head = fh.read(_SAMPLE)
    if not head:
        return 0
    lines = max(1, head.count(b"\n"))
    return max(0, -(-path.stat().st_size * lines // len(head)) - (1 if header else 0))
