"""``ferry web`` in a real headless Chromium (Debian's chromium + chromedriver, driven by
Selenium): the list shows a running migration, its page shows the graph and the progress moves.
A screenshot of each page is saved under artifacts/."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry import FerryError, Orchestrator
from ferry.config import MigrationSettings, Settings, SimulatedSettings
from ferry.viz import RunStore
from ferry.web import WebServer

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLUSTER = Path(__file__).with_name("web_cluster.toml")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
        allow_module_level=True,
    )

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def live(db_url: str) -> Iterator[tuple[Orchestrator, WebServer]]:
    # a real-time simulated cluster where big-1's transfer takes ~20 s; the test aborts it
    settings = Settings(
        simulated=SimulatedSettings(speed=1.0, cluster=str(CLUSTER)),
        migration=MigrationSettings(post_retry_delay=0.0),
    )
    orch = Orchestrator(db_url, settings=settings)
    store = RunStore.open(db_url)  # the page reads the database on its own, as `ferry web` does
    server = WebServer(store, 0, refresh_seconds=0.5).start()
    try:
        yield orch, server
    finally:
        for m in orch.list():  # never leave a run going: close() waits for it
            if not m.done:
                orch.migrations.request_abort(m.id)
        server.shutdown()
        store.close()
        orch.close()


# The pages replace their rows and texts every refresh (0.5 s here), so an element found by
# find_element can be gone by the time it is read. These helpers read in one script call,
# which runs between two refreshes, never across one.
def _attr(driver: Any, dom_id: str, name: str) -> str | None:
    value = driver.execute_script(
        "var e = document.getElementById(arguments[0]);"
        "return e ? e.getAttribute(arguments[1]) : null;",
        dom_id,
        name,
    )
    return None if value is None else str(value)


def _text(driver: Any, dom_id: str) -> str:
    value = driver.execute_script(
        "var e = document.getElementById(arguments[0]); return e ? e.innerText : null;", dom_id
    )
    return "" if value is None else str(value).strip()


def _cells(driver: Any, row_id: str) -> list[str]:
    return [
        str(v).strip()
        for v in driver.execute_script(
            "var r = document.getElementById(arguments[0]);"
            "return r ? Array.from(r.cells).map(function (c) { return c.innerText; }) : [];",
            row_id,
        )
    ]


def percent(driver: Any) -> float:
    text = _text(driver, "percent")
    match = re.match(r"([\d.]+)%", text)
    return float(match.group(1)) if match else -1.0


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == PNG_MAGIC
    return path


def test_list_and_live_migration_page(browser: Any, live: tuple[Orchestrator, WebServer]) -> None:
    orch, server = live
    handle = orch.live_migrate("big-1", wait=False)
    wait = WebDriverWait(
        browser, 30, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )

    # the list shows the migration running (the page refreshes itself)
    browser.get(server.url)
    row = f"m-{handle.id}"
    wait.until(lambda d: _attr(d, row, "data-status") == "running")
    cells = _cells(browser, row)
    assert cells[0] == handle.id and cells[1] == "running" and cells[2] == "big-1"
    assert cells[3] == "node-a" and cells[4] == "node-c"
    screenshot(browser, "web-list.png")

    # its page: the graph with the transfer running, and the progress moving
    wait.until(lambda d: d.find_element(By.LINK_TEXT, handle.id).click() or True)
    wait.until(lambda d: "state-running" in _class(d, "atom-transfer"))
    assert "state-success" in _class(browser, "atom-pre-live-migration")
    assert "state-pending" in _class(browser, "atom-complete")
    assert _text(browser, "status") == "running"
    wait.until(lambda d: percent(d) > 0)
    first = percent(browser)
    wait.until(lambda d: percent(d) > first + 1)
    attempts = _text(browser, "attempts")
    assert "node-b" in attempts and "rejected" in attempts  # the reschedule
    shot = screenshot(browser, "web-migration.png")
    assert shot.stat().st_size > 10_000

    # aborted from elsewhere: the page follows the run to its end without a reload
    orch.migrations.request_abort(handle.id)
    wait.until(lambda d: _text(d, "status") == "cancelled")
    wait.until(lambda d: "state-reverted" in _class(d, "atom-transfer"))
    with pytest.raises(FerryError):
        handle.wait(timeout=30)


def _class(driver: Any, dom_id: str) -> str:
    return _attr(driver, dom_id, "class") or ""
