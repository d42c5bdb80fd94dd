"""Make the README's screenshot: the inspect page judging a defective demo part.

    python docs/screenshot.py            # writes docs/inspect.png

Trains the demo model first when ``runs/demo/models`` has none (``anomaly demo``), serves it with
``anomaly serve`` on a free loopback port, drops ``data/bracket/test/scratch/000.png`` on the inspect
page in headless Chromium (``make browser-deps``) and saves the page once its verdict and overlay show.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STORE = REPO / "runs" / "demo" / "models"
PART = REPO / "data" / "bracket" / "test" / "scratch" / "000.png"
ANOMALY = [sys.executable, "-m", "anomaly.cli.main"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"anomaly serve stopped with status {server.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} was not ready within {seconds:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "inspect.png")
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        raise SystemExit("headless Chromium and ChromeDriver are needed: make browser-deps")
    if not any(STORE.glob("*/*/manifest.json")):
        subprocess.run([*ANOMALY, "demo", "--quiet"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="anomaly-screenshot-") as tmp:
        server = subprocess.Popen([*ANOMALY, "serve", "--store", str(STORE), "--port", str(port), "--workers", "1",
                                   "--instance", tmp], cwd=REPO, stdout=subprocess.DEVNULL)
        try:
            _wait_ready(url, server)
            options = webdriver.ChromeOptions()
            options.binary_location = chromium
            for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                         "--disable-dev-shm-usage", "--window-size=1100,1450", f"--user-data-dir={tmp}/profile"):
                options.add_argument(flag)
            browser = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
            try:
                browser.get(f"{url}/inspect")
                browser.find_element(By.ID, "part-id").send_keys("bracket-scratch-000")
                browser.find_element(By.ID, "image-input").send_keys(str(PART))
                wait = WebDriverWait(browser, 60)
                wait.until(lambda d: d.find_element(By.ID, "verdict").text in ("GOOD", "REVIEW", "NG"))
                wait.until(lambda d: (d.find_element(By.ID, "overlay").get_attribute("src") or "").startswith("data:"))
                time.sleep(0.5)  # let the overlay image paint
                args.out.parent.mkdir(parents=True, exist_ok=True)
                browser.save_screenshot(str(args.out))
                verdict = browser.find_element(By.ID, "verdict").text
            finally:
                browser.quit()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"{args.out}: {PART.relative_to(REPO)} judged {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
