"""The ``dify`` connection form in Airflow's real UI, driven by headless Chromium.

Starts the API server (UI + REST) in a temporary AIRFLOW_HOME, adds a connection through the
form, checks every label the provider declares, saves it, presses Test against FakeDify and
expects the app name in the UI's message. Screenshots go to the test's tmp_path and to
test-output/ui/ (git-ignored). Skips only when Chromium is missing and CI is not set.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_dify.get_provider_info import CONN_FIELDS
from airflow_dify.testing import FakeDify
from tests.ui.airflow_ui import AirflowUI

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1800",
)
WAIT = 30  # seconds for any one UI step


def _browser_available() -> bool:
    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not _browser_available():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium/chromedriver missing ({CHROMIUM}, {CHROMEDRIVER}); CI must install them")
        pytest.skip("Chromium not installed (apt-get install chromium chromium-driver)")
    os.environ.setdefault("SE_AVOID_STATS", "true")  # selenium-manager: no telemetry, no downloads
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in HEADLESS_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def airflow_ui(tmp_path: Path) -> Iterator[AirflowUI]:
    ui = AirflowUI(tmp_path / "airflow-home").start()
    try:
        yield ui
    finally:
        ui.stop()


def _screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    assert driver.save_screenshot(str(path)), f"screenshot {name} not written"
    shared = REPO / "test-output" / "ui"
    shared.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, shared / name)
    return path


def _toast(driver: Any, title: str) -> Any:
    """The first toast whose title starts with ``title`` (others, e.g. "created", may show too)."""
    from selenium.webdriver.common.by import By

    for toast in driver.find_elements(By.CSS_SELECTOR, "[data-scope=toast][data-part=root]"):
        if toast.text.strip().startswith(title) and "\n" in toast.text:
            return toast
    return None


def _api(ui: AirflowUI, path: str) -> Any:
    with urllib.request.urlopen(f"{ui.url}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def test_dify_connection_form_save_and_test(
    browser: Any, airflow_ui: AirflowUI, fake_dify: FakeDify, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT)
    app = fake_dify.app("chat")

    def label(scope: Any, text: str) -> Any:
        return wait.until(lambda _: scope.find_element(By.XPATH, f".//label[normalize-space()={text!r}]"))

    def field_of(scope: Any, text: str) -> Any:
        """The field root (label + control + help) of the labelled field."""
        return label(scope, text).find_element(By.XPATH, "./ancestor::*[@data-part='root'][1]")

    def choose(scope: Any, text: str, value: str) -> None:
        combo = field_of(scope, text).find_element(By.CSS_SELECTOR, "input[role=combobox]")
        combo.send_keys(value)
        wait.until(
            lambda _: browser.find_elements(By.XPATH, f"//*[@role='option'][normalize-space()={value!r}]")
        )
        combo.send_keys(Keys.ENTER)

    try:
        browser.get(f"{airflow_ui.url}/connections")
        wait.until(
            ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Add Connection']"))
        ).click()
        dialog = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "[role=dialog]")))
        choose(dialog, "Connection Type *", "Dify")

        # Standard fields: relabelled, and the ones Dify does not use are hidden.
        for text in ("API base URL", "API key"):
            assert label(dialog, text).is_displayed(), text
        shown = {el.text.strip() for el in dialog.find_elements(By.TAG_NAME, "label") if el.is_displayed()}
        assert not shown & {"Host", "Password", "Login", "Port", "Schema"}, shown
        host = dialog.find_element(By.NAME, "host")
        assert host.get_attribute("placeholder") == "https://api.dify.ai/v1"
        dialog.find_element(By.NAME, "connection_id").send_keys("dify_ui")
        host.send_keys(fake_dify.url)
        dialog.find_element(By.NAME, "password").send_keys(app.key)

        # Every extra field the provider declares renders with its label and help text.
        dialog.find_element(By.XPATH, ".//button[normalize-space()='Extra Fields']").click()
        for name, spec in CONN_FIELDS.items():
            field = field_of(dialog, spec["label"])
            wait.until(lambda _, f=field: f.is_displayed())
            assert spec["description"] in field.text, name
        choose(dialog, "App mode", "chat")
        max_conc = label(dialog, "Max concurrency").get_attribute("for")
        browser.find_element(By.ID, max_conc).send_keys("4")
        _screenshot(browser, tmp_path, "dify_connection_form.png")

        dialog.find_element(By.XPATH, ".//button[normalize-space()='Save']").click()
        wait.until(ec.invisibility_of_element_located((By.CSS_SELECTOR, "[role=dialog]")))
        row = wait.until(lambda d: d.find_element(By.XPATH, "//tr[.//*[normalize-space()='dify_ui']]"))
        fake_dify.reset()
        row.find_element(By.CSS_SELECTOR, "button[aria-label='Test Connection']").click()
        toast = wait.until(lambda d: _toast(d, "Test Connection"))
        _screenshot(browser, tmp_path, "dify_connection_test.png")
        assert toast.get_attribute("data-type") == "success", toast.text
        assert "Test Connection Successful" in toast.text
        assert f"Connected to Dify app '{app.name}' (mode: chat)" in toast.text
    except Exception:
        _screenshot(browser, tmp_path, "dify_connection_failure.png")
        print(airflow_ui.log()[-4000:])
        raise

    # The Test button reached FakeDify with the saved key, through the cheapest probe.
    info_calls = [r for r in fake_dify.requests if r.path == "/info"]
    assert len(info_calls) == 1 and info_calls[0].status == 200
    saved = _api(airflow_ui, "/api/v2/connections/dify_ui")
    assert (saved["conn_type"], saved["host"], saved["password"]) == ("dify", fake_dify.url, "***")
    extra = json.loads(saved["extra"])
    assert extra["app_mode"] == "chat" and extra["max_concurrency"] == 4 and extra["auth_type"] == "api_key"
    assert app.key not in airflow_ui.log()
