"""The image: Dockerfile and .dockerignore, checked against the project they package."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
import torch
from deploy_support import (
    DOCKERFILE,
    ENTRYPOINT,
    REPO_ROOT,
    DockerIgnore,
    Instruction,
    clean_env,
    image_requirements,
    interpolate,
    parse_dockerfile,
    parse_duration_s,
)

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    defaults = {}
    for ins in instructions:
        if ins.keyword == "ARG" and "=" in ins.args:
            name, _, value = ins.args.partition("=")
            defaults[name.strip()] = value.strip()
    return defaults


def _env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            for word in shlex.split(ins.args):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def _only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [ins for ins in stage if ins.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {len(found)}"
    return found[0]


def _copy_args(ins: Instruction) -> tuple[dict[str, str], list[str], str]:
    """(flags, sources, destination) of a COPY."""
    words = shlex.split(ins.args)
    flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
    paths = [w for w in words if not w.startswith("--")]
    return flags, paths[:-1], paths[-1]


def _copies(stage: list[Instruction]) -> list[tuple[dict[str, str], list[str], str]]:
    return [_copy_args(ins) for ins in stage if ins.keyword == "COPY"]


@dataclass(frozen=True)
class Stages:
    args: dict[str, str]  # global ARG defaults
    by_name: dict[str, list[Instruction]]  # every stage by its AS name
    runtime: list[Instruction]  # the last stage: the image


@pytest.fixture(scope="module")
def stages() -> Stages:
    preamble, *build_stages = parse_dockerfile()
    by_name = {stage[0].args.split()[-1]: stage for stage in build_stages}
    return Stages(_arg_defaults(preamble), by_name, build_stages[-1])


def _runs(stage: list[Instruction]) -> list[str]:
    return [ins.args for ins in stage if ins.keyword == "RUN"]


def test_built_by_the_builtin_frontend():
    """A `# syntax=` directive makes BuildKit pull a frontend image from a registry first."""
    head = DOCKERFILE.read_text(encoding="utf-8").lstrip().splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", head, re.I), head


def test_base_is_a_build_arg_defaulting_to_the_cuda_runtime_of_the_pinned_torch(stages):
    pinned = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch=="))
    assert torch.__version__.split("+")[0] == pinned.split("==")[1], "the venv's torch is not the pinned one"
    cuda = torch.version.cuda  # e.g. "13.0" for torch 2.14.1 from PyPI on x86_64
    assert cuda, "the installed torch is a CPU build: cannot tell which CUDA the image needs"
    image = stages.args["BASE_IMAGE"]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(?:cudnn-)?runtime-ubuntu(\d+\.\d+)", image)
    assert match, f"{image!r} is not an nvidia/cuda runtime image"
    assert f"{match[1]}.{match[2]}" == cuda, f"{image} does not match torch's CUDA {cuda}"
    # Every stage starts from ${BASE_IMAGE} or from an earlier stage: --build-arg BASE_IMAGE=... swaps it all.
    seen: set[str] = set()
    for name, stage in stages.by_name.items():
        parent = stage[0].args.split()[0]
        assert parent == "${BASE_IMAGE}" or parent in seen, f"stage {name} starts from {parent}"
        seen.add(name)


def test_dependencies_come_from_pyproject_torch_in_a_layer_of_its_own(stages):
    (requirements_run,) = _runs(stages.by_name["requirements"])
    assert "requirements.py" in requirements_run and "pyproject.toml" in requirements_run
    heavy, others = image_requirements.split_requirements(REPO_ROOT / "pyproject.toml")
    assert sorted(heavy + others) == sorted(PYPROJECT["project"]["dependencies"])
    assert {image_requirements.distribution_name(r) for r in heavy} == {"torch", "torchvision"}
    assert not any(d.lower().startswith(("mmcv", "mmdet", "mmengine")) for d in PYPROJECT["project"]["dependencies"])

    runtime = stages.runtime
    torch_layer = next(i for i, ins in enumerate(runtime) if ins.keyword == "RUN" and ins.args.endswith("-r /requirements/torch.txt"))
    # Nothing before the torch layer depends on the code: only the torch requirements file.
    for ins in runtime[:torch_layer]:
        if ins.keyword == "COPY":
            flags, sources, _ = _copy_args(ins)
            assert flags.get("from") == "requirements" and sources == ["/requirements/torch.txt"], ins
        assert "--mount=type=bind" not in ins.args, f"the build context is used before the torch layer: {ins}"
    project = next(i for i, ins in enumerate(runtime) if ins.keyword == "RUN" and "pip install --no-deps" in ins.args)
    assert project > torch_layer
    assert "--mount=type=bind,source=.,target=/src" in runtime[project].args and "pip install --no-deps /src" in runtime[project].args
    assert "[" not in runtime[project].args.split("pip install --no-deps", 1)[1], "no extras (mmcv lives there)"
    assert "mmcv" not in " ".join(ins.args for ins in runtime).lower()


def test_runtime_has_the_venv_on_path_and_runs_as_a_non_root_user(stages):
    runtime = stages.runtime
    assert any("venv /opt/venv" in run for run in _runs(runtime))
    assert "/opt/venv/bin" in _env(runtime)["PATH"].split(":")
    user = _only(runtime, "USER").args
    assert user not in ("root", "0") and not user.startswith("0:")
    useradd = next(run for run in _runs(runtime) if "useradd" in run)
    uid = re.search(r"--uid\s+(\S+)", useradd)[1]
    assert interpolate(uid, _arg_defaults(runtime)) not in ("", "0")
    assert re.search(rf"\b{re.escape(user)}\b", useradd), f"USER {user} is not the user the stage creates"


def test_weights_volume_ports_and_host(stages, service_port, grpc_port):
    runtime = stages.runtime
    env = _env(runtime)
    assert env["ATTNZOO_WEIGHTS_DIR"] == "/weights"
    volume = _only(runtime, "VOLUME").args
    assert (json.loads(volume) if volume.startswith("[") else volume.split()) == ["/weights"]
    assert env["ATTNZOO_PORT"] == str(service_port)
    assert env["ATTNZOO_GRPC_PORT"] == str(grpc_port)
    assert _only(runtime, "EXPOSE").args.split() == [str(service_port), str(grpc_port)]
    assert env["ATTNZOO_HOST"] == "0.0.0.0", "inside a container the service must listen on all interfaces"
    assert env.get("ATTNZOO_FETCH_ON_START", "0") == "0", "downloading must be opt-in"


def test_healthcheck_is_liveness_on_healthz_without_curl(stages):
    check = _only(stages.runtime, "HEALTHCHECK").args
    options, _, command = check.partition(" CMD ")
    assert "/healthz" in command and "urllib" in command
    assert "curl" not in command and "wget" not in command
    start_period = re.search(r"--start-period=(\S+)", options)
    assert start_period and parse_duration_s(start_period[1]) >= 300, "model loading needs a long start period"


def test_entrypoint_is_the_copied_script(stages):
    entrypoint = json.loads(_only(stages.runtime, "ENTRYPOINT").args)
    copied = {
        os.path.join(dest, Path(src).name) if dest.endswith("/") else dest: src
        for flags, sources, dest in _copies(stages.runtime)
        if "from" not in flags
        for src in sources
    }
    assert copied.get(entrypoint[0]) == "docker/entrypoint.sh"
    # missing_weights.py is found next to the entrypoint (dirname "$0").
    assert copied.get(str(Path(entrypoint[0]).with_name("missing_weights.py"))) == "docker/missing_weights.py"
    assert os.access(ENTRYPOINT, os.X_OK), "docker/entrypoint.sh must be executable"


def test_entrypoint_is_valid_sh_and_runs_other_commands_as_given():
    subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=True)
    result = subprocess.run(
        [str(ENTRYPOINT), "attnzoo", "--help"], env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout and "fetch" in result.stdout


# --------------------------------------------------------------------------- .dockerignore


@pytest.fixture(scope="module")
def dockerignore() -> DockerIgnore:
    return DockerIgnore()


@pytest.fixture(scope="module")
def excluded(dockerignore):
    return dockerignore.excluded


@pytest.mark.parametrize(
    "path",
    [
        "weights/faster_rcnn_r50_fpn_attention_0010_1x_coco_20200130-7cb0c14d.pth",
        "results/table.json",
        ".venv/bin/python",
        "venv/bin/python",
        ".git/HEAD",
        "tests/deploy/conftest.py",
        "model_zoo/__pycache__/registry.cpython-312.pyc",
        "app/api/routes/__pycache__/detect.cpython-312.pyc",
        "attnzoo.egg-info/PKG-INFO",
        ".pytest_cache/v/cache/nodeids",
        "coco/val2017/000000000139.jpg",
        "model_zoo/stray-checkpoint.pth",
    ],
)
def test_dockerignore_keeps_out(excluded, path):
    assert excluded(path)


def test_dockerignore_lets_in_everything_the_build_uses(stages, excluded):
    copied = [
        src for stage in stages.by_name.values() for flags, srcs, _ in _copies(stage) if "from" not in flags for src in srcs
    ]
    assert copied
    # The project layer bind-mounts the context and runs `pip install /src`: what pip reads
    # (pyproject.toml, its readme, the packages and their data) must be in the context.
    installed = ["pyproject.toml", PYPROJECT["project"]["readme"]]
    installed += [package.rstrip("*") for package in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]
    for source in copied + installed:
        path = REPO_ROOT / source
        assert path.exists(), f"the build uses {source}, which does not exist"
        files = (
            [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        )
        for file in files:
            assert not excluded(file.relative_to(REPO_ROOT).as_posix()), f"{file} is used but .dockerignore drops it"
    for package, patterns in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        for pattern in patterns:
            for file in (REPO_ROOT / package).glob(pattern):
                if file.is_file():
                    assert not excluded(file.relative_to(REPO_ROOT).as_posix())


def test_build_context_stays_small(dockerignore):
    """What `docker build .` would send from this checkout: well under the size of one checkpoint."""
    total = 0
    for root, dirs, files in os.walk(REPO_ROOT):
        base = Path(root).relative_to(REPO_ROOT)
        dirs[:] = [d for d in dirs if not dockerignore.prunable((base / d).as_posix())]
        total += sum((Path(root) / f).stat().st_size for f in files if not dockerignore.excluded((base / f).as_posix()))
    assert total < 20 * 2**20, f"build context of {total / 2**20:.1f} MiB"
