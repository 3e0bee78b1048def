"""Built-in source presets and the resolution of preset + mapping file + flags into one mapping."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transforms.mapping import SourceMapping, mapping_from_dict
from transforms.schema import InputError

PRESETS: dict[str, SourceMapping] = {"long": SourceMapping()}


def resolve_mapping(
    preset: str | None,
    mapping_doc: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    mapping_where: str = "mapping",
) -> SourceMapping:
    """Preset (default ``long``), then the user's YAML mapping, then command-line overrides."""
    name = preset or "long"
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; built in: {', '.join(sorted(PRESETS))}")
    mapping = PRESETS[name]
    if mapping_doc:
        mapping = mapping_from_dict(mapping_doc, base=mapping, where=mapping_where)
    if overrides:
        mapping = mapping_from_dict(overrides, base=mapping, where="command-line options")
    return mapping
