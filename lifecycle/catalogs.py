"""Where a run's flow catalog comes from, decided once for every command: a file, the API, or the
bundled sample the embedded emulator serves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from frigade.catalog import Catalog, CatalogFlow, catalog_from_api, parse_catalog
from frigade.client import FrigadeClient
from frigade.errors import CatalogError
from transforms.schema import InputError

SAMPLE_LABEL = "the bundled sample (what the embedded emulator serves); --catalog FILE for yours"


@dataclass(frozen=True)
class CatalogSource:
    kind: Literal["file", "api", "sample"]
    #: the file, for kind "file"
    path: str | None = None

    @property
    def emulator_file(self) -> str | None:
        """The catalog an embedded emulator is started with (None: its bundled sample)."""
        return self.path if self.kind == "file" else None


def catalog_source(catalog: str | None, embedded: bool) -> CatalogSource:
    """``--catalog FILE`` is that file, else the API's; on the embedded emulator that is the bundled
    sample it serves, known without starting it."""
    if catalog and catalog != "api":
        return CatalogSource("file", catalog)
    if embedded:
        return CatalogSource("sample")
    return CatalogSource("api")


def local_catalog(source: CatalogSource) -> Catalog | None:
    """The catalog when it can be known without the API; None when it comes from the API."""
    if source.kind == "file" and source.path is not None:
        return load_catalog_file(source.path)
    if source.kind == "sample":
        from emulator.sample import sample_catalog

        return sample_catalog()
    return None


async def load_catalog(source: CatalogSource, client: FrigadeClient | None) -> Catalog:
    local = local_catalog(source)
    if local is not None:
        return local
    if client is None:
        raise InputError("--catalog api needs an API to read the flows from")
    return catalog_from_api(await client.list_flows())


def load_catalog_file(path: str) -> Catalog:
    p = Path(path)
    if not p.exists():
        raise InputError("catalog file not found", file=path)
    try:
        return parse_catalog(p.read_text(encoding="utf-8"), path)
    except CatalogError as exc:
        # the catalog's own messages start with the file's name, but for those about the whole catalog
        text, hint = str(exc), "see the catalog format in README, section 'The flow catalog'"
        if text.startswith(path):
            raise InputError(f"catalog {text}", hint=hint) from exc
        raise InputError(f"catalog: {text}", file=path, hint=hint) from exc


def catalog_record(catalog: Catalog) -> list[dict[str, Any]]:
    """The catalog as run.json keeps it: what a resume validates against."""
    return [{"slug": f.slug, "steps": list(f.step_ids), "status": f.status} for f in catalog.flows]


def catalog_of_record(recorded: list[dict[str, Any]]) -> Catalog:
    return Catalog(tuple(CatalogFlow(slug=f["slug"], step_ids=tuple(f["steps"]), status=f["status"]) for f in recorded))
