"""Packaging (infra/package.py): reproducible zips, and each zip self-sufficient.

The self-sufficiency tests unpack a zip into a fresh folder, make a fresh virtualenv holding
ONLY that function's requirements.txt (no pip, no project package), and answer a real request
or event through functions-framework's test client, run by that venv's Python in isolated mode
(-I: no PYTHONPATH, no cwd on sys.path) against local buckets under tmp_path. ``shared`` must
come from the zip, or the import fails.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
FUNCTIONS = REPO / "functions"


def _load_package_module() -> Any:
    spec = importlib.util.spec_from_file_location("infra_package", REPO / "infra" / "package.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


package = _load_package_module()


def landed(name: str) -> bool:
    """Whether the function folder has its code and requirements yet."""
    folder = FUNCTIONS / name
    return (folder / "main.py").is_file() and (folder / "requirements.txt").is_file()


def require(name: str) -> None:
    """Skip (saying why) when a declared function has not been written yet."""
    if not landed(name):
        pytest.skip(f"functions/{name}/main.py or requirements.txt does not exist yet")


LANDED = [name for name in sorted(package.source_folders()) if landed(name)]


def run_package_cli(out: Path, *names: str, env: dict[str, str] | None = None) -> str:
    """``python3 infra/package.py --out OUT --only NAME...``, as `make package` runs it."""
    args = [sys.executable, str(REPO / "infra" / "package.py"), "--out", str(out)]
    for name in names:
        args += ["--only", name]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# --- reproducibility and contents ------------------------------------------------------------


def test_declaration_names_one_package_per_source_folder() -> None:
    declared = json.loads((REPO / "infra" / "functions.json").read_text())["functions"]
    folders = package.source_folders()
    assert set(folders) == {Path(spec["source"]).name for spec in declared.values()}
    assert set(folders) == {"build_table", "dashboard", "predict", "train"}


@pytest.mark.skipif(not LANDED, reason="no function has landed yet")
def test_building_twice_gives_byte_identical_zips(tmp_path: Path) -> None:
    run_package_cli(tmp_path / "a", *LANDED)
    run_package_cli(tmp_path / "b", *LANDED)
    for name in LANDED:
        first = (tmp_path / "a" / f"{name}.zip").read_bytes()
        second = (tmp_path / "b" / f"{name}.zip").read_bytes()
        assert first == second, f"{name}.zip differs between two builds of the same sources"


@pytest.mark.skipif(not LANDED, reason="no function has landed yet")
def test_zip_ignores_file_times_permissions_and_caches(tmp_path: Path) -> None:
    """Two checkouts of the same sources (other mtimes, modes, a stray __pycache__) zip the same."""
    name = LANDED[0]
    zips = []
    for copy, mode, stamp in (("one", 0o644, 1_000_000_000), ("two", 0o755, 1_700_000_000)):
        root = tmp_path / copy
        shutil.copytree(REPO / "shared", root / "shared", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(FUNCTIONS / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        if copy == "two":
            (root / "shared" / "__pycache__").mkdir()
            (root / "shared" / "__pycache__" / "config.cpython-311.pyc").write_bytes(b"stale")
            (root / "shared" / ".notes.swp").write_text("editor state")
        for path in root.rglob("*"):
            if path.is_file():
                path.chmod(mode)
                os.utime(path, (stamp, stamp))
        out = tmp_path / f"{copy}.zip"
        package.write_zip(package.package_members(root / name, root / "shared"), out)
        zips.append(out.read_bytes())
    assert zips[0] == zips[1]


@pytest.mark.skipif(not LANDED, reason="no function has landed yet")
def test_zip_holds_main_requirements_and_all_of_shared(tmp_path: Path) -> None:
    run_package_cli(tmp_path, *LANDED)
    shared_files = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "shared").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    for name in LANDED:
        with zipfile.ZipFile(tmp_path / f"{name}.zip") as archive:
            infos = archive.infolist()
            names = [i.filename for i in infos]
            assert names == sorted(names), "entries must be in a fixed (sorted) order"
            assert {"main.py", "requirements.txt"} <= set(names)
            assert shared_files <= set(names), sorted(shared_files - set(names))
            assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
            assert not [n for n in names if n.startswith(("tests/", "functions/", "infra/"))]
            assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
            assert {(i.external_attr >> 16) & 0o777 for i in infos} == {0o644}
            assert archive.read("requirements.txt") == (FUNCTIONS / name / "requirements.txt").read_bytes()
            assert archive.read("main.py") == (FUNCTIONS / name / "main.py").read_bytes()
            assert archive.testzip() is None


@pytest.mark.skipif(not LANDED, reason="no function has landed yet")
def test_source_date_epoch_sets_every_timestamp(tmp_path: Path) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}  # 2023-11-14 22:13:20 UTC
    run_package_cli(tmp_path, LANDED[0], env=env)
    with zipfile.ZipFile(tmp_path / f"{LANDED[0]}.zip") as archive:
        assert {i.date_time for i in archive.infolist()} == {(2023, 11, 14, 22, 13, 20)}


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


REQUIREMENT_FILES = sorted(
    path.relative_to(FUNCTIONS).as_posix() for path in FUNCTIONS.glob("*/requirements*.txt")
)


@pytest.mark.parametrize("relative", REQUIREMENT_FILES)
def test_function_requirements_are_pinned_at_the_project_pins(relative: str) -> None:
    path = FUNCTIONS / relative
    package.check_requirements(path)  # every line name==version
    project = _pins(REPO / "requirements.txt")
    own = _pins(path)
    if path.name == "requirements.txt":
        assert "functions-framework" in own
    differing = {pkg: (v, project.get(pkg)) for pkg, v in own.items() if project.get(pkg) != v}
    assert not differing, f"functions/{relative} disagrees with requirements.txt: {differing}"


def test_every_optional_requirement_set_exists_and_every_file_is_one() -> None:
    """No requirement file beside a function that nothing adds, and none named that is missing."""
    declared = {f"{o.package}/{o.filename}" for o in package.OPTIONAL_REQUIREMENTS}
    assert declared == {"predict/requirements-sklearn.txt"}
    own = {f"{name}/requirements.txt" for name in package.source_folders()}
    assert set(REQUIREMENT_FILES) == own | declared


# --- what each function imports is what its requirements install ------------------------------

# Lazy imports of shared modules that no deployed function's code reaches: the import graph below
# follows every import, also those inside functions, so it names each lazy edge it leaves out, and
# why (a module-level import of the same module is still followed).
NOT_REACHED = {
    # registry.rollback compiles a target that never was compiled; only `prodml rollback` (the
    # CLI, the demo) rolls back, never a deployed function.
    "shared.training.compiling": "compiling a rollback target: `prodml rollback` only",
}
HEAVY_FOR_SERVING = {"scikit-learn", "pandas", "skops", "skl2onnx", "onnx", "matplotlib"}


@dataclass(frozen=True)
class Imports:
    """Third-party modules a function's code imports, as found by reading it."""

    eager: dict[str, set[str]]  # imported when main.py is loaded: module -> files importing it
    lazy: dict[str, set[str]]  # imported only when some function runs


