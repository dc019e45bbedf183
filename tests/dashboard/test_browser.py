"""The dashboard in a real browser (issue 17): headless Chromium (Debian's package, `make browser`)
driven by Playwright loads every page from a real `prodml up`, on a small real history: two
versions trained through the stack, a quarantined file named ``<script>alert(1)</script>.csv``
whose reason quotes markup, a category value ``<img src=x onerror=alert(1)>`` trained on, served
and counted in traffic, predictions with ids and their labels, a table.

Each page: no dialog, no console error, no page error; the hostile values shown as text and no
element made from them (no script, no attribute ``on…``); the numbers shown equal the CLI's
``--json`` (`prodml models`, `prodml monitor`, `prodml live`, run as processes); every link
resolves; a full-page screenshot of each under docs/screenshots/tests/ (``DASHBOARD_SCREENSHOTS``
elsewhere).
With JavaScript disabled each page shows the same text.

Without /usr/bin/chromium these tests skip, saying to run `make browser`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pandas as pd
import pytest
import requests

from bench.screenshots import CHROMIUM as SCREENSHOT_CHROMIUM
from bench.screenshots import CHROMIUM_ARGS
from shared.contracts import EventOutcome
from shared.local.demo.loop import impressions, serve_with_ids, wait_log_flushed, write_labels
from shared.local.processes import free_port
from shared.local.synth import synthesize
from shared.local.synth_keys import KEY
from shared.storage.local import LocalBucket
from shared.training.ledger import read_processed

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PRODML = str(Path(sys.executable).with_name("prodml"))
CHROMIUM = Path(SCREENSHOT_CHROMIUM)
# Where the tests save each page's screenshot: docs/screenshots/tests/ (not committed: the README's
# are `make screenshots`' of the demo's pages, in docs/screenshots/), or DASHBOARD_SCREENSHOTS.
SCREENSHOTS = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or ROOT / "docs" / "screenshots" / "tests")
WAIT = 180.0  # generous: the machine is shared; nothing here asserts a timing

HOSTILE_FILE = "<script>alert(1)</script>.csv"
HOSTILE_CATEGORY = "<img src=x onerror=alert(1)>"
HOSTILE_FEATURE = "placement"  # a key feature: the value is in the table's keys and the traffic
HOSTILE_MARKUP = "<b onmouseover=alert(2)>markup</b>"  # a bid that is text: the reason quotes it
LABELS_FILE = "labels/day-04.csv"

# name -> path ("{current}": the current version); every page of the nav and a version's card.
PAGES = {
    "overview": "/",
    "versions": "/versions",
    "version": "/versions/{current}",
    "monitoring": "/monitoring",
    "live": "/live",
    "shadow": "/shadow",
    "quarantine": "/quarantine",
    "table": "/table",
}
# What each page must show literally, as text.
HOSTILE_TEXT = {
    "quarantine": [HOSTILE_FILE, HOSTILE_MARKUP],
    "monitoring": [HOSTILE_FILE],
    "table": [HOSTILE_CATEGORY],
}
# Any attribute whose name starts with "on", or an element the hostile values would make.
MADE_FROM_MARKUP = """() => [...document.querySelectorAll('*')].filter(e =>
    ['SCRIPT', 'IFRAME', 'OBJECT', 'EMBED'].includes(e.tagName)
    || (e.tagName === 'IMG' && e.getAttribute('src') === 'x')
    || [...e.attributes].some(a => a.name.toLowerCase().startsWith('on'))).map(e => e.outerHTML)"""


def wait_until(check: Callable[[], Any], what: str) -> Any:
    """Poll ``check()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run a ``prodml`` command as a user would."""
    done = subprocess.run([PRODML, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"prodml {' '.join(args)}: {done.stderr[-3000:]}"
    return done


def cli_json(env: dict[str, str], *args: str) -> Any:
    """A ``prodml`` command's ``--json`` output."""
    return json.loads(run(env, *args, "--json").stdout)


# --- the browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium, launched once for the session through Playwright; skips without it."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is not installed: run `make browser` (it apt-get installs chromium), "
            "then these tests run"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: run `make venv`"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# --- the deployment ------------------------------------------------------------------------------


