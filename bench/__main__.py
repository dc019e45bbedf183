"""Run every ``bench/bench_*.py`` module and print one table of ratios.

Usage: ``python -m bench [--quick] [--only AREA ...] [--markdown]``. ``--markdown`` prints the
table as Markdown with the machine's details, ready to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import platform
import sys
from datetime import UTC, datetime

import bench
from bench.common import Row


def machine() -> str:
    """One line naming the machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def render(rows: list[Row], markdown: bool) -> str:
    """The table, as aligned text or as Markdown."""
    header = ["area", "what", "value", "unit", "against", "ratio", "goal", "met"]
    body = [
        [
            r.area,
            r.what,
            f"{r.value:.4g}",
            r.unit,
            r.baseline,
            f"{r.ratio:.3g}",
            r.goal,
            "" if r.met is None else ("yes" if r.met else "NO"),
        ]
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*row) for row in [header, *body])


def main() -> int:
    """Discover, run and print; exit 0 even when a goal is missed (the table says so)."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--only", nargs="*", default=[], help="run only these areas (module suffixes)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    # An area is its module's suffix; one written as its rows name it ("prediction log") works too.
    only = {name.replace(" ", "_") for name in args.only}
    rows: list[Row] = []
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        if not info.name.startswith("bench_"):
            continue
        area = info.name.removeprefix("bench_")
        if only and area not in only:
            continue
        print(f"running {area} ...", file=sys.stderr, flush=True)
        module = importlib.import_module(f"bench.{info.name}")
        rows.extend(module.run(quick=args.quick))
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}")
    print(render(rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
