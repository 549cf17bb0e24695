"""docs/explorer.ipynb runs: a kernel shows ``Explorer`` for the fixture index and one search from
Python finds hits. The notebook's parameter cell (tagged ``parameters``) is given the index."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "explorer.ipynb"

pytestmark = pytest.mark.slow


def test_notebook_shows_the_explorer_and_searches(explorer_index, explorer_env, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    for key, value in explorer_env.items():  # the kernel inherits this process's environment
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    (parameters,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    parameters.source = f"index_path = {str(explorer_index)!r}"
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    shown = [c for c in nb.cells if c.cell_type == "code" and c.source.rstrip().endswith("\nexplorer")]
    (display,) = shown
    bundles = [o.get("data", {}) for o in display.outputs if o.output_type == "execute_result"]
    assert bundles, display.outputs
    # a Panel root model for the notebook's frontend, holding the page's map and thumbnail grid
    assert any("application/vnd.holoviews_exec.v0+json" in b for b in bundles), [list(b) for b in bundles]
    printed = "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream"
    )
    found = re.search(r"(\d+) hits for (\S+)", printed)
    assert found and int(found.group(1)) > 0, printed