def _imports_in(path: Path) -> list[tuple[str, bool]]:
    """(module, at import time) for each import statement of ``path``: a module-level import
    runs when the module is loaded, one inside a function only when it is called; those under
    ``if TYPE_CHECKING:`` never run."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, eager: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for statement in child.orelse:
                    visit(ast.Module(body=[statement], type_ignores=[]), eager)
            elif isinstance(child, ast.Import):
                found.extend((alias.name, eager) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module, eager))
                found.extend((f"{child.module}.{alias.name}", eager) for alias in child.names)
            else:
                visit(child, eager)

    visit(ast.parse(path.read_text()), True)
    return found


def _shared_files(module: str) -> list[Path]:
    """The files Python runs to import ``module`` of the shared package (its packages too)."""
    parts = module.split(".")
    files = []
    for depth in range(1, len(parts) + 1):
        base = REPO.joinpath(*parts[:depth])
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                files.append(candidate)
    return files


def function_imports(main: Path) -> Imports:
    """Every third-party module ``main`` imports, directly or through ``shared``, eager or lazy."""
    eager: dict[str, set[str]] = {}
    lazy: dict[str, set[str]] = {}
    visited: dict[Path, bool] = {}
    pending = [(main, True)]
    while pending:
        path, eager_path = pending.pop()
        if path in visited and (visited[path] or not eager_path):
            continue
        visited[path] = eager_path
        for module, at_import in _imports_in(path):
            now = at_import and eager_path
            top = module.split(".")[0]
            if top == "shared":
                if now or not any(module.startswith(skipped) for skipped in NOT_REACHED):
                    pending.extend((file, now) for file in _shared_files(module))
            elif top not in sys.stdlib_module_names and top != "__future__":
                (eager if now else lazy).setdefault(module, set()).add(path.relative_to(REPO).as_posix())
    return Imports(eager, {m: f for m, f in lazy.items() if m not in eager})


def _owners() -> dict[Path, str]:
    """Installed file -> the distribution that installed it (from every RECORD of this venv)."""
    owners = {}
    for dist in importlib.metadata.distributions():
        for file in dist.files or ():
            owners[Path(str(dist.locate_file(file))).resolve()] = canonicalize_name(dist.metadata["Name"])
    return owners


def distribution_of(module: str, owners: dict[Path, str]) -> str | None:
    """The distribution that provides ``module`` (the first package on its path that is not a
    namespace package, such as ``google``); None for a name that is no module (an attribute)."""
    parts = module.split(".")
    for depth in range(1, len(parts) + 1):
        try:
            spec = importlib.util.find_spec(".".join(parts[:depth]))
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        if spec.origin and spec.origin not in ("namespace", "built-in", "frozen"):
            return owners.get(Path(spec.origin).resolve(), f"<no distribution owns {spec.origin}>")
    return None


def installed_by(requirement_lines: list[str]) -> set[str]:
    """Every distribution ``pip install`` of these pins installs: them and their dependencies, as
    this venv's metadata declares them (environment markers and extras evaluated)."""
    pending = [Requirement(line) for line in requirement_lines]
    found: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in found:
            continue
        found.add(key)
        found.add(name)
        for line in importlib.metadata.distribution(name).requires or ():
            dependency = Requirement(line)
            extras = requirement.extras or {""}
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in extras):
                pending.append(dependency)
    return {name for name in found if "[" not in name}


