"""The flow catalog: which flows exist and their ordered step ids.

Loaded from the simple YAML/JSON form (README, "The flow catalog"), from a saved ``GET /v1/public/flows``
response, or from that response fetched live (the client passes the parsed list in).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from frigade.documents import DocumentError, parse_mapping
from frigade.errors import CatalogError
from frigade.models import ExternalizedFlow


@dataclass(frozen=True, slots=True)
class CatalogFlow:
    slug: str
    step_ids: tuple[str, ...]
    name: str | None = None
    type: str | None = None
    status: str = "ACTIVE"
    version: int = 1
    steps: tuple[Mapping[str, Any], ...] = field(default=())

    def config(self) -> dict[str, Any]:
        """The flow's config as the API returns it in ``data``."""
        return {"steps": [dict(s) for s in self.steps] or [{"id": s} for s in self.step_ids]}


@dataclass(frozen=True, slots=True)
class Catalog:
    flows: tuple[CatalogFlow, ...]

    def __post_init__(self) -> None:
        slugs = [f.slug for f in self.flows]
        dupes = sorted({s for s in slugs if slugs.count(s) > 1})
        if dupes:
            raise CatalogError(f"duplicate flow slugs in catalog: {', '.join(dupes)}")

    @property
    def active(self) -> tuple[CatalogFlow, ...]:
        return tuple(f for f in self.flows if f.status == "ACTIVE")

    def get(self, slug: str) -> CatalogFlow | None:
        return next((f for f in self.flows if f.slug == slug), None)

    def step_table(self) -> list[dict[str, Any]]:
        """Rows of (flow_slug, step_id, step_index, step_count) for the active flows: the join table
        the polars stages use to validate and order steps."""
        return [
            {"flow_slug": f.slug, "step_id": s, "step_index": i, "step_count": len(f.step_ids)}
            for f in self.active
            for i, s in enumerate(f.step_ids)
        ]


def _steps_of(config: Mapping[str, Any], where: str) -> tuple[tuple[str, ...], tuple[Mapping[str, Any], ...]]:
    raw = config.get("steps")
    if not isinstance(raw, list) or not raw:
        raise CatalogError(f"{where}: 'steps' must be a non-empty list")
    steps: list[Mapping[str, Any]] = []
    for i, step in enumerate(raw):
        if not isinstance(step, Mapping) or not isinstance(step.get("id"), str | int) or step["id"] == "":
            raise CatalogError(f"{where}: step {i} has no 'id'")
        steps.append({**step, "id": str(step["id"])})
    ids = tuple(str(s["id"]) for s in steps)
    if len(set(ids)) != len(ids):
        raise CatalogError(f"{where}: step ids are not unique")
    return ids, tuple(steps)


def _flow_from_simple(entry: Any, where: str) -> CatalogFlow:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("slug"), str) or not entry["slug"]:
        raise CatalogError(f"{where}: each flow needs a 'slug'")
    where = f"{where} flow {entry['slug']!r}"
    ids, steps = _steps_of(entry, where)
    return CatalogFlow(
        slug=entry["slug"],
        step_ids=ids,
        name=entry.get("name"),
        type=entry.get("type"),
        status=str(entry.get("status", "ACTIVE")).upper(),
        version=int(entry.get("version", 1)),
        steps=steps,
    )


def flow_from_externalized(flow: ExternalizedFlow) -> CatalogFlow:
    """An API flow: ``data`` is a YAML (or JSON, which YAML also reads) string with ``steps``."""
    try:
        config = parse_mapping(flow.data or "", f"flow {flow.slug!r}'s data", "a mapping with 'steps'")
    except DocumentError as exc:
        raise CatalogError(str(exc)) from exc
    ids, steps = _steps_of(config, f"flow {flow.slug!r}")
    return CatalogFlow(
        slug=flow.slug,
        step_ids=ids,
        name=flow.name,
        type=flow.type,
        status=flow.status.upper(),
        version=flow.version,
        steps=steps,
    )


def catalog_from_api(flows: Iterable[ExternalizedFlow]) -> Catalog:
    return Catalog(tuple(flow_from_externalized(f) for f in flows))


def parse_catalog(text: str, where: str) -> Catalog:
    """Parse either catalog form; ``where`` names the source in error messages."""
    try:
        doc = parse_mapping(text, where, "a mapping with 'flows' or 'data'")
    except DocumentError as exc:
        raise CatalogError(str(exc)) from exc
    if "flows" in doc:
        entries = doc["flows"]
        if not isinstance(entries, list):
            raise CatalogError(f"{where}: 'flows' must be a list")
        return Catalog(tuple(_flow_from_simple(e, f"{where}") for e in entries))
    if "data" in doc and isinstance(doc["data"], list):
        try:
            api = [ExternalizedFlow.model_validate(e) for e in doc["data"]]
        except ValueError as exc:
            raise CatalogError(f"{where}: not a GET /v1/public/flows response: {exc}") from exc
        return catalog_from_api(api)
    raise CatalogError(f"{where}: expected a mapping with 'flows' or 'data'")


def externalize(flow: CatalogFlow) -> dict[str, Any]:
    """A flow in the ``GET /v1/public/flows`` shape (``data`` as a JSON string)."""
    return {
        "slug": flow.slug,
        "name": flow.name or flow.slug,
        "type": flow.type or "CHECKLIST",
        "version": flow.version,
        "status": flow.status,
        "data": json.dumps(flow.config()),
    }
