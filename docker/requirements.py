"""Write the project's runtime dependencies from pyproject.toml as two pip requirements files.

    python3 docker/requirements.py pyproject.toml OUT_DIR  ->  OUT_DIR/torch.txt, OUT_DIR/others.txt

The Dockerfile installs ``torch.txt`` (torch and torchvision: gigabytes of CUDA wheels) in a layer
of its own, then ``others.txt``: changing any other dependency, or the code, does not reinstall
torch. pyproject.toml stays the one place dependencies are declared. Standard library only (it
runs on the base image's python3, before any venv exists); Python >= 3.11 for ``tomllib``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

# The distributions that go in the first, heavy layer.
HEAVY = ("torch", "torchvision")


def distribution_name(requirement: str) -> str:
    """``"uvicorn[standard]>=0.30"`` -> ``"uvicorn"`` (normalised as PEP 503 does)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match[1]).lower()


def split_requirements(pyproject: Path) -> tuple[list[str], list[str]]:
    """(the HEAVY requirements, every other runtime requirement), in pyproject.toml's order."""
    requirements = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    heavy = [r for r in requirements if distribution_name(r) in HEAVY]
    missing = set(HEAVY) - {distribution_name(r) for r in heavy}
    if missing:
        raise ValueError(f"{pyproject}: no {', '.join(sorted(missing))} in project.dependencies")
    return heavy, [r for r in requirements if distribution_name(r) not in HEAVY]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: requirements.py PYPROJECT_TOML OUT_DIR", file=sys.stderr)
        return 2
    heavy, others = split_requirements(Path(argv[0]))
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "torch.txt").write_text("\n".join(heavy) + "\n", encoding="utf-8")
    (out / "others.txt").write_text("\n".join(others) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
