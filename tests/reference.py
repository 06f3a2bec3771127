"""The shared reference CRDs (KubeRay, Kueue): from the team's folder, else the vendored copies."""

import gzip
import os
from pathlib import Path

import yaml

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
HERE = Path(__file__).parent
CANDIDATES = [
    Path(os.environ["CRATER_REFERENCE_DIR"]) if os.environ.get("CRATER_REFERENCE_DIR") else None,
    HERE.parent.parent / "shared" / "reference",
    HERE / "data" / "reference",
]


def load_reference(name):
    """Parse reference file ``name`` (e.g. ``kueue-workloads.yaml``)."""
    for folder in filter(None, CANDIDATES):
        if (folder / name).exists():
            return yaml.load((folder / name).read_text(), Loader=LOADER)
        if (folder / f"{name}.gz").exists():
            return yaml.load(gzip.decompress((folder / f"{name}.gz").read_bytes()), Loader=LOADER)
    raise FileNotFoundError(f"reference file {name} not found in {[str(c) for c in CANDIDATES if c]}")