@dataclass
class Deployment:
    """A running `prodml up` with a small real history, and what the CLI says of it."""

    env: dict[str, str]
    dashboard: str
    models: dict[str, Any]
    monitor: list[dict[str, Any]]
    live: dict[str, Any]

    def path(self, page: str) -> str:
        """The URL path of ``page``."""
        return PAGES[page].format(current=self.models["current"])


def stack_env(state: Path) -> dict[str, str]:
    """Free loopback ports for every function, quick flushes and reloads, buckets under ``state``."""
    ports = ("PREDICT_PORT", "TRAIN_PORT", "BUILD_TABLE_PORT", "BUILD_TABLE_EVENT_PORT", "DASHBOARD_PORT")
    return {
        **os.environ,
        **{name: str(free_port()) for name in ports},
        "STORAGE_BACKEND": "local",
        "LOCAL_BUCKETS_ROOT": str(state / "buckets"),
        "LOCAL_DEADLETTER_DIR": str(state / "deadletter"),
        "SERVING_MODE": "hybrid",
        "RELOAD_SECONDS": "0.5",
        "ROUTER_QUIET_SECONDS": "0.3",
        "PREDICTION_LOG_FLUSH_SECONDS": "1",
        "TRAFFIC_FLUSH_SECONDS": "1",
        "DASHBOARD_CACHE_SECONDS": "0",  # every page reads the buckets as they are now
        "LOG_FORMAT": "json",
    }


def hostile_days(folder: Path) -> tuple[Path, Path, Path]:
    """Three synthetic days; the first with ``HOSTILE_CATEGORY`` in a tenth of its placements (so
    the schema and the model know it), the third with ``HOSTILE_MARKUP`` as one bid (quarantined)."""
    days = synthesize(folder, days=3, rows_per_day=800, seed=3).day_files
    first = pd.read_csv(days[0])
    first.loc[first.index % 10 == 0, HOSTILE_FEATURE] = HOSTILE_CATEGORY
    first.to_csv(days[0], index=False)
    bad = pd.read_csv(days[2])
    bad["bid"] = bad["bid"].astype(object)
    bad.loc[3, "bid"] = HOSTILE_MARKUP
    bad.to_csv(days[2], index=False)
    return days[0], days[1], days[2]


def drop(env: dict[str, str], source: Path, name: str) -> dict[str, Any]:
    """``cp`` ``source`` into the data bucket as ``name``; the train function's marker once done."""
    data = LocalBucket(Path(env["LOCAL_BUCKETS_ROOT"]), "prodml-data")
    artifacts = LocalBucket(Path(env["LOCAL_BUCKETS_ROOT"]), "prodml-artifacts")
    target = data.folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", str(source), str(target)], check=True)

    def generation() -> int | None:
        try:
            return data.stat(name).generation
        except Exception:  # still being copied
            return None

    # Its generation now: a quarantined file leaves incoming/ soon after.
    copied = int(wait_until(generation, f"{name} to be seen by the store"))

    def marker() -> dict[str, Any] | None:
        return read_processed(artifacts, data.name, name, copied)

    return dict(wait_until(marker, f"the train function to finish {name}"))


def serve_and_label(env: dict[str, str], predict: str, tmp: Path) -> None:
    """Impressions with ids (a fifth of them placed at ``HOSTILE_CATEGORY``) through predict, its
    log written, then a labels file for most of them."""
    served = impressions(seed=3, day=4, rows=300, prefix="imp")
    for index in range(0, len(served.instances), 5):
        served.instances[index][HOSTILE_FEATURE] = HOSTILE_CATEGORY
    serve_with_ids(predict, served)
    wait_log_flushed(predict)
    write_labels(tmp / "labels.csv", served, share=0.8, unknown=["imp-never-served"])
    marker = drop(env, tmp / "labels.csv", LABELS_FILE)
    assert marker["outcome"] == EventOutcome.LABELS_STORED, marker


