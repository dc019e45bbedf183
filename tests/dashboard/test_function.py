"""The dashboard as a real functions-framework process on a loopback port, over real local buckets."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from conftest import fit_serving_bundle, promote_version, serving_env
from page_parser import parse, scripts_or_handlers

from shared.dashboard.routes import SECURITY_HEADERS
from shared.local.functions import load_declaration
from shared.local.processes import FunctionProcess, free_port

pytestmark = pytest.mark.slow


def test_the_function_serves_every_page_with_its_headers(
    artifacts, buckets_root: Path, tmp_path: Path
) -> None:
    bundle = fit_serving_bundle("20260101T000000Z-abcdef")
    promote_version(artifacts, bundle)
    spec = load_declaration().functions["dashboard"]
    env = serving_env(buckets_root, DATA_BUCKET="prodml-data", SERVING_MODE="hybrid")
    process = FunctionProcess(spec, free_port(), env, tmp_path / "dashboard.log").start()
    try:
        for path in (
            "/",
            "/versions",
            "/monitoring",
            "/live",
            "/quarantine",
            "/table",
            f"/versions/{bundle.version}",
        ):
            response = requests.get(process.url + path, timeout=30)
            assert response.status_code == 200, (path, response.text[:500])
            for name, value in SECURITY_HEADERS.items():
                assert response.headers[name] == value
            assert response.headers["Content-Type"] == "text/html; charset=utf-8"
            assert scripts_or_handlers(parse(response.text)) == []
        overview = parse(requests.get(process.url + "/", timeout=30).text)
        assert overview.definitions["version"] == bundle.version
        assert overview.definitions["mode (SERVING_MODE)"] == "hybrid"
        head = requests.head(process.url + "/versions", timeout=30)
        assert head.status_code == 200 and head.content == b""
        post = requests.post(process.url + "/", data=b"x", timeout=30)
        assert post.status_code == 405 and post.headers["Allow"] == "GET, HEAD"
        assert requests.get(process.url + "/versions?page=x", timeout=30).status_code == 400
        assert requests.get(process.url + "/missing", timeout=30).status_code == 404
        css = requests.get(process.url + "/style.css", timeout=30)
        assert css.status_code == 200 and css.headers["Content-Type"] == "text/css; charset=utf-8"
    finally:
        process.stop()


def test_prodml_up_and_the_demo_name_the_dashboards_url(tmp_path: Path) -> None:
    from shared.config import get_settings, load_settings
    from shared.local.demo import dashboard_hint
    from shared.local.demo.story import Demo, DemoOptions
    from shared.local.stack import LocalStack, stack_environment

    env = {k: v for k, v in stack_environment(tmp_path).items() if k != "DASHBOARD_PORT"}
    stack = LocalStack(state_dir=tmp_path, env=env)  # not started: its URLs are what `prodml up` prints
    assert stack.urls["dashboard"] == "http://127.0.0.1:8084"
    port = load_settings(env).dashboard_port
    assert (
        dashboard_hint(tmp_path, port) == f"`prodml up --state {tmp_path}`, then open http://127.0.0.1:8084"
    )
    # The demo names the port of the user's environment, not the free one its own stack took.
    get_settings.cache_clear()
    demo = Demo(DemoOptions(state=tmp_path / "demo"))
    assert demo.env["DASHBOARD_PORT"] != str(demo.user_dashboard_port) == "8084"
