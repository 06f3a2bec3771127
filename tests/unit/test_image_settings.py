"""The embedded default without docker-registry: commits are off and say why; names and tags."""

import pytest
from traitlets.config import Config

from crater_hub.embedded import start_embedded_registry
from crater_hub.images.local_registry import MISSING
from crater_hub.images.service import ImageError, check_name_and_tag, user_component
from crater_hub.images.settings import CraterImages


def test_without_docker_registry_commits_are_off_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker-registry on it
    c = Config()
    assert start_embedded_registry(c, tmp_path / "registry") is None
    settings = CraterImages(config=c)
    assert not settings.enabled and settings.why_disabled == MISSING
    assert "apt-get install docker-registry" in MISSING


@pytest.mark.parametrize("name, tag, field", [("Torch", "v1", "name"), ("a b", "v1", "name"),
                                              ("ok", ".v1", "tag"), ("ok", "", "tag"), ("-x", "v1", "name")])
def test_invalid_names_and_tags_name_the_field(name, tag, field):
    with pytest.raises(ImageError) as e:
        check_name_and_tag(name, tag)
    assert e.value.status == 400 and e.value.message.startswith(field)


def test_user_names_become_one_repository_component_without_collisions():
    assert user_component("alice") == "alice"
    assert user_component("Alice@Example.org").startswith("alice-example-org-")
    assert user_component("Alice@Example.org") != user_component("alice@example.org")
