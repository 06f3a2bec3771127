"""A real hub on localkube with the demo crater profiles, and headless Debian Chromium to drive it.

The browser is the distribution's ``/usr/bin/chromium`` (Debian package ``chromium``), driven by
Playwright's client library; no browser is ever downloaded. Without it the tests fail, naming
the package to install.
"""

from pathlib import Path

import pytest

from ..e2e.hub import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture
async def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: the browser tests need Debian's Chromium "
                    "(apt-get install -y chromium)", pytrace=False)
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright's client: pip install -e '.[test]'", pytrace=False)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        await browser.close()


@pytest.fixture
def artifacts():
    """Where the tests save screenshots (``test-artifacts/``, kept after the run)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
