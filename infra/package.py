"""Build one deployable zip per function source folder: ``dist/<folder>.zip``.

A zip holds what Cloud Functions (2nd gen, Python) builds from: the folder's ``main.py`` (and
any other ``.py`` beside it), its own pinned ``requirements.txt``, and a copy of the project's
``shared`` package (its ``.py`` files and data, never caches). The folders come from
``infra/functions.json`` (two entry points may share one folder, and so one zip).

A deployer may add an optional requirement set kept beside a folder's ``requirements.txt``
(``OPTIONAL_REQUIREMENTS``): ``PREDICT_SKLEARN_FALLBACK=1`` appends
``functions/predict/requirements-sklearn.txt`` (scikit-learn, skops, pandas) to predict's
``requirements.txt`` in the zip, so it can serve a version that has no compiled form
(docs/deploy.md). Off by default: predict then installs ONNX Runtime and numpy, not scikit-learn.

The zips are reproducible: files in sorted order, every timestamp fixed (1980-01-01, or
``SOURCE_DATE_EPOCH`` when set), fixed permissions and compression level. The same sources give
byte-identical zips, so the content hash Terraform puts in the uploaded object's name changes
only when a function's sources do, and only that function redeploys.

This script uses the standard library only (it must run before any venv exists, and it must
not import the ``shared`` it packages)::

    python3 infra/package.py [--out dist] [--only predict]
    PREDICT_SKLEARN_FALLBACK=1 python3 infra/package.py  # `make package PREDICT_SKLEARN_FALLBACK=1`
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DECLARATION = REPO_ROOT / "infra" / "functions.json"
SHARED = REPO_ROOT / "shared"

# What of ``shared`` goes into a package: code and the data files code may read. Anything else
# (caches, editor files, local state) stays out, so a stray file never changes a zip.
SHARED_SUFFIXES = frozenset({".py", ".json", ".typed"})
SKIPPED_DIRS = frozenset({"__pycache__"})
# The smallest date a zip header can hold (the DOS epoch); the reproducible-builds default.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644
# One pinned requirement: ``name==version`` (extras and an environment marker allowed).
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!_-]+(\s*;.*)?$")


class PackagingError(Exception):
    """A function folder cannot be packaged; the message names the folder and the reason."""


@dataclass(frozen=True)
class OptionalRequirements:
    """A requirement set beside a package's ``requirements.txt``, added when ``variable`` is 1."""

    package: str
    filename: str
    variable: str


OPTIONAL_REQUIREMENTS = (
    # scikit-learn serves a version with no compiled form; without it such a version is refused
    # (and says so in /health), and predict installs ~150 MB less (docs/deploy.md).
    OptionalRequirements("predict", "requirements-sklearn.txt", "PREDICT_SKLEARN_FALLBACK"),
)


@dataclass(frozen=True)
class Package:
    """One built zip."""

    name: str
    path: Path
    sha256: str
    size: int
    files: int
    added: tuple[str, ...] = ()  # the optional requirement files appended to requirements.txt


def source_folders(declaration: Path = DECLARATION) -> dict[str, Path]:
    """Package name -> source folder, one per distinct ``source`` in the declaration."""
    try:
        functions = json.loads(declaration.read_text())["functions"]
        sources = sorted({spec["source"] for spec in functions.values()})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PackagingError(f"{declaration}: cannot read the function declaration: {exc!r}") from None
    folders: dict[str, Path] = {}
    for source in sources:
        folder = (REPO_ROOT / source).resolve()
        if REPO_ROOT not in folder.parents:
            raise PackagingError(f"source {source!r} is outside the repository")
        if folder.name in folders:
            raise PackagingError(f"two sources end in the same folder name {folder.name!r}")
        folders[folder.name] = folder
    return folders


def check_requirements(path: Path) -> list[str]:
    """The requirement lines of ``path``; ``PackagingError`` unless every one is pinned with ``==``."""
    if not path.is_file():
        raise PackagingError(f"{path}: missing; every function needs its own pinned requirements.txt")
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    requirements = [line for line in lines if line]
    unpinned = [line for line in requirements if not PIN.match(line)]
    if unpinned:
        raise PackagingError(
            f"{path}: not pinned with == (reproducible deploys need exact versions): {unpinned}"
        )
    if not requirements:
        raise PackagingError(f"{path}: empty; it must at least pin functions-framework")
    return requirements


