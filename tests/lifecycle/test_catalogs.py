"""Where the catalog comes from: decided once for the run, the dry run, the pre-flight check and inspect."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.sample import sample_catalog
from lifecycle.catalogs import CatalogSource, catalog_of_record, catalog_record, catalog_source, local_catalog
from transforms.schema import InputError


@pytest.mark.parametrize(
    ("catalog", "embedded", "source"),
    [
        ("cat.yaml", False, CatalogSource("file", "cat.yaml")),
        ("cat.yaml", True, CatalogSource("file", "cat.yaml")),
        ("api", False, CatalogSource("api")),
        (None, False, CatalogSource("api")),
        # the embedded emulator serves the bundled sample: known without starting it
        (None, True, CatalogSource("sample")),
        ("api", True, CatalogSource("sample")),
    ],
)
def test_the_catalog_source(catalog: str | None, embedded: bool, source: CatalogSource) -> None:
    assert catalog_source(catalog, embedded) == source


def test_only_a_file_is_handed_to_the_emulator() -> None:
    assert CatalogSource("file", "c.yaml").emulator_file == "c.yaml"
    assert CatalogSource("sample").emulator_file is None


def test_local_catalogs_and_the_api(tmp_path: Path) -> None:
    assert local_catalog(CatalogSource("sample")) == sample_catalog()
    assert local_catalog(CatalogSource("api")) is None
    with pytest.raises(InputError, match="catalog file not found"):
        local_catalog(CatalogSource("file", str(tmp_path / "nope.yaml")))
    bad = tmp_path / "bad.yaml"
    bad.write_text("flows: [\n")
    with pytest.raises(InputError, match=r"bad.yaml: not valid YAML/JSON at line \d+"):
        local_catalog(CatalogSource("file", str(bad)))


def test_the_recorded_catalog_reads_back_as_the_one_planned() -> None:
    catalog = sample_catalog()
    back = catalog_of_record(catalog_record(catalog))
    assert [(f.slug, f.step_ids, f.status) for f in back.flows] == [
        (f.slug, f.step_ids, f.status) for f in catalog.flows
    ]
