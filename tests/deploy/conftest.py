"""What the deploy tests share: the repository's helm-values/, the chart's schema and defaults."""

import json
from pathlib import Path

import pytest
import yaml

from crater_hub import deploy
from tests.reference import load_reference

REPO = Path(__file__).resolve().parents[2]
HELM_VALUES = REPO / "helm-values"
BASE = HELM_VALUES / "crater.yaml"
EXAMPLES = sorted((HELM_VALUES / "examples").glob("*.yaml"))


def is_manifest_file(path):
    """A file of Kubernetes objects (every document has apiVersion and kind), not helm values."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return bool(docs) and all(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in docs)


VALUES_FILES = [BASE] + [p for p in EXAMPLES if not is_manifest_file(p)]
MANIFEST_FILES = [p for p in sorted(HELM_VALUES.rglob("*.yaml")) if is_manifest_file(p)]
OVERLAYS = [p for p in VALUES_FILES if p != BASE]


def rel(path):
    return str(path.relative_to(REPO))


@pytest.fixture(scope="session")
def chart_defaults():
    return load_reference("z2jh-values.yaml")


@pytest.fixture(scope="session")
def chart_schema():
    return load_reference("z2jh-values.schema.yaml")


@pytest.fixture(scope="session")
def chart_dir(tmp_path_factory, chart_defaults, chart_schema):
    """The chart as `helm pull jupyterhub/jupyterhub --untar` leaves it: values.yaml and the
    values.schema.json helm validates with (the chart's build turns the schema YAML into it)."""
    root = tmp_path_factory.mktemp("chart") / "jupyterhub"
    root.mkdir()
    (root / "values.yaml").write_text(yaml.safe_dump(chart_defaults))
    (root / "values.schema.json").write_text(json.dumps(chart_schema))
    return root


def values_for(chart_defaults, *files):
    """What helm renders with for `--values f1 --values f2 ...`."""
    return deploy.load_values(files, chart_defaults)
