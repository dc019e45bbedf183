"""Values the parsers need while registering (choices, defaults, help text), kept here so that
building the parser imports no heavy module (see ``shared.cli``).

Each is a copy of the value its owning module defines; tests/test_cli.py checks they are equal,
so a change there fails a test instead of silently leaving ``--help`` or a ``choices`` stale.
"""

from __future__ import annotations

STRATEGIES: tuple[str, ...] = ("auto", "full", "top_k")
"""``shared.tables.plan.STRATEGIES``: which keys a table build scores."""

FUNCTION, DIRECT, DATAFLOW = "function", "direct", "dataflow"
PATHS: tuple[str, ...] = (FUNCTION, DIRECT, DATAFLOW)
"""``shared.pipelines.decide.PATHS``: where a table build or a bulk validation runs."""

LABEL_NAMES: tuple[str, ...] = ("label", "target", "y")
"""``shared.data.schema_infer.LABEL_NAMES``: column names ``prodml schema infer`` takes as the label."""

KEY_CARDINALITY = 691_200
"""``shared.local.synth.KEY_CARDINALITY``: distinct keys of the synthetic dataset (shown in its help)."""
