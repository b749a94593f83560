"""The migration dashboard in a real browser: Debian's headless Chromium, driven by Selenium.

A newcomer runs `strangler up`, opens the dashboard URL it prints, gives the admin token, sees
the live phase, the traffic by side and its chart drawing it (figures, never "measuring"), and
rolls a step back from the page; the proxy's own status must show the step taken, and the page
must follow. The screenshot it leaves behind
(in the test's temporary directory and in var/screenshots/dashboard.png) is what the page
looked like right after the rollback.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from strangler.phases import Phase
from tests.dashboard.conftest import ADMIN_TOKEN, CAPABILITY, ROOT, System
from tests.support.programs import require_programs

CARD = f'section[data-capability="{CAPABILITY}"]'


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """Headless Chromium from Debian's packages; the driver is the packaged chromedriver, so
    Selenium Manager has nothing to download."""
    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    options.binary_location = str(shutil.which("chromium"))
    service = Service(executable_path=str(shutil.which("chromedriver")))
    browser = webdriver.Chrome(service=service, options=options)
    try:
        yield browser
    finally:
        browser.quit()


@contextmanager
def shoppers(proxy: str) -> Iterator[None]:
    """Reads of products through the proxy until the block ends, so requests/s move."""
    stop = threading.Event()

    def browse() -> None:
        with httpx.Client(base_url=proxy, timeout=10) as client:
            while not stop.is_set():
                client.get("/products", params={"limit": 5})
                stop.wait(0.02)

    worker = threading.Thread(target=browse, daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join(timeout=10)


def wait_for(browser: WebDriver, what: str, condition: Callable[[WebDriver], object]) -> object:
    """Wait up to 15 s; the live part is swapped every 1.5 s, so stale elements are retried."""
    waiter = WebDriverWait(
        browser, 15, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    )
    return waiter.until(condition, message=f"the page never showed {what}")


def clicked(selector: str) -> Callable[[WebDriver], bool]:
    """Click the button (found afresh: the live part may have been swapped since), then see
    whether the step dialog opened."""

    def attempt(browser: WebDriver) -> bool:
        browser.find_element(By.CSS_SELECTOR, selector).click()
        return bool(browser.find_element(By.ID, "step").is_displayed())

    return attempt


def text_of(browser: WebDriver, selector: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, selector).text)


def traffic_drawn(browser: WebDriver) -> list[float] | None:
    """The monolith's line in the requests chart, as the values it draws, once it has at least
    two points and one of them above zero (None until then). Each value is checked against
    the point drawn for it: the line's points and its data-values must agree in number, and a
    value above zero must be drawn above the zero line."""
    chart = f"{CARD} [data-chart=requests] svg"
    zero = float(
        browser.find_element(By.CSS_SELECTOR, f"{chart} line.axis").get_attribute("y1") or "nan"
    )
    for line in browser.find_elements(By.CSS_SELECTOR, f"{chart} polyline[data-series=monolith]"):
        points = [p.split(",") for p in (line.get_attribute("points") or "").split()]
        values = [float(v) for v in (line.get_attribute("data-values") or "").split()]
        assert len(points) == len(values)
        if len(values) >= 2 and any(v > 0 for v in values):
            assert all(float(y) < zero for (_, y), v in zip(points, values, strict=True) if v > 0)
            return values
    return None


@pytest.fixture(scope="session")
def chromium_installed() -> None:
    """Skip (or, under CI=true, fail) before the system is started for nothing."""
    require_programs("chromium", "chromedriver")


def test_the_dashboard_shows_the_live_phase_and_a_rollback_from_it_takes_effect(
    chromium_installed: None, system: System, tmp_path: Path
) -> None:
    system.set_phase(Phase.BACKFILLED)
    assert system.dashboard_url.endswith("/_strangler/dashboard"), system.dashboard_url

    with chromium() as browser, shoppers(system.proxy):
        browser.get(system.dashboard_url)
        wait_for(
            browser, "the token prompt", lambda b: b.find_element(By.ID, "token").is_displayed()
        )
        assert CAPABILITY not in text_of(browser, "#live")  # nothing shown before the token
        browser.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
        browser.find_element(By.ID, "open").click()

        wait_for(
            browser,
            "the live phase backfilled",
            lambda b: text_of(b, f"{CARD} [data-testid=phase]") == "backfilled",
        )
        current_step = text_of(browser, f"{CARD} .step.current .step-name")
        assert current_step == "backfilled"
        wait_for(
            browser,
            "the monolith's requests per second above 0",
            lambda b: float(text_of(b, f"{CARD} [data-testid=rps-monolith]").split()[0]) > 0,
        )
        assert "measuring" not in text_of(browser, CARD)
        drawn = wait_for(browser, "the monolith's traffic in the requests chart", traffic_drawn)
        assert isinstance(drawn, list) and len(drawn) >= 2 and any(v > 0 for v in drawn)
        label = browser.find_element(
            By.CSS_SELECTOR, f"{CARD} [data-chart=requests] svg"
        ).get_attribute("aria-label")
        assert label and "latest: monolith" in label and "/s" in label

        wait_for(browser, "the rollback dialog", clicked(f'{CARD} button[data-action="rollback"]'))
        assert "backfilled → dual_write" in text_of(browser, "#step-title")
        browser.find_element(By.ID, "step-reason").send_keys("seen from the browser test")
        browser.find_element(By.ID, "step-confirm").click()
        wait_for(
            browser,
            "the rollback's result",
            lambda b: "Done:" in text_of(b, "#step-result"),
        )
        assert "backfilled → dual_write" in text_of(browser, "#step-result")

        assert system.phase() is Phase.DUAL_WRITE  # the proxy's own status, not the page's
        browser.find_element(By.ID, "step-cancel").click()
        wait_for(
            browser,
            "the new phase dual_write",
            lambda b: text_of(b, f"{CARD} [data-testid=phase]") == "dual_write",
        )
        wait_for(
            browser,
            "the rollback in the audit log",
            lambda b: "dashboard: seen from the browser test" in text_of(b, "[data-testid=audit]"),
        )
        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot))

    last = system.audit()[-1]
    assert last["new"] == {"phase": "dual_write"} and last["old"] == {"phase": "backfilled"}
    assert last["reason"] == "dashboard: seen from the browser test"
    assert last["who"].startswith("dashboard:admin-api@127.0.0.1@")  # the browser's peer
    keep = ROOT / "var" / "screenshots" / "dashboard.png"
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, keep)
    print(f"screenshot: {shot} (copied to {keep})")
