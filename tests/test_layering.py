"""The package's layers stay in order: nothing imports from a layer above it, and the
core (slides, xenium, model, metrics, the cells contract) never pulls in Ray, MLflow
or a stage. Read from the source (every import, function-level ones included), and
checked once more by importing the core in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ghist_ray"

# Bottom to top; a module may import its own layer and those below.
LAYERS: list[set[str]] = [
    {"errors", "config", "uri"},
    # The core: formats, the network, metrics, the output contract, the console.
    {
        "slides",
        "xenium",
        "model",
        "metrics",
        "augment",
        "synth",
        "manifest",
        "cells",
        "export",
        "plots",
        "console",
        "shards",
        "recolour",
        "nuclei_stats",
    },
    # Running and recording: Ray start-up, MLflow.
    {"runtime", "tracking", "mlflow_model", "stage_run"},
    # The stages.
    {
        "prepare",
        "train",
        "evaluate",
        "calibrate",
        "infer",
        "inference",
        "nuclei",
        "cohort",
        "analysis",
        "summary",
        "pyfunc",
    },
    # What people call: the Python API, the demo, the command line.
    {"api", "demo", "cli", "__main__"},
]
CORE = 1
HEAVY = ("ray", "mlflow")  # never imported by the core or below


def layer_of(unit: str) -> int:
    found = [k for k, names in enumerate(LAYERS) if unit in names]
    assert found, f"ghist_ray.{unit} is in no layer: add it to LAYERS in {Path(__file__).name}"
    return found[0]


def unit_of(module: str) -> str | None:
    """``ghist_ray.inference.plan`` → ``inference``; the package root itself → None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "ghist_ray" and len(parts) > 1 else None


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            if node.module == "ghist_ray":  # from ghist_ray import uri, tracking
                found |= {f"ghist_ray.{a.name}" for a in node.names if _submodule(a.name)}
    return found


def _submodule(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name).is_dir()


def modules() -> list[Path]:
    """Every module but the package root (whose names load the API lazily)."""
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.stem != "__init__")


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_layering_no_upward_imports(path: Path) -> None:
    unit = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    here = layer_of(unit)
    for name in sorted(imports(path)):
        target = unit_of(name)
        if target is not None and target in {u for layer in LAYERS for u in layer}:
            assert layer_of(target) <= here, (
                f"{path.relative_to(PACKAGE.parent)} (layer {here}) imports {name} "
                f"(layer {layer_of(target)}): an upward import"
            )
        elif target is not None:
            layer_of(target)  # a ghist_ray module missing from LAYERS fails here
        if here <= CORE:
            assert name.split(".")[0] not in HEAVY, (
                f"{path.relative_to(PACKAGE.parent)} is core (layer {here}) but imports {name}"
            )


def test_layering_core_imports_leave_ray_and_mlflow_unloaded() -> None:
    core = sorted(LAYERS[0] | LAYERS[CORE])
    script = (
        "import sys, importlib\n"
        f"for unit in {core!r}:\n"
        "    importlib.import_module('ghist_ray.' + unit)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"the core loaded {done.stdout.strip()}"


def test_layering_package_import_is_light() -> None:
    """``import ghist_ray`` loads no stage, no torch and no Ray; names load on use."""
    script = (
        "import sys, ghist_ray as gr\n"
        "heavy = ('ray', 'torch', 'mlflow', 'ghist_ray.api')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "gr.read_cells\n"
        "print('ghist_ray.api' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]", "True"]