def start_up(env: dict[str, str], state: Path, log: Any) -> subprocess.Popen[str]:
    """`prodml up` in its own session, once it says it is up."""
    up = subprocess.Popen(
        [PRODML, "up", "--state", str(state)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
    )
    assert up.stdout is not None
    for line in up.stdout:
        if line.startswith("Ctrl-C to stop."):
            return up
    os.killpg(up.pid, signal.SIGKILL)
    up.wait()
    pytest.fail(f"prodml up did not start: {Path(log.name).read_text()[-3000:]}")


def stop_up(up: subprocess.Popen[str], state: Path) -> None:
    """Ctrl-C, and every function's process group gone; SIGKILL only if it would not stop."""
    started = json.loads((state / "up.json").read_text())["functions"]
    up.send_signal(signal.SIGINT)
    try:
        up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    for function in started.values():
        with pytest.raises(ProcessLookupError):
            os.killpg(function["pid"], 0)


@pytest.fixture(scope="module")
def deployment(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The seeded history behind a running `prodml up` (the browser first: without it, nothing starts)."""
    tmp = tmp_path_factory.mktemp("dashboard")
    state = tmp / "state"
    env = stack_env(state)
    first, second, bad = hostile_days(tmp / "synth")
    run(env, "schema", "infer", str(first), "--label", "converted", "--key", ",".join(KEY), "--upload")
    run(env, "train", str(first))
    with open(tmp / "up.log", "w") as log:
        up = start_up(env, state, log)
        try:
            assert drop(env, second, "incoming/day-02.csv")["outcome"] in {"promoted", "rejected"}
            assert drop(env, bad, f"incoming/{HOSTILE_FILE}")["outcome"] == EventOutcome.QUARANTINED
            predict = f"http://127.0.0.1:{env['PREDICT_PORT']}"
            serve_and_label(env, predict, tmp)
            artifacts = Path(env["LOCAL_BUCKETS_ROOT"]) / "prodml-artifacts"
            wait_until(lambda: (artifacts / "tables" / "current.json").exists(), "a table to be built")
            wait_until(
                lambda: any((artifacts / "traffic").rglob("*.*")), "predict to write its traffic counts"
            )
            yield Deployment(
                env=env,
                dashboard=f"http://127.0.0.1:{env['DASHBOARD_PORT']}",
                models=cli_json(env, "models"),
                monitor=cli_json(env, "monitor"),
                live=cli_json(env, "live"),
            )
        finally:
            stop_up(up, state)


# --- the pages -----------------------------------------------------------------------------------


@dataclass
class Visit:
    """One page as the browser showed it, and what went wrong while it did."""

    status: int
    text: str
    made_from_markup: list[str]
    dialogs: list[str]
    console_errors: list[str]
    page_errors: list[str]
    links: list[str]
    rows: list[list[str]]  # each table row's cells, as shown
    terms: list[tuple[str, str]]  # each definition list's (term, definition), in page order


ROWS = "els => els.map(row => [...row.cells].map(cell => cell.innerText.trim()))"
TERMS = "els => els.map(dt => [dt.innerText.trim(), (dt.nextElementSibling || {}).innerText || ''])"


def visit(browser: Any, url: str, *, javascript: bool = True, screenshot: Path | None = None) -> Visit:
    """Load ``url`` in a fresh browser context; what it showed and every dialog and error."""
    context = browser.new_context(java_script_enabled=javascript, viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        dialogs: list[str] = []
        console_errors: list[str] = []
        page_errors: list[str] = []

        def on_dialog(dialog: Any) -> None:
            dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on(
            "console",
            lambda m: (
                console_errors.append(f"{m.text} ({m.location.get('url')})") if m.type == "error" else None
            ),
        )
        page.on("pageerror", lambda e: page_errors.append(str(e)))
        response = page.goto(url, wait_until="load")
        assert response is not None
        text = page.inner_text("body")
        made = page.evaluate(MADE_FROM_MARKUP) if javascript else []
        links, rows, terms = [], [], []
        if javascript:
            links = [str(a) for a in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")]
            rows = page.eval_on_selector_all("tr", ROWS)
            terms = [(str(t), str(d).strip()) for t, d in page.eval_on_selector_all("dt", TERMS)]
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        return Visit(response.status, text, made, dialogs, console_errors, page_errors, links, rows, terms)
    finally:
        context.close()


@pytest.fixture(scope="module")
def visits(browser: Any, deployment: Deployment) -> dict[str, Visit]:
    """Every page, loaded once with JavaScript on, each saved as a screenshot."""
    url = deployment.dashboard
    return {
        name: visit(browser, url + deployment.path(name), screenshot=SCREENSHOTS / f"{name}.png")
        for name in PAGES
    }


@pytest.mark.parametrize("name", list(PAGES))
def test_a_page_runs_no_script_and_shows_hostile_values_as_text(name: str, visits: dict[str, Visit]) -> None:
    seen = visits[name]
    assert seen.status == 200
    assert seen.dialogs == []
    assert seen.console_errors == []
    assert seen.page_errors == []
    assert seen.made_from_markup == []
    for hostile in HOSTILE_TEXT.get(name, []):
        assert hostile in seen.text, f"{hostile!r} is not shown as text on {name}"


@pytest.mark.parametrize("name", list(PAGES))
def test_a_page_shows_the_same_text_without_javascript(
    name: str, browser: Any, deployment: Deployment, visits: dict[str, Visit]
) -> None:
    plain = visit(browser, deployment.dashboard + deployment.path(name), javascript=False)
    assert plain.status == 200
    assert _without_ages(plain.text) == _without_ages(visits[name].text)


def _without_ages(text: str) -> str:
    """The page text without the lines that move by the second (ages, the "rendered at" note)."""
    moving = (" s", "read at", "rendered ")
    return "\n".join(line for line in text.splitlines() if not any(m in line for m in moving))


def test_every_link_of_every_page_resolves(deployment: Deployment, visits: dict[str, Visit]) -> None:
    origin = urlsplit(deployment.dashboard).netloc
    links = {link.split("#")[0] for seen in visits.values() for link in seen.links}
    assert links, "the pages have no links"
    ours = sorted(link for link in links if urlsplit(link).netloc == origin)
    assert sorted(links) == ours, "a page links outside the dashboard"
    for nav in PAGES.values():
        if "{" not in nav:
            assert urljoin(deployment.dashboard, nav) in links or nav == "/"
    statuses = {link: requests.get(link, timeout=30).status_code for link in ours}
    assert {link: s for link, s in statuses.items() if s >= 400} == {}


def row_with(seen: Visit, *cells: str) -> list[str]:
    """The first table row of the page holding every one of ``cells``; fails naming them."""
    found = next((row for row in seen.rows if all(c in row for c in cells)), None)
    assert found is not None, f"no row holds {cells}: rows are {seen.rows[:20]}"
    return found


def test_the_numbers_shown_equal_the_clis_json(deployment: Deployment, visits: dict[str, Visit]) -> None:
    from shared.dashboard.formatting import number

    models, live = deployment.models, deployment.live
    current = models["current"]
    overview = visits["overview"].terms
    assert ("version", current) in overview
    assert ("versions in the registry", number(len(models["versions"]))) in overview
    for row in models["versions"]:
        # Its own row, not the row of the version it is the parent of.
        [shown] = [r for r in visits["versions"].rows if r and r[0] == row["version"]]
        assert number(row["challenger"]) in shown and number(row["champion"]) in shown
        assert str(row["decision"]) in shown
    assert len(models["versions"]) == 2
    monitored = [r for r in deployment.monitor if r.get("metrics")]
    assert monitored, "no file was monitored"
    for record in monitored:
        shown = row_with(visits["monitoring"], number(record["generation"]))
        for metric in ("log_loss", "roc_auc", "accuracy"):
            assert number(record["metrics"][metric]) in shown
    quarantined = [r for r in deployment.monitor if r.get("decision") == "quarantined"]
    assert [r["object"] for r in quarantined] == [f"incoming/{HOSTILE_FILE}"]
    row_with(visits["quarantine"], number(quarantined[0]["generation"]), quarantined[0]["quarantine"]["rule"])
    [served] = [v for v in live["versions"] if v["counts"]["served"]]
    counts = served["counts"]
    assert counts["served"] == 300 and counts["labelled"] == 240  # what this test sent and labelled
    assert served["version"] in visits["live"].text  # a heading over its tables
    shown = row_with(visits["live"], "all", *(number(counts[k]) for k in ("served", "labelled", "pending")))
    assert all(number(served["metrics"][m]) in shown for m in ("log_loss", "roc_auc", "accuracy"))
    if served["version"] == current:
        for name in ("served", "labelled", "pending"):
            assert (name, number(counts[name])) in overview
        assert ("log_loss", number(served["metrics"]["log_loss"])) in overview
