"""Headless Chromium for the browser tests: Debian's ``chromium`` and ``chromium-driver``.

Selenium is given the driver and the browser binary explicitly, so Selenium Manager never
tries to download anything. Without a browser the tests skip with the reason, unless
``TASKSHED_REQUIRE_SERVICES`` is set (``scripts/test``, CI), where a missing browser fails.
"""

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMEDRIVER = "/usr/bin/chromedriver"
BROWSER_NAMES = ("chromium", "chromium-browser")
INSTALL_HINT = "apt-get install -y chromium chromium-driver (scripts/test does it)"
WINDOW = (1366, 960)  # a common laptop screen: the admin lists must fit it
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--lang=en-US",
)


def services_required() -> bool:
    return os.environ.get("TASKSHED_REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


def no_browser(reason: str) -> None:
    """Skip the test, or fail it where every service is required."""
    message = f"no headless browser for the browser tests: {reason}"
    if services_required():
        pytest.fail(f"{message} (TASKSHED_REQUIRE_SERVICES is set)", pytrace=False)
    pytest.skip(f"{message}; install it with: {INSTALL_HINT}")


def find_browser() -> tuple[str, str]:
    """The paths of Chromium and its driver, or a skip (a failure where required)."""
    browser = next(filter(None, (shutil.which(name) for name in BROWSER_NAMES)), None)
    if browser is None:
        no_browser(f"neither of {', '.join(BROWSER_NAMES)} is on PATH")
    if not os.access(CHROMEDRIVER, os.X_OK):
        no_browser(f"{CHROMEDRIVER} is missing (Debian package chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        no_browser("the selenium package is not installed (test dependency group)")
    return str(browser), CHROMEDRIVER


def start_chromium(profile_dir: Path, window: tuple[int, int] = WINDOW) -> Any:
    """A headless Chromium driven by Selenium, with a fresh profile in ``profile_dir``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument(f"--window-size={window[0]},{window[1]}")
    service = Service(driver_path, log_output=str(profile_dir.parent / "chromedriver.log"))
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except Exception as exc:
        no_browser(f"Chromium at {browser} did not start: {exc}")
    driver.set_window_size(*window)
    driver.implicitly_wait(0)
    return driver