def _requirement_lines(*paths: Path) -> list[str]:
    return [line for path in paths for line in package.check_requirements(path)]


@pytest.fixture(scope="module")
def owners() -> dict[Path, str]:
    return _owners()


@pytest.mark.parametrize("name", ["predict", "train", "build_table", "dashboard"])
def test_every_module_a_function_imports_is_installed_by_its_requirements(
    name: str, owners: dict[Path, str]
) -> None:
    """Imported at load time: installed by requirements.txt alone. Imported lazily: by it and the
    optional sets (predict's scikit-learn fallback), so an opted-in path always has its libraries."""
    folder = FUNCTIONS / name
    imports = function_imports(folder / "main.py")
    base = installed_by(_requirement_lines(folder / "requirements.txt"))
    optional = [folder / o.filename for o in package.OPTIONAL_REQUIREMENTS if o.package == name]
    everything = installed_by(_requirement_lines(folder / "requirements.txt", *optional))
    assert {"functions-framework", "flask"} <= base  # the closure works: flask comes with the framework
    eager = {m: distribution_of(m, owners) for m in imports.eager}
    lazy = {m: distribution_of(m, owners) for m in imports.lazy}
    missing = {m: (d, sorted(imports.eager[m])) for m, d in eager.items() if d and d not in base}
    assert not missing, f"{name} imports these at load time, its requirements.txt misses them: {missing}"
    missing = {m: (d, sorted(imports.lazy[m])) for m, d in lazy.items() if d and d not in everything}
    assert not missing, f"{name} imports these when it runs, no requirement set has them: {missing}"


