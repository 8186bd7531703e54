"""Every third-party module the shipped code imports comes from a distribution that pyproject.toml declares
as a base dependency (the worker image installs no extra), so a fresh install cannot miss one that happens
to arrive through another package."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

from tests.helpers import ROOT

SHIPPED = ("orchestrator", "workflows", "characters")
# Imported only where the embedded stack is installed (pip install -e '.[local]'), and guarded there.
LOCAL_ONLY = {"llama_cpp"}


def imported_modules(folder: Path) -> set[str]:
    modules = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules


def normalized(name: str) -> str:
    return name.lower().replace("_", "-")


def declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {normalized(Requirement(line).name) for line in lines}


def test_every_imported_third_party_module_is_a_declared_base_dependency() -> None:
    third_party = {
        module
        for folder in SHIPPED
        for module in imported_modules(ROOT / folder)
        if module not in sys.stdlib_module_names and module not in SHIPPED and module not in LOCAL_ONLY
    }
    distributions = packages_distributions()
    undeclared = {
        module: distributions.get(module)
        for module in third_party
        if not {normalized(d) for d in distributions.get(module, [])} & declared()
    }
    assert undeclared == {}


def test_the_local_only_modules_come_from_the_local_extra() -> None:
    distributions = packages_distributions()
    for module in LOCAL_ONLY:
        assert {normalized(d) for d in distributions[module]} & declared("local")


def test_the_production_worker_does_not_import_the_dev_stack() -> None:
    probe = "import sys, orchestrator.worker, orchestrator.client; print('orchestrator.devstack' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
