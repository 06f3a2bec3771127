"""The client tests that need the real hub share the e2e session's localkube and crater hub."""

from ..e2e.conftest import crater_hub, e2e_dir, localkube, make_crater_user  # noqa: F401
