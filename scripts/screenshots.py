"""PNGs of the web UI's main pages of a project, for the README and docs/ui.md.

    python scripts/screenshots.py --project modelyard-demo --out docs/screenshots

Starts the UI on the project (127.0.0.1, a free port), then with headless Chromium
(``MODELYARD_TEST_CHROMIUM`` or ``/usr/bin/chromium``) saves every page of the top
navigation, the first page each one links to (a model, a pipeline run, ...), the runs
table of the first experiment, its newest run and a compare of its three newest runs.
Exit 2 when the project or Chromium is missing.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from modelyard.config import load_settings
from modelyard.errors import ModelyardError
from modelyard.ui.app import create_app

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _shot(page: Page, url: str, out: Path, name: str) -> None:
    page.goto(url)
    try:
        page.wait_for_load_state("networkidle", timeout=10_000)
    except PlaywrightTimeoutError:  # a chart page that keeps drawing: take it as it is
        print(f"{url}: still busy after 10 s; taken as it is")
    page.wait_for_timeout(300)  # plotly's transitions
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    print(f"{path}  <- {url}")


def _slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "home"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--project", default="modelyard-demo")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    chromium = os.environ.get("MODELYARD_TEST_CHROMIUM") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        print(f"error: no Chromium at {chromium} (apt-get install chromium)", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args.project)
    except ModelyardError as exc:
        print(f"error: {exc} (run `make demo` first)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium, headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            nav = page.goto(url + "/experiments") and [
                a.get_attribute("href") or "" for a in page.locator("header nav a").all()
            ]
            for i, path in enumerate(nav or []):
                _shot(page, url + path, args.out, f"{i + 1:02d}-{_slug(path)}")
                first = page.locator(f'main a[href^="{path.rstrip("/")}/"]').first
                if path != "/experiments" and first.count():
                    href = first.get_attribute("href") or ""
                    _shot(page, url + href, args.out, f"{i + 1:02d}-{_slug(path)}-detail")
            page.goto(url + "/experiments")
            experiment = page.locator("#experiments tbody a").first
            if experiment.count():
                _shot(page, url + (experiment.get_attribute("href") or ""), args.out, "01-runs")
                runs = page.locator("#runs tbody a")
                if runs.count():
                    _shot(page, url + (runs.first.get_attribute("href") or ""), args.out, "01-run")
                    page.go_back()
                    boxes = page.locator("input.select-run")
                    for j in range(min(3, boxes.count())):
                        boxes.nth(j).check()
                    page.click("#compare-button")
                    page.wait_for_load_state("networkidle")
                    _shot(page, page.url, args.out, "01-compare")
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
