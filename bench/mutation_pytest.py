"""A pytest plugin for the mutation runs (bench/mutation.py; loaded by ``-p bench.mutation_pytest``
from ``[tool.mutmut] pytest_add_cli_args``): runs the tests written to kill mutants
(``test_mutants_*.py``) first, then the others fastest first, by the durations mutmut recorded in
its stats run. mutmut stops a mutant's run at the first failing test (``-x``), so a killed mutant
costs its cheapest killing test instead of whatever its tests' set order happened to be. Order
only; it selects nothing.
"""

from __future__ import annotations

import json
from pathlib import Path


def pytest_collection_modifyitems(session, config, items) -> None:
    durations: dict[str, float] = {}
    stats = Path("mutmut-stats.json")  # mutmut runs the tests from inside its mutants/ folder
    if stats.exists():
        try:
            durations = json.loads(stats.read_text()).get("duration_by_test", {})
        except (OSError, ValueError):
            durations = {}
    items.sort(key=lambda item: (not Path(str(item.fspath)).name.startswith("test_mutants_"),
                                 durations.get(item.nodeid, 0.0)))
