"""Built-in source presets and the resolution of preset + mapping file + flags into one mapping.

Presets are data: one YAML file per source shape in ``transforms/presets/`` (the same keys a user's
``--mapping`` file takes, see ``transforms/presets/README.md``), each read over the defaults of
``SourceMapping``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from frigade.documents import DocumentError, load_mapping
from transforms.schema import InputError, input_error
from transforms.spec import SourceMapping, mapping_from_dict

PRESET_DIR = Path(__file__).with_name("presets")


def load_preset(path: Path) -> SourceMapping:
    """One preset file; its ``name`` defaults to the file's stem."""
    try:
        doc = {"name": path.stem, **load_mapping(path, "a preset: a mapping of field: value")}
    except DocumentError as exc:
        raise input_error(exc) from exc
    return mapping_from_dict(doc, base=SourceMapping(), where=f"preset {path.name}")


def load_presets(directory: Path = PRESET_DIR) -> dict[str, SourceMapping]:
    """Every ``*.yaml`` preset of a folder, by name."""
    presets = {}
    for path in sorted(directory.glob("*.yaml")):
        preset = load_preset(path)
        presets[preset.name] = preset
    return presets


PRESETS: dict[str, SourceMapping] = load_presets()


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
