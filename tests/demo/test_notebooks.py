"""The notebooks run top to bottom on the demo's outputs and show what the stages wrote."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import ghist_ray
from ghist_ray.cells import read_cells
from ghist_ray.config import PipelineConfig

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def execute(name: str, out: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, int]:
    """Run one notebook against ``out``; its printed text and how many pictures it drew."""
    monkeypatch.setenv("GHIST_DEMO_OUT", out)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        f"{name} is committed with outputs; clear them"
    )
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    pictures = sum("image/png" in o.get("data", {}) for o in outputs)
    return text, pictures


@pytest.mark.slow
def test_quickstart_reads_every_stage(
    demo_run: tuple[PipelineConfig, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = demo_run
    text, pictures = execute("quickstart.ipynb", config.out, monkeypatch)
    manifest = pd.read_parquet(Path(config.out) / "cohort" / "manifest.parquet")
    first = manifest[manifest.has_xenium].iloc[0].slide_id
    cells, meta = read_cells(str(Path(config.out) / "infer"), first)
    assert f"{len(manifest)} slides, {manifest.patient_id.nunique()} patients" in text
    assert f"{len(cells):,} cells, {len(meta.gene_names)} genes" in text
    assert "nuclei; predicted" in text  # the model ran on a tile
    assert pictures == 3  # thumbnail, type and gene maps, tile with its nuclei


@pytest.mark.slow
def test_survival_notebook_reproduces_the_stage(
    demo_run: tuple[PipelineConfig, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = demo_run
    text, pictures = execute("cohort_survival.ipynb", config.out, monkeypatch)
    metrics = json.loads((Path(config.out) / "survival" / "metrics.json").read_text())
    assert f"apparent C-index: {round(metrics['cindex_train'], 3)}" in text
    assert pictures == 1  # the Kaplan–Meier curves


@pytest.mark.parametrize("name", ["quickstart.ipynb", "cohort_survival.ipynb"])
def test_notebooks_use_only_the_top_level_api(name: str) -> None:
    """``import ghist_ray as gr`` and ``gr.<name>`` of its public names, nothing deeper."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    tree = ast.parse("\n".join(c.source for c in nb.cells if c.cell_type == "code"))
    imported = [
        alias.name if isinstance(node, ast.Import) else f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    ours = [n for n in imported if n.split(".")[0] == "ghist_ray"]
    assert ours == ["ghist_ray"], f"{name} imports {ours}"
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "gr"
    }
    assert used and used <= set(ghist_ray.__all__), (
        f"{name} uses gr.{used - set(ghist_ray.__all__)}"
    )


def test_notebooks_say_where_the_demo_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CellExecutionError, match="no finished demo here; run `make demo` first"):
        execute("quickstart.ipynb", str(tmp_path), monkeypatch)