def test_predict_installs_no_scikit_learn_unless_the_fallback_is_chosen(owners: dict[Path, str]) -> None:
    folder = FUNCTIONS / "predict"
    base = installed_by(_requirement_lines(folder / "requirements.txt"))
    fallback = installed_by(
        _requirement_lines(folder / "requirements.txt", folder / "requirements-sklearn.txt")
    )
    assert not base & HEAVY_FOR_SERVING, sorted(base & HEAVY_FOR_SERVING)
    assert {"scikit-learn", "skops", "pandas"} <= fallback
    # What the fallback path imports (shared/model.py, lazily) is exactly what it adds.
    lazy = {distribution_of(m, owners) for m in function_imports(folder / "main.py").lazy}
    assert {"scikit-learn", "skops", "pandas"} <= lazy


def test_build_table_needs_no_compiler(owners: dict[Path, str]) -> None:
    """The table build scores with ONNX Runtime or scikit-learn; converting is training's work."""
    folder = FUNCTIONS / "build_table"
    base = installed_by(_requirement_lines(folder / "requirements.txt"))
    assert {"onnxruntime", "scikit-learn", "skops"} <= base
    assert not base & {"skl2onnx", "onnx"}
    imports = function_imports(folder / "main.py")
    reached = {distribution_of(m, owners) for m in {**imports.eager, **imports.lazy}}
    assert "onnxruntime" in reached and not reached & {"skl2onnx", "onnx"}


# --- optional requirement sets ------------------------------------------------------------------


def test_predict_zip_holds_the_sklearn_fallback_only_when_asked(tmp_path: Path) -> None:
    plain = {**os.environ, "PREDICT_SKLEARN_FALLBACK": "0"}
    chosen = {**os.environ, "PREDICT_SKLEARN_FALLBACK": "1"}
    printed = run_package_cli(tmp_path / "chosen", "predict", "train", env=chosen)
    run_package_cli(tmp_path / "plain", "predict", "train", env=plain)
    own = (FUNCTIONS / "predict" / "requirements.txt").read_bytes()
    fallback = (FUNCTIONS / "predict" / "requirements-sklearn.txt").read_bytes()
    with zipfile.ZipFile(tmp_path / "plain" / "predict.zip") as archive:
        assert archive.read("requirements.txt") == own
    with zipfile.ZipFile(tmp_path / "chosen" / "predict.zip") as archive:
        text = archive.read("requirements.txt")
        assert "requirements-sklearn.txt" not in archive.namelist()
    assert text.startswith(own.rstrip(b"\n")) and text.endswith(fallback)
    assert {"pandas", "scikit-learn", "skops"} <= set(_pins_of(text))
    assert "+ requirements-sklearn.txt" in printed
    # Only predict has the option: train's zip is the same either way.
    assert (tmp_path / "plain" / "train.zip").read_bytes() == (tmp_path / "chosen" / "train.zip").read_bytes()


def test_a_bad_fallback_value_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "infra" / "package.py"), "--out", str(tmp_path), "--only", "predict"],
        capture_output=True,
        text=True,
        env={**os.environ, "PREDICT_SKLEARN_FALLBACK": "yes"},
    )
    assert proc.returncode == 1
    assert "PREDICT_SKLEARN_FALLBACK='yes': expected 1" in proc.stderr
    assert not (tmp_path / "predict.zip").exists()


def test_an_optional_set_repeating_a_pin_is_refused(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("def handler(request):\n    return 'ok'\n")
    (tmp_path / "requirements.txt").write_text("functions-framework==3.10.2\nnumpy==2.4.6\n")
    (tmp_path / "requirements-extra.txt").write_text("NumPy==2.4.6\n")
    with pytest.raises(package.PackagingError, match=r"\['numpy'\] already in requirements.txt"):
        package.package_members(tmp_path, added=["requirements-extra.txt"])


def _pins_of(text: bytes) -> dict[str, str]:
    path_free = [line.split("#", 1)[0].strip() for line in text.decode().splitlines()]
    return dict(line.split("==", 1) for line in path_free if line)


def test_unpinned_requirement_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / "main.py").write_text("def handler(request):\n    return 'ok'\n")
    (folder / "requirements.txt").write_text("functions-framework==3.10.2\npandas>=2.2\n")
    with pytest.raises(package.PackagingError, match=r"pandas>=2\.2"):
        package.package_members(folder)


