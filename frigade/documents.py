"""The one reader of YAML/JSON documents (a mapping, a catalog, a rules profile, a preset, a config
file, prefect.yaml): every malformed one is told the same way, in one line with its place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class DocumentError(ValueError):
    """A document that is missing, unreadable, not YAML/JSON, or not a mapping. ``file`` names it."""

    def __init__(self, problem: str, file: str) -> None:
        super().__init__(f"{file}: {problem}")
        self.problem, self.file = problem, file


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML parse error in one line ("line 3, column 7: ..."), without the excerpt PyYAML draws."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else str(problem)


def parse_mapping(text: str, where: str, what: str = "a mapping of key: value") -> dict[str, Any]:
    """``text`` as a YAML/JSON mapping (empty text is an empty one); ``what`` says what it should be."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DocumentError(f"not valid YAML/JSON at {yaml_problem(exc)}", where) from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise DocumentError(f"expected {what}, found {type(doc).__name__}", where)
    return doc


def load_mapping(path: Path | str, what: str = "a mapping of key: value") -> dict[str, Any]:
    """The YAML/JSON mapping in the file at ``path``."""
    p = Path(path)
    if not p.is_file():
        raise DocumentError("file not found" if not p.exists() else "is not a file", str(path))
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentError(f"unreadable: {exc}", str(path)) from exc
    return parse_mapping(text, str(path), what)
