"""The one registry of what the job reads: places (a file, a folder, a glob, an object store),
containers (gzip, zip, nested in any order) and formats (CSV, TSV, Parquet, JSON lines, JSON
documents). Each format declares how it is scanned, checked (naming file and row) and counted; each
container how its members are reached. A new one is one entry here beside its siblings.

``open_exports`` turns the paths a user gives into ``Export``s, the files of rows a run reads, each
named as messages name it (``export.zip!2024/part-1.json.gz``). Every read error becomes an
``InputError`` in ``lifecycle.readers.errors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lifecycle.readers import places
from lifecycle.readers.base import Container, Export, Format
from lifecycle.readers.delimited import CSV, TSV
from lifecycle.readers.errors import READ_ERRORS, reading, unreadable
from lifecycle.readers.gzipped import GZIP
from lifecycle.readers.jsondoc import JSON
from lifecycle.readers.jsonlines import JSONL
from lifecycle.readers.parquet import PARQUET
from lifecycle.readers.staging import identity
from lifecycle.readers.zipped import ZIP
from transforms.schema import InputError

__all__ = [
    "CONTAINERS",
    "FORMATS",
    "KINDS",
    "READ_ERRORS",
    "Export",
    "input_files",
    "open_exports",
    "reading",
    "unreadable",
]

#: formats by name, in the order a name's candidates are tried (JSON lines before a JSON document)
FORMATS: tuple[Format, ...] = (CSV, TSV, PARQUET, JSONL, JSON)
#: formats tried, by content, for a file whose name says nothing (a gzip member ``<time>.<uuid>``)
_BY_CONTENT: tuple[Format, ...] = (PARQUET, JSONL, JSON, TSV, CSV)
CONTAINERS: tuple[Container, ...] = (GZIP, ZIP)
#: what a message lists as readable
KINDS = ".csv, .tsv, .parquet, .jsonl, .json, or a .gz or .zip of them"
#: bytes of a file's top read to find its format by content
_HEAD = 1 << 20


def _suffixed(kind: str, suffixes: tuple[str, ...]) -> bool:
    return kind.lower().endswith(suffixes)


def _wanted(name: str) -> bool:
    """A folder's or a bucket's file that is an export, by its name."""
    suffixes = [s for f in FORMATS for s in f.suffixes] + [s for c in CONTAINERS for s in c.suffixes]
    return _suffixed(name, tuple(suffixes))


def input_files(paths: Sequence[Path | str]) -> list[tuple[str, Path]]:
    """(name, local file) of every file the paths name, containers unopened."""
    return [f for raw in paths for f in places.expand(raw, _wanted, KINDS)]


def open_exports(paths: Sequence[Path | str]) -> list[Export]:
    """The files of rows the paths name, in order: a folder's and an archive's sorted by name."""
    return [e for name, local in input_files(paths) for e in _resolve(name, name, local, given=True)]


#: what each file was found to hold, by its name and identity: a run opens its exports several times
#: (checks, analysis, estimate), and a folder of thousands of files is sniffed once
_found: dict[tuple[str, str, bool, tuple[str, int, int]], list[Export]] = {}


def _resolve(name: str, kind: str, local: Path, *, given: bool) -> list[Export]:
    with reading(name):
        key = (name, kind, given, identity(local))
    if key not in _found:
        _found[key] = _open(name, kind, local, given=given)
    return _found[key]


def _open(name: str, kind: str, local: Path, *, given: bool) -> list[Export]:
    with reading(name), local.open("rb") as fh:
        head = fh.read(_HEAD)
    named = [f for f in FORMATS if _suffixed(kind, f.suffixes)]
    # by content too, but not for a given file of another type (an .xlsx is a zip too)
    by_magic = bool(named) or not given
    container = next(
        (c for c in CONTAINERS if _suffixed(kind, c.suffixes) or (by_magic and head.startswith(c.magic))), None
    )
    if container is not None:
        members = container.members(name, kind, local)
        found = [e for m in members for e in _resolve(m.name, m.kind, m.local, given=False)]
        if not found:
            raise InputError(f"the {container.name} file holds no export ({KINDS})", file=name)
        return found
    if named:
        return [Export(name, local, next((f for f in named if f.sniff(head)), named[0]))]
    sniffed = None if given else next((f for f in _BY_CONTENT if f.sniff(head)), None)
    if sniffed is None:
        if given:
            raise InputError(f"unsupported file type (use {KINDS})", file=name)
        return []
    return [Export(name, local, sniffed)]
