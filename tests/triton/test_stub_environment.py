"""How a generated ``model.py`` finds its environment, run in a bare interpreter as Triton's stub
runs it (no site-packages; the Python backend's folder on the path): numpy from the stub's own
Python, 1.x only; torch and attnzoo from the environment ``attnzoo triton-repo`` recorded, or from
``ATTNZOO_TRITON_SYS_PATH`` (as NVIDIA's container sets it). The loads in a real tritonserver are
tests/triton/test_serving.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.triton.conftest import PLAIN_VARIANT, clean_env

# After model.py ran: what the model's process would import.
PROBE = """
import json, runpy, sys
runpy.run_path(sys.argv[1])
import numpy
found = {"numpy": numpy.__version__, "numpy_file": numpy.__file__, "first_on_path": sys.path[0]}
import cv2, torch, app
found.update(app=app.__file__, cv2=cv2.__version__, torch_numpy=torch.zeros(2).numpy().dtype.name, numpy_after=numpy.__version__)
print(json.dumps(found))
"""
VENV_SITE = sysconfig.get_paths()["purelib"]


def _run(model_py: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``model_py`` in this Python without site-packages (``-S``), as the stub's bare Python."""
    return subprocess.run(
        [sys.executable, "-S", "-c", PROBE, str(model_py)], env=clean_env(**env), capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def model_py(repository) -> Path:
    return repository / PLAIN_VARIANT / "1" / "model.py"


@pytest.fixture(scope="module")
def stub_numpy(tritonserver_install) -> str:
    """The Python backend's folder: where scripts/setup-triton-tools put numpy 1.26 for the stub."""
    return str(tritonserver_install.backend_dir / "python")


def test_numpy_comes_from_the_stub_and_attnzoo_from_the_recorded_environment(model_py, stub_numpy):
    completed = _run(model_py, PYTHONPATH=stub_numpy)
    assert completed.returncode == 0, completed.stderr
    found = json.loads(completed.stdout)
    assert found["numpy"] == found["numpy_after"] == "1.26.4" and found["numpy_file"].startswith(stub_numpy)
    assert found["first_on_path"] == VENV_SITE
    assert Path(found["app"]).is_relative_to(Path(__file__).resolve().parents[2])  # the editable install
    assert found["torch_numpy"] == "float32"


def test_without_numpy_in_the_stubs_python_the_load_fails_saying_so(model_py):
    completed = _run(model_py)
    assert completed.returncode != 0
    assert "Triton's Python backend stub needs numpy 1.x in its own Python" in completed.stderr


def test_numpy_2_first_in_the_stubs_python_is_refused(model_py):
    completed = _run(model_py, PYTHONPATH=VENV_SITE)
    assert completed.returncode != 0
    assert "found numpy 2." in completed.stderr and "would corrupt every input" in completed.stderr


def test_the_environment_variable_replaces_the_recorded_environment(model_py, stub_numpy):
    """Set and empty: nothing is added (attnzoo must be in the stub's own Python, as in NVIDIA's container)."""
    completed = _run(model_py, PYTHONPATH=stub_numpy, ATTNZOO_TRITON_SYS_PATH="")
    assert completed.returncode != 0 and "No module named 'cv2'" in completed.stderr
    completed = _run(model_py, PYTHONPATH=stub_numpy, ATTNZOO_TRITON_SYS_PATH=VENV_SITE)
    assert completed.returncode == 0, completed.stderr


@pytest.mark.parametrize(
    "recorded, message",
    [
        ({"python": "2.7", "sys_path": [VENV_SITE]}, "names a Python 2.7 environment, and Triton's stub runs Python 3."),
        ({"python": "%d.%d" % sys.version_info[:2], "sys_path": ["/nowhere/site-packages"]}, "names /nowhere/site-packages, which does not exist here"),
    ],
)
def test_a_recorded_environment_that_does_not_fit_fails_saying_what_to_do(model_py, stub_numpy, tmp_path, recorded, message):
    moved = tmp_path / "model.py"
    shutil.copyfile(model_py, moved)
    (tmp_path / "environment.json").write_text(json.dumps(recorded))
    completed = _run(moved, PYTHONPATH=stub_numpy)
    assert completed.returncode != 0 and message in completed.stderr and "ATTNZOO_TRITON_SYS_PATH" in completed.stderr