def test_folder_without_main_is_refused(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("functions-framework==3.10.2\n")
    with pytest.raises(package.PackagingError, match="no main.py"):
        package.package_members(tmp_path)


def test_unknown_package_name_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "infra" / "package.py"), "--out", str(tmp_path), "--only", "nope"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "unknown package(s) ['nope']" in proc.stderr


# --- self-sufficiency: each zip in a venv of its own requirements only ------------------------

# Run by the function venv's Python: build the functions-framework app from the unpacked zip
# and send it one request; print what came back and where `shared` was imported from.
CLIENT_SCRIPT = """
import json, sys
source, target, request_file = sys.argv[1:4]
request = json.load(open(request_file))
import functions_framework
app = functions_framework.create_app(target, source)
response = app.test_client().open(
    request["path"], method=request["method"], headers=request["headers"],
    data=request["body"].encode("latin-1"),
)
import shared
print(json.dumps({
    "status": response.status_code,
    "body": response.get_data(as_text=True),
    "shared": shared.__file__,
    "modules": sorted({name.split(".")[0] for name in sys.modules}),
}))
"""


def make_function_venv(venv: Path, requirements: Path) -> Path:
    """A venv with no pip and nothing but ``requirements`` installed (wheels from the pip cache)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-compile"]
        + ["--quiet", "--disable-pip-version-check", "--no-input", "-r", str(requirements)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"pip install -r {requirements} failed:\n{proc.stderr[-3000:]}"
    return python


@pytest.fixture(scope="module")
def function_venv(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``venv_for(name)``: the Python of a fresh venv with only functions/<name>/requirements.txt.

    Made on first use, once per function per module (one after the other: on two cores,
    parallel pip installs measured slower); the venv has no pip and not the project's package,
    so only the zip can provide ``shared``.
    """
    root = tmp_path_factory.mktemp("venvs")
    made: dict[str, Path] = {}

    def venv_for(name: str) -> Path:
        if name not in made:
            made[name] = make_function_venv(root / name, FUNCTIONS / name / "requirements.txt")
        return made[name]

    return venv_for


@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The landed functions' zips, built once by the packaging command."""
    out = tmp_path_factory.mktemp("dist")
    if LANDED:
        run_package_cli(out, *LANDED)
    return out


