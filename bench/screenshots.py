"""``make screenshots``: the dashboard's pages after ``make demo``, shot in Debian's Chromium for
the README (docs/screenshots/<page>.png).

It starts ``prodml up --state STATE --only dashboard`` on a free loopback port over the demo's
buckets (the demo stops its own stack when it ends), loads each page in headless Chromium through
Playwright (``make browser`` installs chromium; nothing is downloaded), saves a full-page
screenshot, and stops everything it started. Run: ``python -m bench.screenshots [STATE] [OUT]``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from shared.local.processes import free_port

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium reaches out (updates, sync, safe browsing), and
# this machine's closed network refuses it; QUIC likewise. A fresh temporary profile is
# Playwright's own for each launch. tests/dashboard/test_browser.py launches with these too.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGES = {
    "overview": "/",
    "versions": "/versions",
    "monitoring": "/monitoring",
    "live": "/live",
    "shadow": "/shadow",
    "quarantine": "/quarantine",
    "table": "/table",
}


def main(state: Path, out: Path) -> int:
    """Shoot every page of the dashboard over ``state``'s buckets into ``out``; an exit code."""
    if not (state / "buckets").is_dir():
        print(f"no buckets under {state}/: run `make demo` first", file=sys.stderr)
        return 1
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is not installed: run `make browser`", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {**os.environ, "DASHBOARD_PORT": str(port), "DASHBOARD_CACHE_SECONDS": "0"}
    prodml = str(Path(sys.executable).with_name("prodml"))
    up = subprocess.Popen(
        [prodml, "up", "--state", str(state), "--only", "dashboard", "--no-scheduler", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert up.stdout is not None
        url = json.loads(up.stdout.readline())["urls"]["dashboard"]
        out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            for name, path in PAGES.items():
                page.goto(url.rstrip("/") + path)
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                print(f"{name}: {out / f'{name}.png'}", flush=True)
            browser.close()
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    return 0


if __name__ == "__main__":
    arguments = sys.argv[1:]
    state_dir = Path(arguments[0]) if arguments else Path(".local/demo")
    out_dir = Path(arguments[1]) if len(arguments) > 1 else Path("docs/screenshots")
    sys.exit(main(state_dir, out_dir))
