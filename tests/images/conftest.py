"""The real registry the image tests push to: Debian's docker-registry, as the embedded default runs it."""

import pytest

from crater_hub.images.local_registry import PULL_USER, PUSH_USER, LocalRegistry, registry_binary


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


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="session")
def images_cluster(images_dir):
    from crater_hub.localkube import LocalKubeProcess

    cluster = LocalKubeProcess(images_dir / "localkube", tie_to_parent=True).start(timeout=60)
    yield cluster
    cluster.stop()


def registry_args(registry):
    creds = registry.credentials()
    return [f"--CraterImages.registry_url={registry.url}",
            f"--CraterImages.push_username={PUSH_USER}", f"--CraterImages.push_password={creds[PUSH_USER]}",
            f"--CraterImages.pull_username={PULL_USER}", f"--CraterImages.pull_password={creds[PULL_USER]}",
            '--KubeSpawner.image_pull_secrets=["crater-image-pull"]']


@pytest.fixture(scope="session")
def images_hub(images_dir, images_cluster, registry):
    """The hub of the embedded default (demo profiles) with its registry, as jupyterhub_config.py
    wires it when it starts both itself; a small quota so that the refusals are reachable."""
    from tests.e2e.hub import DEMO_CRATER, HubProcess

    hub = HubProcess(images_dir / "hub", images_cluster.kubeconfig, slow_spawn_timeout=10,
                     env={"CRATER_CONFIG_FILE": str(DEMO_CRATER)},
                     extra_args=[*registry_args(registry), "--CraterImages.max_images_per_user=3",
                                 "--CraterImages.max_commit_size=20Mi"]).start()
    yield hub
    hub.stop()