def optional_requirements(package: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """The optional requirement files of ``package`` its variables turn on (``1``; ``0`` or unset: off)."""
    environ = os.environ if environ is None else environ
    chosen = []
    for option in OPTIONAL_REQUIREMENTS:
        if option.package != package:
            continue
        value = environ.get(option.variable, "").strip()
        if value not in ("", "0", "1"):
            raise PackagingError(f"{option.variable}={value!r}: expected 1 (add {option.filename}) or 0")
        if value == "1":
            chosen.append(option.filename)
    return chosen


def requirements_text(folder: Path, added: Sequence[str] = ()) -> bytes:
    """The ``requirements.txt`` of the zip: the folder's own, then each file of ``added`` from the
    same folder (every line pinned; a package named twice is refused)."""
    own = folder / "requirements.txt"
    names = {_name(line) for line in check_requirements(own)}
    text = own.read_bytes()
    for filename in added:
        extra = folder / filename
        if not extra.is_file():
            raise PackagingError(f"{extra}: missing, and asked for")
        twice = names & {_name(line) for line in check_requirements(extra)}
        if twice:
            raise PackagingError(f"{extra}: {sorted(twice)} already in {own.name}")
        text = text.rstrip(b"\n") + f"\n# added from {filename}\n".encode() + extra.read_bytes()
    return text


def _name(requirement: str) -> str:
    """The normalized project name of a pinned requirement line."""
    return re.split(r"[\[=;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-").replace(".", "-")


def package_members(
    folder: Path, shared: Path = SHARED, added: Sequence[str] = ()
) -> list[tuple[str, Path | bytes]]:
    """(name in the zip, file on disk or its bytes) for one function folder, sorted by name in the
    zip; ``added``: optional requirement files appended to its ``requirements.txt``."""
    if not (folder / "main.py").is_file():
        raise PackagingError(f"{folder}: no main.py, the file Cloud Functions loads the entry point from")
    check_requirements(folder / "requirements.txt")
    members: dict[str, Path | bytes] = {path.name: path for path in folder.glob("*.py")}
    members["requirements.txt"] = requirements_text(folder, added) if added else folder / "requirements.txt"
    for path in _files_under(shared):
        if path.suffix in SHARED_SUFFIXES:
            members[path.relative_to(shared.parent).as_posix()] = path
    return sorted(members.items())


def _files_under(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning in place keeps os.walk out of caches; sorting is for a stable walk only,
        # the zip order is fixed by sorting the names afterwards.
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS and not d.startswith("."))
        for filename in sorted(filenames):
            if not filename.startswith("."):
                yield Path(dirpath) / filename


def zip_timestamp() -> tuple[int, int, int, int, int, int]:
    """The one timestamp of every entry: ``SOURCE_DATE_EPOCH`` if set, else 1980-01-01."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return ZIP_EPOCH
    try:
        epoch = int(raw)
    except ValueError:
        raise PackagingError(f"SOURCE_DATE_EPOCH={raw!r} is not an integer number of seconds") from None
    moment = time.gmtime(epoch)
    # Zip headers cannot hold dates before 1980; clamp as the reproducible-builds spec suggests.
    return max(ZIP_EPOCH, tuple(moment[:6]))  # type: ignore[return-value]


def write_zip(members: Sequence[tuple[str, Path | bytes]], out: Path) -> None:
    """Write ``members`` to ``out`` deterministically (atomically: temp file, then rename)."""
    stamp = zip_timestamp()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            for name, path in members:
                info = zipfile.ZipInfo(name, date_time=stamp)
                info.create_system = 3  # unix, so external_attr carries the permission bits
                info.external_attr = (0o100000 | FILE_MODE) << 16  # a regular file, rw-r--r--
                info.compress_type = zipfile.ZIP_DEFLATED
                data = path if isinstance(path, bytes) else path.read_bytes()
                archive.writestr(info, data, compresslevel=9)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


def build(out_dir: Path, only: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> list[Package]:
    """Build the zips (all, or those named in ``only``) into ``out_dir``, each with the optional
    requirements ``environ`` (default: this process's environment) turns on."""
    folders = source_folders()
    wanted = set(only) or set(folders)
    unknown = wanted - set(folders)
    if unknown:
        raise PackagingError(f"unknown package(s) {sorted(unknown)}; known: {sorted(folders)}")
    built = []
    for name in sorted(wanted):
        added = tuple(optional_requirements(name, environ))
        members = package_members(folders[name], added=added)
        path = out_dir / f"{name}.zip"
        write_zip(members, path)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        built.append(Package(name, path, digest, len(data), len(members), added))
    return built


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build the zips and print one line per zip."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "dist", help="output folder (default dist/)")
    parser.add_argument("--only", action="append", default=[], help="build only this package (repeatable)")
    args = parser.parse_args(argv)
    try:
        packages = build(args.out, args.only)
    except PackagingError as exc:
        print(f"package: {exc}", file=sys.stderr)
        return 1
    for package in packages:
        print(
            f"{os.path.relpath(package.path)}  {package.files:4d} files  {package.size:9,d} bytes"
            f"  sha256 {package.sha256[:16]}" + "".join(f"  + {added}" for added in package.added)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