def call_in_venv(
    python: Path,
    zip_path: Path,
    target: str,
    request: dict[str, Any],
    env: dict[str, str],
    workdir: Path,
) -> dict[str, Any]:
    """Unpack ``zip_path`` into a fresh folder and send ``request`` to ``target`` in that venv."""
    unpacked = workdir / "unpacked"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(unpacked)
    (workdir / "client.py").write_text(CLIENT_SCRIPT)
    (workdir / "request.json").write_text(json.dumps(request))
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    proc = subprocess.run(
        [
            str(python),
            "-I",
            str(workdir / "client.py"),
            str(unpacked / "main.py"),
            target,
            str(workdir / "request.json"),
        ],
        cwd=workdir,  # not the unpacked folder: only functions-framework's own path setup finds it
        env={**base, **env, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{target} in its own venv failed:\n{proc.stderr[-4000:]}"
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(answer["shared"]).resolve().is_relative_to(unpacked.resolve()), answer["shared"]
    return answer


def local_env(buckets_root: Path, **extra: str) -> dict[str, str]:
    """Settings of a function on local buckets under ``buckets_root``."""
    return {
        "STORAGE_BACKEND": "local",
        "LOCAL_BUCKETS_ROOT": str(buckets_root),
        "DATA_BUCKET": "prodml-data",
        "ARTIFACTS_BUCKET": "prodml-artifacts",
        "LOG_FORMAT": "json",
        **extra,
    }


def cloudevent_request(bucket: Any, name: str) -> dict[str, Any]:
    """The binary-mode request Eventarc sends for ``name`` finalized in ``bucket``."""
    from shared.events import build_cloudevent

    headers, body = build_cloudevent(bucket.stat(name))
    return {"path": "/", "method": "POST", "headers": headers, "body": body.decode("latin-1")}


def artifacts_with_model(root: Path, bundle: Any) -> Any:
    """A local artifacts bucket under ``root`` holding schema.json and models/current.skops."""
    from shared.schema import save_schema
    from shared.storage.local import LocalBucket

    artifacts = LocalBucket(root, "prodml-artifacts")
    save_schema(artifacts, bundle.schema)
    artifacts.write("models/current.skops", bundle.to_bytes())
    return artifacts


PREDICT_INSTANCE = {"country": "us", "hour": 18, "device": "mobile", "segment": "new", "bid": 2.5}
PREDICT_REQUEST = {
    "path": "/",
    "method": "POST",
    "headers": {"Content-Type": "application/json"},
    "body": json.dumps({"instances": [PREDICT_INSTANCE]}),
}
SKLEARN_FALLBACK = {"sklearn", "skops", "pandas"}


def artifacts_with_compiled_model(root: Path, bundle: Any) -> Any:
    """A local artifacts bucket under ``root`` whose current model is ``bundle``, compiled and
    promoted as the train function does (version folder with model.onnx, then the current blob
    naming the compiled form); returns (the bucket, the CompiledModel)."""
    from conftest import publish_compiled

    from shared.schema import save_schema
    from shared.storage.local import LocalBucket

    artifacts = LocalBucket(root, "prodml-artifacts")
    save_schema(artifacts, bundle.schema)
    _, compiled = publish_compiled(artifacts, bundle)
    return artifacts, compiled


@pytest.fixture(scope="module")
def fallback_predict(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """predict packaged with PREDICT_SKLEARN_FALLBACK=1: (its zip, a venv of the zip's requirements)."""
    root = tmp_path_factory.mktemp("fallback")
    run_package_cli(root / "dist", "predict", env={**os.environ, "PREDICT_SKLEARN_FALLBACK": "1"})
    requirements = root / "requirements.txt"
    with zipfile.ZipFile(root / "dist" / "predict.zip") as archive:
        requirements.write_bytes(archive.read("requirements.txt"))
    return root / "dist" / "predict.zip", make_function_venv(root / "venv", requirements)


@pytest.mark.slow
def test_predict_zip_answers_a_prediction_in_its_own_venv(
    tmp_path: Path, zips: Path, function_venv: Callable[[str], Path], table_bundle: Any
) -> None:
    """The default package: ONNX Runtime serves the compiled model; scikit-learn, skops and
    pandas are not even installed."""
    require("predict")
    root = tmp_path / "buckets"
    _, compiled = artifacts_with_compiled_model(root, table_bundle)
    answer = call_in_venv(
        function_venv("predict"),
        zips / "predict.zip",
        "predict",
        PREDICT_REQUEST,
        local_env(root, SERVING_MODE="dynamic"),
        tmp_path,
    )
    assert answer["status"] == 200, answer["body"]
    body = json.loads(answer["body"])
    expected = float(compiled.score_columns({k: [v] for k, v in PREDICT_INSTANCE.items()})[0])
    assert body["model_version"] == "v1"
    assert body["predictions"][0]["source"] == "model"
    assert body["predictions"][0]["score"] == expected
    assert "onnxruntime" in answer["modules"]
    assert not SKLEARN_FALLBACK & set(answer["modules"])


@pytest.mark.slow
def test_predict_zip_without_the_fallback_refuses_an_uncompiled_version_saying_why(
    tmp_path: Path, zips: Path, function_venv: Callable[[str], Path], table_bundle: Any
) -> None:
    """A current model with no compiled form (written before compiled serving): 503, and the
    message names what is missing and the two ways out; no 500."""
    require("predict")
    root = tmp_path / "buckets"
    artifacts_with_model(root, table_bundle)
    python = function_venv("predict")
    answer = call_in_venv(
        python, zips / "predict.zip", "predict", PREDICT_REQUEST, local_env(root), tmp_path / "post"
    )
    assert answer["status"] == 503, answer["body"]
    error = json.loads(answer["body"])["error"]
    assert error["code"] == "not_ready"
    assert (
        "this predict deployment has no scikit-learn fallback (scikit-learn or skops cannot"
        in error["message"]
    )
    assert "No module named 'sklearn'" in error["message"]
    assert "deploy predict with PREDICT_SKLEARN_FALLBACK=1 or fix the estimator" in error["message"]


@pytest.mark.slow
def test_predict_zip_with_the_fallback_serves_an_uncompiled_version_in_its_own_venv(
    tmp_path: Path, fallback_predict: tuple[Path, Path], table_bundle: Any
) -> None:
    from shared.model import to_frame

    zip_path, python = fallback_predict
    root = tmp_path / "buckets"
    artifacts_with_model(root, table_bundle)  # no compiled form: scikit-learn must serve it
    answer = call_in_venv(python, zip_path, "predict", PREDICT_REQUEST, local_env(root), tmp_path)
    assert answer["status"] == 200, answer["body"]
    body = json.loads(answer["body"])
    expected = float(table_bundle.scores(to_frame(table_bundle.schema, [PREDICT_INSTANCE]))[0])
    assert body["model_version"] == "v1"
    assert body["predictions"][0]["score"] == expected
    assert set(answer["modules"]) >= SKLEARN_FALLBACK


@pytest.mark.slow
def test_build_table_zip_builds_a_table_over_http_in_its_own_venv(
    tmp_path: Path, zips: Path, function_venv: Callable[[str], Path], table_bundle: Any
) -> None:
    require("build_table")
    root = tmp_path / "buckets"
    artifacts = artifacts_with_model(root, table_bundle)
    request = {
        "path": "/",
        "method": "POST",
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"strategy": "full"}),
    }
    answer = call_in_venv(
        function_venv("build_table"),
        zips / "build_table.zip",
        "build_table_http",
        request,
        local_env(root),
        tmp_path,
    )
    assert answer["status"] == 200, answer["body"]
    pointer = json.loads(artifacts.read("tables/current.json"))
    assert pointer["model_version"] == "v1"
    assert pointer["rows"] == 5 * 24 * 3  # every key of the schema


@pytest.mark.slow
def test_build_table_zip_answers_storage_events_in_its_own_venv(
    tmp_path: Path, zips: Path, function_venv: Callable[[str], Path], table_bundle: Any
) -> None:
    """An unrelated object is ignored (2xx, no table); models/current.skops builds the table."""
    require("build_table")
    root = tmp_path / "buckets"
    artifacts = artifacts_with_model(root, table_bundle)
    artifacts.write("notes/readme.txt", b"not a model")
    python = function_venv("build_table")
    env = local_env(root)

    ignored = call_in_venv(
        python,
        zips / "build_table.zip",
        "on_model_promoted",
        cloudevent_request(artifacts, "notes/readme.txt"),
        env,
        tmp_path / "ignored",
    )
    assert 200 <= ignored["status"] < 300, ignored["body"]
    assert not artifacts.exists("tables/current.json")

    built = call_in_venv(
        python,
        zips / "build_table.zip",
        "on_model_promoted",
        cloudevent_request(artifacts, "models/current.skops"),
        env,
        tmp_path / "built",
    )
    assert 200 <= built["status"] < 300, built["body"]
    assert json.loads(artifacts.read("tables/current.json"))["model_version"] == "v1"


@pytest.mark.slow
def test_train_zip_trains_and_promotes_a_first_model_in_its_own_venv(
    tmp_path: Path, zips: Path, function_venv: Callable[[str], Path]
) -> None:
    """A data file lands in incoming/ with a schema in place: the first model is promoted."""
    require("train")
    from shared.local.synth import day_frame, synth_schema
    from shared.model import ModelBundle
    from shared.schema import save_schema
    from shared.storage.local import LocalBucket

    root = tmp_path / "buckets"
    data, artifacts = LocalBucket(root, "prodml-data"), LocalBucket(root, "prodml-artifacts")
    save_schema(artifacts, synth_schema())
    data.write("incoming/day-000.csv", day_frame(seed=0, day=0, rows=400).to_csv(index=False).encode())
    answer = call_in_venv(
        function_venv("train"),
        zips / "train.zip",
        "on_data_file",
        cloudevent_request(data, "incoming/day-000.csv"),
        local_env(root),
        tmp_path,
    )
    assert 200 <= answer["status"] < 300, answer["body"]
    promoted = ModelBundle.from_bytes(artifacts.read("models/current.skops"))
    assert promoted.schema == synth_schema()
