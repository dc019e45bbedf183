"""``prodml demo``: the whole story on synthetic data, end to end (docs/design.md section 6).

``run_demo`` starts from a fresh state folder (default ``.local/demo``), runs every step of
``shared.local.demo.story`` with a progress line each, prints a summary table and writes
``<state>/demo/summary.json`` and ``<state>/demo/report.html``. The stack is stopped at the end,
on an error and on Ctrl-C; the buckets stay in the state folder to look at.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from shared.errors import DemoError
from shared.local.demo.story import Demo, DemoOptions

__all__ = ["Demo", "DemoOptions", "run_demo"]


def run_demo(options: DemoOptions) -> Demo:
    """Run the story from a fresh state folder; print the summary; write summary and report."""
    from shared.local.demo.report import render_table, summary_rows, write_report

    state = options.state.resolve()
    if state.exists():
        if state in (Path.cwd().resolve(), Path.home().resolve()) or state == Path(state.anchor):
            raise DemoError(f"refusing to clear {state} as the demo's state folder: pass another --state")
        shutil.rmtree(state)  # a fresh state each run: the story starts with empty buckets
    demo = Demo(options)
    print(f"prodml demo{' (short)' if options.short else ''}: state in {demo.state}/", flush=True)
    demo.run()
    models = demo.cli("models")
    monitor = demo.cli("monitor")
    demo.stop()  # idempotent: closes the log the last commands reopened
    summary_path, report_path = write_report(demo, models, monitor)
    print()
    print(render_table(summary_rows(demo, models)))
    print()
    print(f"summary: {summary_path}")
    print(f"report:  {report_path}")
    print(f"buckets: {demo.state / 'buckets'}/  (the stack is stopped)")
    print(f"dashboard: {dashboard_hint(demo.state, demo.user_dashboard_port)}")
    return demo


def dashboard_hint(state: Path, port: int) -> str:
    """How to look at the demo's buckets in the dashboard once the demo has stopped its stack
    (``port``: the DASHBOARD_PORT `prodml up` will take)."""
    from shared.local.processes import HOST

    return f"`prodml up --state {state}`, then open http://{HOST}:{port}"
