"""The dashboard in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright) opens `/ui` of a
3-process cluster that requires an API token, shows three alive members and a converged cluster, and reflects a
partition of one node (suspect/dead, or diverged) within seconds. Without the token the page asks for it.

Screenshots are written to `$RUMOR_TEST_ARTIFACTS` when set, else to `tests/artifacts/` (ignored by git).
Chromium is a system package: `.ci/run` installs it (and sets RUMOR_REQUIRE_BROWSER=1, which turns a missing
browser into a failure); elsewhere the test is skipped when `/usr/bin/chromium` is absent, saying so. Playwright's
own browser download is never used (`playwright install` cannot reach its CDN here): it launches that binary.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from rumor.server.local_cluster import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "dashboard-test-token"
WAIT_MS = 20_000

if not CHROMIUM.exists():
    if os.environ.get("RUMOR_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"RUMOR_REQUIRE_BROWSER=1 but {CHROMIUM} is missing: apt-get install chromium")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium chromium-driver); CI installs it",
                allow_module_level=True)

from playwright.async_api import Browser, Page, async_playwright, expect  # noqa: E402  (after the skip: needs the browser)


def artifacts_dir() -> Path:
    base = os.environ.get("RUMOR_TEST_ARTIFACTS")
    path = Path(base) if base else Path(__file__).resolve().parents[1] / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster() -> AsyncIterator[LocalCluster]:
    with tempfile.TemporaryDirectory(prefix="rumor-test-dashboard-") as base:
        async with LocalCluster(3, Path(base), preset="local", api_token=TOKEN) as started:
            await started.wait_members(timeout_s=20)
            yield started


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def member_statuses(page: Page) -> dict[str, str]:
    return await page.eval_on_selector_all(  # type: ignore[no-any-return]
        "#members tr[data-member]", "rows => Object.fromEntries(rows.map(r => [r.dataset.member, r.dataset.status]))")


async def test_dashboard_shows_members_and_a_partition(cluster: LocalCluster, browser: Browser) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{cluster['n1'].http_url}/ui#token={TOKEN}")
    await expect(page.locator("#members tr[data-member][data-status=alive]")).to_have_count(3, timeout=WAIT_MS)
    assert await member_statuses(page) == {"n1": "alive", "n2": "alive", "n3": "alive"}
    assert "token" not in page.url  # the fragment is taken out of the address bar
    await cluster["n1"].api().incr("ui/visits", 1)
    await page.wait_for_selector("#verdict[data-verdict=converged]", timeout=WAIT_MS)
    assert await page.text_content("#node") == "n1"
    await page.screenshot(path=str(artifacts_dir() / "dashboard-converged.png"), full_page=True)

    await cluster.partition(["n1", "n2"], ["n3"])
    try:
        await cluster["n1"].api().incr("ui/visits", 1)
        await cluster["n3"].api().incr("ui/visits", 5)
        # CSS selectors, not script predicates: the page's Content-Security-Policy forbids eval, and stays on
        await page.wait_for_selector("#members tr[data-member=n3][data-status=suspect], "
                                     "#members tr[data-member=n3][data-status=dead]", timeout=WAIT_MS)
        await page.wait_for_selector("#verdict[data-verdict=diverged]", timeout=WAIT_MS)
        assert (await member_statuses(page))["n3"] in ("suspect", "dead")
        assert "n3" in (await page.text_content("#summary") or "")
        assert "n3 is suspect" in (await page.text_content("#events") or "")
        await page.screenshot(path=str(artifacts_dir() / "dashboard-partitioned.png"), full_page=True)
    finally:
        await cluster.heal()
    await expect(page.locator("#members tr[data-member][data-status=alive]")).to_have_count(3, timeout=30_000)
    await page.wait_for_selector("#verdict[data-verdict=converged]", timeout=30_000)
    assert errors == []
    await page.close()


async def test_without_the_token_the_page_asks_for_it(cluster: LocalCluster, browser: Browser) -> None:
    page = await browser.new_page()
    await page.goto(f"{cluster['n2'].http_url}/ui")
    await page.wait_for_selector("#token-form:not([hidden])", timeout=WAIT_MS)
    assert await page.get_attribute("#connection", "data-state") == "unauthorized"
    await page.fill("#token", TOKEN)
    await page.click("#token-form button")
    await expect(page.locator("#members tr[data-member]")).to_have_count(3, timeout=WAIT_MS)
    assert await page.text_content("#node") == "n2"
    await page.close()
