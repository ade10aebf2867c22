"""The notebooks run clean top to bottom (nbclient, the venv's python3 kernel) against the
shared scored bank of ``tests/integration/test_explain.py``, and are committed without
outputs and without logic of their own."""

from __future__ import annotations

import sys
import time

import nbformat
import pytest

from tests.conftest import ROOT
from tests.integration.test_explain import scored_bank

NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_explore_features", "02_train_and_compare", "03_score_analysis"]
CELL_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def kernel() -> str:
    """The ``python3`` kernel spec, installed into the venv when it is missing. Its argv
    ``python`` is replaced by jupyter_client with this interpreter (the venv's python)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        from ipykernel.kernelspec import install

        install(prefix=sys.prefix)
    return "python3"


def read(name: str):
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_clean(name, kernel, tmp_path_factory, monkeypatch):
    from nbclient import NotebookClient

    bank = scored_bank(tmp_path_factory)
    monkeypatch.setenv("PROPENSITY_DATA_DIR", str(bank["settings"].data_dir))  # the kernel inherits it
    monkeypatch.delenv("PROPENSITY_RAW_DIR", raising=False)
    monkeypatch.delenv("PROPENSITY_CONF", raising=False)
    notebook = read(name)
    started = time.perf_counter()
    NotebookClient(
        notebook, kernel_name=kernel, timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "every notebook draws at least one figure"
    print(f"{name}: {time.perf_counter() - started:.1f} s")


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs(name):
    for cell in read(name).cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("name", NAMES)
def test_notebook_calls_the_package_and_defines_no_logic(name):
    code = "\n".join(c.source for c in read(name).cells if c.cell_type == "code")
    assert "from propensity" in code
    assert "\ndef " not in f"\n{code}" and "\nclass " not in f"\n{code}"
