"""A real browser (headless Chromium from Debian's package, driven by Selenium) on the inspect page.

Skips, saying why, when Chromium, ChromeDriver or Selenium is missing (``make browser-deps``
installs the first two where it can).
"""

from __future__ import annotations

import shutil
import tempfile
import threading

import numpy as np
import pytest

from service import create_app
from service.testing import make_part, make_test_config, png_bytes, tiny_store

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def driver():
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("headless Chromium and ChromeDriver are not installed (make browser-deps, or "
                    "apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="anomaly-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(60)
    yield browser
    browser.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory):
    from werkzeug.serving import make_server

    tmp = tmp_path_factory.mktemp("browser")
    rng = np.random.default_rng(0)
    store = tiny_store(tmp / "store", lambda: [make_part(rng) for _ in range(8)])
    app = create_app(make_test_config(tmp, store))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)
    app.extensions["anomaly_db"].dispose()


def test_upload_on_the_inspect_page_shows_verdict_and_overlay(driver, base_url, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = make_part(np.random.default_rng(9))
    image[30:45, 50:70] = 250
    path = tmp_path / "part.png"
    path.write_bytes(png_bytes(image))

    driver.get(f"{base_url}/inspect")
    driver.find_element(By.ID, "part-id").send_keys("browser-1")
    driver.find_element(By.ID, "image-input").send_keys(str(path))  # the page scores on change

    wait = WebDriverWait(driver, 90)
    wait.until(lambda d: d.find_element(By.ID, "verdict").text in ("GOOD", "REVIEW", "NG"))
    wait.until(lambda d: (d.find_element(By.ID, "overlay").get_attribute("src") or "").startswith("data:image/png"))
    overlay = driver.find_element(By.ID, "overlay")
    assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay) == 96
    assert driver.find_element(By.ID, "regions").is_displayed()
    assert not driver.find_element(By.ID, "inspect-error").is_displayed()
    link = driver.find_element(By.ID, "record-link").get_attribute("href")
    driver.save_screenshot(str(tmp_path / "inspect.png"))

    driver.get(link)  # the recorded inspection, with its overlay from the archive
    assert "browser-1" in driver.page_source
    verdict = driver.find_element(By.CSS_SELECTOR, "h1 .verdict").text
    assert verdict in ("GOOD", "REVIEW", "NG")
