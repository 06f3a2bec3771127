"""The real registry the image tests push to: Debian's docker-registry, as the embedded default runs it."""

import pytest

from crater_hub.images.local_registry import PUSH_USER, LocalRegistry, registry_binary


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A docker-registry on 127.0.0.1 with htpasswd auth and deletes enabled; stopped at the end."""
    if registry_binary() is None:
        pytest.skip("docker-registry is not installed (./dev test installs it as root)")
    process = LocalRegistry(tmp_path_factory.mktemp("registry")).start()
    yield process
    process.stop()


@pytest.fixture
def push_client(registry):
    from crater_hub.images.registry import RegistryClient

    return RegistryClient(registry.url, PUSH_USER, registry.credentials()[PUSH_USER], chunk=64 * 1024)
