"""Show that the local Temporal Web UI decodes payloads only for a signed-in browser.

Drives headless Chromium (Debian's `chromium` and `chromium-driver`) through
what an operator does: opens a workflow in the Web UI (payloads stay
ciphertext), signs in at the API's codec page with the admin token, opens the
workflow again (payloads read in plain text), signs out (ciphertext again).
Each step is saved as a PNG and its page text is checked for `--expect`.

    uv run python scripts/web_ui_codec_check.py --workflow-id <id> [--event-id N] --expect <text> [--out DIR]

Reads the stack's ports from the usual CONVEYOR_* variables. Exits 1 when a
step shows the wrong thing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conveyor.settings import Settings
from conveyor.stack import temporal

# Text every rendered workflow (or event) page shows once its history is loaded.
LOADED_MARKERS = ("Input",)


def chromium(profile: Path) -> webdriver.Chrome:
    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    # --no-sandbox: Chromium's sandbox refuses to run as root, as CI does.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1600"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    # The distribution's driver: Selenium must not fetch one of its own.
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(options=options, service=service)


def page_text(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def loaded(text: str) -> bool:
    return all(m in text for m in LOADED_MARKERS)


@dataclass
class Browser:
    driver: webdriver.Chrome
    settings: Settings
    out: Path

    def workflow(
        self, workflow_id: str, expect: str, want: bool, shot: str, event_id: int | None = None, timeout: float = 30
    ) -> bool:
        """Open the workflow's page (or one event's); True when `expect` shows (or stays hidden) as wanted."""
        ns = self.settings.temporal_namespace
        page = f"{temporal.ui_url(self.settings)}/namespaces/{ns}/workflows/{workflow_id}"
        self.driver.get(page)
        deadline = time.monotonic() + timeout
        if event_id is not None:
            # The UI redirects to the latest run's page, whose path names the run.
            while self.driver.current_url.rstrip("/") == page and time.monotonic() < deadline:
                time.sleep(0.25)
            run_id = self.driver.current_url[len(page) + 1 :].split("/")[0].split("?")[0]
            self.driver.get(f"{page}/{run_id}/history/events/{event_id}")
        text = page_text(self.driver)
        while time.monotonic() < deadline and not (loaded(text) and (expect in text or not want)):
            time.sleep(0.5)
            text = page_text(self.driver)
        if not want:
            # Decoding is asynchronous: give a wrongly decoding UI time to show the plain text.
            time.sleep(5)
            text = page_text(self.driver)
        self.driver.save_screenshot(str(self.out / shot))
        return loaded(text) and (expect in text) == want

    def submit(self, until: Callable[[webdriver.Chrome], bool]) -> bool:
        """Press the page's button and wait for the answer (a click returns before the post is sent)."""
        self.driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        try:
            # The page is replaced while the answer loads: a read of the old one may fail; read again.
            return bool(WebDriverWait(self.driver, 15, ignored_exceptions=(WebDriverException,)).until(until))
        except TimeoutException:
            return False

    def sign_in(self, token: str) -> bool:
        self.driver.get(f"{self.settings.codec_endpoint}/login")
        self.driver.find_element(By.NAME, "token").send_keys(token)
        return self.submit(lambda d: "Signed in" in page_text(d))

    def sign_out(self) -> bool:
        self.driver.get(f"{self.settings.codec_endpoint}/login")
        if "Signed in" not in page_text(self.driver):
            return False
        return self.submit(lambda d: bool(d.find_elements(By.NAME, "token")))


def run(
    workflow_id: str, expect: str, out: Path, event_id: int | None = None, settings: Settings | None = None
) -> list[tuple[str, bool]]:
    settings = settings or Settings()
    token = settings.admin_token_file.read_text().strip()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="conveyor-chromium-") as profile:
        driver = chromium(Path(profile))
        try:
            browser = Browser(driver, settings, out)
            before = browser.workflow(workflow_id, expect, False, "1-before-sign-in.png", event_id)
            signed_in = browser.sign_in(token)
            decoded = browser.workflow(workflow_id, expect, True, "2-signed-in.png", event_id)
            signed_out = browser.sign_out()
            after = browser.workflow(workflow_id, expect, False, "3-signed-out.png", event_id)
            return [
                ("before sign-in the Web UI shows ciphertext", before),
                ("sign-in with the admin token", signed_in),
                ("signed in, the Web UI shows decoded payloads", decoded),
                ("sign-out", signed_out),
                ("after sign-out the Web UI shows ciphertext", after),
            ]
        finally:
            driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflow-id", required=True)
    parser.add_argument("--expect", required=True, help="text that only a decoded payload shows")
    parser.add_argument("--event-id", type=int, help="open this history event's page instead of the summary")
    parser.add_argument("--out", type=Path, default=Path("web-ui-codec"))
    args = parser.parse_args()
    results = run(args.workflow_id, args.expect, args.out, args.event_id)
    for what, ok in results:
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    print(f"screenshots in {args.out}/")
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
