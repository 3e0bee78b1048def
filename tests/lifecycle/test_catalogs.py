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


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "flows:\n  - slug: a\n    steps: [{id: x}]\n  - slug: a\n    steps: [{id: y}]\n",
            "duplicate flow slugs in catalog: a",
        ),
        ("flows:\n  - slug: a\n    steps: []\n", "flow 'a': 'steps' must be a non-empty list"),
    ],
)
def test_a_catalog_refusal_names_the_file_and_a_readme_section(tmp_path: Path, body: str, message: str) -> None:
    """Issue 22: two flows of one slug were refused without naming the catalog file, and every catalog
    refusal pointed to a document that is not in the repository."""
    path = tmp_path / "flows.yaml"
    path.write_text(body)
    with pytest.raises(InputError, match=message) as exc:
        local_catalog(CatalogSource("file", str(path)))
    assert str(exc.value).startswith(f"file {path}: catalog") or str(exc.value).startswith(f"catalog {path}")
    assert "README, section 'The flow catalog'" in str(exc.value)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert "### The flow catalog" in readme
