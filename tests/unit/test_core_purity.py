"""The core's purity rule: ``bulkapi.core`` does no I/O and pulls in no framework."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import bulkapi.core

CORE_DIR = Path(bulkapi.core.__file__).parent
REPO_ROOT = CORE_DIR.parents[1]

#: Top-level packages the core must never load, directly or indirectly.
FORBIDDEN = ("flask", "sqlalchemy", "dramatiq", "flask_smorest", "marshmallow", "psycopg", "redis")

#: Modules that would give the core a clock, randomness or fresh ids.
IMPURE_MODULES = frozenset({"time", "random", "uuid", "secrets"})
#: Calls that read the clock.
CLOCK_CALLS = frozenset({"now", "utcnow", "today"})

_PROBE = """
import importlib, json, pkgutil, sys
import bulkapi.core as core
names = sorted(m.name for m in pkgutil.iter_modules(core.__path__, "bulkapi.core."))
for name in names:
    importlib.import_module(name)
forbidden = json.loads(sys.argv[1])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
print(json.dumps({"imported": names, "loaded": loaded}))
"""


def test_importing_every_core_module_loads_no_framework_in_a_fresh_interpreter() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(FORBIDDEN)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    report = json.loads(completed.stdout)
    expected = {f"bulkapi.core.{path.stem}" for path in CORE_DIR.glob("*.py")} - {
        "bulkapi.core.__init__"
    }
    assert set(report["imported"]) == expected
    assert report["loaded"] == []


def test_core_source_reads_no_clock_and_draws_no_randomness() -> None:
    offences: list[str] = []
    for path in sorted(CORE_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            elif isinstance(node, ast.Attribute) and node.attr in CLOCK_CALLS:
                offences.append(f"{path.name}:{node.lineno} .{node.attr}")
                continue
            else:
                continue
            offences.extend(
                f"{path.name}:{node.lineno} import {root}" for root in roots & IMPURE_MODULES
            )
    assert offences == []
