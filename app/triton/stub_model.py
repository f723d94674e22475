"""Triton Python-backend model of one attnzoo variant, written by ``attnzoo triton-repo`` as a copy
of ``app/triton/stub_model.py``: it makes torch and attnzoo importable, then delegates to
``app.triton.backend``.

Triton runs this file in its backend stub, a program that embeds the shared Python library it was
built for (the system's ``libpython3.X``), not the environment attnzoo is installed in. So, at
import, before anything else:

1. **numpy comes from the stub's own Python and must be 1.x.** The stub's compiled tensor code
   (pybind11) reads numpy's dtype structure with numpy 1.x's layout. numpy 2 moved the element size
   within that structure, and the stub then reads 0 there: a BYTES input reaches Python as an array
   of the right length holding its first byte repeated, and Triton's own
   ``deserialize_bytes_tensor`` fails on it ("unpack_from requires a buffer of at least ... bytes";
   the stub dies). numpy is therefore imported here first, from the stub's own ``sys.path``, and
   every later ``import numpy`` (torch's, OpenCV's, attnzoo's) gets that module: they are built
   against numpy 2 and run on 1.x too. NVIDIA's Triton container has numpy 1.x in its Python
   (``docker/triton/Dockerfile`` keeps it so); for the PyPI wheel's tritonserver,
   ``scripts/setup-triton-tools`` puts numpy 1.26 in the Python backend's folder, which the stub
   puts on ``sys.path``. A stub Python without numpy, or with numpy 2, fails the load with a reason.
2. **The environment with torch and attnzoo** goes first on ``sys.path``, with its ``.pth`` files
   applied (an editable install's import hook): the directories of ``ATTNZOO_TRITON_SYS_PATH``
   (``os.pathsep``-separated) when the server's environment sets it (set and empty: the stub's own
   Python has attnzoo, as in the container), else the site-packages of the Python that ran
   ``attnzoo triton-repo``, recorded in ``environment.json`` beside this file.

The names here are literals (attnzoo cannot be imported yet): ``app/triton/repository.py`` writes
the same ones.
"""

from __future__ import annotations

import json
import os
import site
import sys
from pathlib import Path
from typing import Any

SYS_PATH_ENV = "ATTNZOO_TRITON_SYS_PATH"
ENVIRONMENT_FILE = "environment.json"


def _import_stub_numpy() -> None:
    """Import numpy from the stub's own Python; refuse numpy 2 (see the module docstring)."""
    try:
        import numpy
    except ImportError as exc:
        raise RuntimeError(
            f"Triton's Python backend stub needs numpy 1.x in its own Python ({sys.version.split()[0]}, {sys.prefix}) "
            f"and found none ({exc}): install numpy<2 there or in the Python backend folder "
            "(scripts/setup-triton-tools does it for the PyPI wheel)"
        ) from None
    if int(numpy.__version__.split(".")[0]) >= 2:
        raise RuntimeError(
            f"Triton's Python backend stub found numpy {numpy.__version__} ({numpy.__file__}); its compiled tensor "
            "code reads numpy 1.x's layout and would corrupt every input: make numpy<2 the first numpy on the "
            "stub's own sys.path"
        )


def _environment_directories() -> list[str]:
    """The directories holding torch and attnzoo, in the order they go on ``sys.path``."""
    override = os.environ.get(SYS_PATH_ENV)
    if override is not None:
        return [part for part in override.split(os.pathsep) if part]
    recorded_file = Path(__file__).with_name(ENVIRONMENT_FILE)
    recorded = json.loads(recorded_file.read_text(encoding="utf-8"))
    running = "%d.%d" % sys.version_info[:2]
    if recorded["python"] != running:
        raise RuntimeError(
            f"{recorded_file} names a Python {recorded['python']} environment, and Triton's stub runs Python {running}: "
            f"use the stub built for {recorded['python']}, or set {SYS_PATH_ENV} to a Python {running} environment"
        )
    missing = [directory for directory in recorded["sys_path"] if not Path(directory).is_dir()]
    if missing:
        raise RuntimeError(
            f"{recorded_file} names {', '.join(missing)}, which does not exist here: set {SYS_PATH_ENV} to the "
            "site-packages that hold torch and attnzoo, or run attnzoo triton-repo on this machine"
        )
    directories: list[str] = recorded["sys_path"]
    return directories


def _enter_environment() -> None:
    _import_stub_numpy()
    before = list(sys.path)
    for directory in _environment_directories():
        site.addsitedir(directory)  # appends it and applies its .pth files
    added = [entry for entry in sys.path if entry not in before]
    sys.path[:] = added + before


_enter_environment()


class TritonPythonModel:
    """Triton's entry points, handed to :class:`app.triton.backend.VariantModel`."""

    def initialize(self, args: dict[str, Any]) -> None:
        from app.triton.backend import VariantModel

        self.model = VariantModel(args)

    def execute(self, requests: list[Any]) -> list[Any]:
        return self.model.execute(requests)

    def finalize(self) -> None:
        self.model.finalize()
