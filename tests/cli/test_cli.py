"""The ``prodml`` parser: starts without the heavy libraries, lists every command, and its
registration-time values agree with the modules that own them."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import shared.cli

HEAVY = ("sklearn", "pandas", "matplotlib", "apache_beam", "scipy")

# docs/design.md section 7 (and the scale-out and example-data groups).
DOCUMENTED_COMMANDS = {
    "data",
    "schema",
    "train",
    "models",
    "rollback",
    "monitor",
    "live",
    "feedback",
    "shadow",
    "replay",
    "table",
    "advise",
    "up",
    "demo",
    "pipeline",
}


def _python(code: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter, so ``sys.modules`` holds only what it imported."""
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60, check=False
    )


def _command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand of the parser, as argument prefixes (``("pipeline", "table")``)."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += [(*path, name), *_command_paths(sub, (*path, name))]
    return paths


def test_building_the_parser_imports_no_heavy_library() -> None:
    code = (
        "import shared.cli, sys; shared.cli.build_parser(); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    run = _python(code)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_every_commands_help_imports_no_heavy_library() -> None:
    # What a user runs: `prodml <command> --help` for each command and subcommand, in one process.
    paths = _command_paths(shared.cli.build_parser())
    code = (
        "import contextlib, io, sys, shared.cli\n"
        f"for path in {paths!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        shared.cli.main([*path, '--help'])\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    run = _python(code)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_help_lists_every_command() -> None:
    run = _python("import shared.cli, sys; sys.exit(shared.cli.main())", "--help")
    assert run.returncode == 0, run.stderr
    registered = {path[0] for path in _command_paths(shared.cli.build_parser())}
    assert registered >= DOCUMENTED_COMMANDS
    # argparse lists each command, indented by four spaces, at the start of its own line under COMMAND.
    listed = set(re.findall(r"^    (\S+)", run.stdout, flags=re.MULTILINE))
    assert registered <= listed, run.stdout


# --- what the commands print: names and messages from data never reach the terminal raw -----

PRODML = str(Path(sys.executable).with_name("prodml"))
# A name GCS takes: an OSC "set the window title" sequence, BEL, "clear the screen", a C1 CSI.
HOSTILE = "incoming/\x1b]0;owned\x07\x1b[2J\x9b31mday.csv"
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # any control character but a line end


def _prodml(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "STORAGE_BACKEND": "local",
        "LOCAL_BUCKETS_ROOT": str(root),
        "DATA_BUCKET": "prodml-data",
        "ARTIFACTS_BUCKET": "prodml-artifacts",
        "LOG_FORMAT": "text",  # the log lines a person at a terminal reads
    }
    # Bytes, decoded here: text mode would turn a raw carriage return into a line end.
    run = subprocess.run([PRODML, *argv], env=env, capture_output=True, timeout=120, check=False)
    return subprocess.CompletedProcess(run.args, run.returncode, run.stdout.decode(), run.stderr.decode())


def test_monitor_and_replay_print_control_characters_escaped(tmp_path: Path) -> None:
    from shared.data import monitoring
    from shared.storage.local import LocalBucket

    root = tmp_path / "buckets"
    data, artifacts = LocalBucket(root, "prodml-data"), LocalBucket(root, "prodml-artifacts")
    generation = data.write(HOSTILE, b"a,b\n1,2\n")
    message = "ValueError: value '\x1b[31mred' in column\r\x1b[Kb"  # from the data: colour, CR, erase line
    record = monitoring.make_record(HOSTILE, generation, None, None, {}, [], "error", message=message)
    monitoring.write_record(artifacts, record)
    reason = {"object": HOSTILE, "generation": generation - 1, "rule": "bad\x1b[5m", "message": message}
    data.write("quarantine/x.reason.json", json.dumps(reason).encode())

    shown = _prodml(root, "monitor")
    assert shown.returncode == 0, shown.stderr
    assert RAW_CONTROL.search(shown.stdout) is None, repr(shown.stdout)
    assert "incoming/\\x1b]0;owned\\x07\\x1b[2J\\x9b31mday.csv@" in shown.stdout
    assert "value '\\x1b[31mred' in column\\r\\x1b[Kb" in shown.stdout
    as_json = _prodml(root, "monitor", "--json")
    assert {row["object"] for row in json.loads(as_json.stdout)} == {HOSTILE}  # JSON keeps the real name

    replayed = _prodml(root, "replay", "--in-process")  # no schema yet: left for later, said why
    assert replayed.returncode == 1
    assert RAW_CONTROL.search(replayed.stdout) is None, repr(replayed.stdout)
    assert "\\x1b]0;owned\\x07" in replayed.stdout
    assert RAW_CONTROL.search(replayed.stderr) is None, repr(replayed.stderr)  # the log lines too
    assert "\\x1b]0;owned\\x07" in replayed.stderr
