"""The vendored chart schema and defaults (tests/data/reference/) are the shared folder's."""

import gzip
from pathlib import Path

import pytest

from tests.reference import CANDIDATES

VENDORED = Path(__file__).resolve().parents[1] / "data" / "reference"
SHARED = CANDIDATES[1]


@pytest.mark.parametrize("name", ["z2jh-values.schema.yaml", "z2jh-values.yaml"])
def test_vendored_copy_matches_the_shared_reference(name):
    vendored = gzip.decompress((VENDORED / f"{name}.gz").read_bytes())
    if (SHARED / name).exists():  # a fresh clone without the shared folder still has the copy
        assert vendored == (SHARED / name).read_bytes(), f"refresh tests/data/reference/{name}.gz"
    assert vendored.startswith(b"#") or b"hub:" in vendored
