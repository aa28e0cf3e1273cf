"""The three floors (kernel, plugins, entry points) on the installed package.

The package is materialised with pip (`--target`, from a copy of what pyproject packages): controllers/ and backends/ then sit where
they install, inside autospec/, so an import graph of it sees every arrow the package-dir mapping
hides in the source tree. `lint-imports` checks the contracts of `.importlinter`; the floor graph
is then drawn with grimp and must have no cycle between floors and nothing leaving the kernel.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ("pyproject.toml", "README.md", "autospec", "controllers", "backends")     # what the wheel is built from

FLOOR_GRAPH = r"""
import json, sys
import grimp
graph = grimp.build_graph("autospec")
def floor(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("controllers", "backends", "entrypoints", "integrations") else \
        ("facade" if module == "autospec" else "kernel")
edges = set()
for importer in graph.modules:
    for imported in graph.find_modules_directly_imported_by(importer):
        a, b = floor(importer), floor(imported)
        if a != b:
            edges.add((a, b))
print(json.dumps(sorted(edges)))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    if shutil.which("lint-imports") is None:
        pytest.fail("import-linter is not installed: it is in the [test] extra (pip install -e '.[test]')")
    source, target = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("site")
    for name in PACKAGED:      # a clean copy: an in-tree build/ left by an earlier build would leak stale modules
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    assert (target / "autospec" / "controllers" / "bandit.py").exists()     # the mapping, materialised
    return target


def run_in(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(args, cwd=site, env=env, capture_output=True, text=True)


def test_the_import_contracts_hold_on_the_installed_package(installed):
    done = run_in(installed, "lint-imports", "--config", str(ROOT / ".importlinter"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 kept, 0 broken" in done.stdout


def test_the_floor_graph_has_no_cycle_and_nothing_leaves_the_kernel(installed):
    done = run_in(installed, sys.executable, "-c", FLOOR_GRAPH)
    assert done.returncode == 0, done.stderr
    edges = {tuple(e) for e in json.loads(done.stdout)}
    assert not [e for e in edges if e[0] == "kernel"], edges
    assert not [(a, b) for a, b in edges if (b, a) in edges], edges
    assert ("entrypoints", "backends") in edges and ("controllers", "kernel") in edges   # the graph is real
    assert ("integrations", "controllers") in edges, edges
    # an integration is reached only from the entry points (the CLI's `profile --engine vllm`), never below them
    assert {a for a, b in edges if b == "integrations"} <= {"entrypoints"}, edges
    assert not {("controllers", "backends"), ("backends", "controllers")} & edges

