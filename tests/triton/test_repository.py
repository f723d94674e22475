"""``attnzoo triton-repo``: the repository it writes (read back with Triton's own ``ModelConfig``
message and attnzoo's registry), its options, and its one-line refusals."""

from __future__ import annotations

import json
import sysconfig
from importlib import resources
from pathlib import Path

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from app.triton.model_config import ModelParameters
from model_zoo import load_registry
from model_zoo.cli import main
from model_zoo.weights import sha256_file
from tests.triton.conftest import DCN_VARIANT, PLAIN_VARIANT, VARIANTS

MISSING_VARIANT = "attn1111"  # no checkpoint in the Triton tests' zoo


def _config(model_folder: Path) -> dict:
    """config.pbtxt parsed by protobuf as Triton's ModelConfig (an unknown field fails), as a dict."""
    message = text_format.Parse((model_folder / "config.pbtxt").read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _write(zoo, out: Path, *args: str, weights_dir: Path | None = None) -> int:
    """``attnzoo triton-repo`` in this process; its exit status (a usage mistake's included)."""
    try:
        return main([
            "triton-repo", "--metafile", str(zoo.metafile), "--weights-dir", str(weights_dir or zoo.weights_dir), "--out", str(out), *args,
        ])  # fmt: skip
    except SystemExit as exit_:
        return int(str(exit_.code))


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_model_folder_holds_its_config_code_environment_architecture_and_checkpoint(repository, triton_zoo, zoo_registry, variant):
    folder = repository / variant
    assert sorted(p.name for p in repository.iterdir()) == sorted(VARIANTS)
    entry = zoo_registry.resolve(variant)
    written = {p.name for p in (folder / "1").iterdir()} - {"__pycache__"}  # once tritonserver imported model.py
    assert written == {"model.py", "environment.json", "metafile.yml", "architecture.yml", entry.weights_filename}
    config = _config(folder)
    assert (config["name"], config["backend"]) == (variant, "python")
    parameters = ModelParameters.from_config({key: value["string_value"] for key, value in config["parameters"].items()})
    assert (parameters.variant, parameters.full_name, parameters.weights_file) == (variant, entry.name, entry.weights_filename)
    checkpoint = folder / "1" / entry.weights_filename
    assert not checkpoint.is_symlink() and sha256_file(checkpoint) == parameters.sha256 == sha256_file(triton_zoo.weights_dir / checkpoint.name)
    assert (folder / "1" / "model.py").read_bytes() == resources.files("app.triton").joinpath("stub_model.py").read_bytes()
    # The variant as the model will load it: its own metafile, its architecture merged into one file.
    loaded = load_registry(folder / "1" / "metafile.yml").resolve(variant)
    assert (loaded.name, loaded.alias, loaded.arch, loaded.weights_filename) == (entry.name, entry.alias, entry.arch, entry.weights_filename)


def test_the_environment_recorded_is_the_python_that_wrote_the_repository(repository):
    """The repository was written by .venv/bin/attnzoo: its site-packages, where attnzoo is installed."""
    recorded = json.loads((repository / PLAIN_VARIANT / "1" / "environment.json").read_text())
    assert recorded["python"] == "%d.%d" % tuple(map(int, sysconfig.get_python_version().split(".")))
    assert recorded["sys_path"] == [sysconfig.get_paths()["purelib"]]
    assert any(Path(recorded["sys_path"][0]).glob("__editable__*attnzoo*.pth")) or (Path(recorded["sys_path"][0]) / "app").is_dir()


def test_options_set_device_instances_batch_size_and_kernels(triton_zoo, tmp_path):
    out = tmp_path / "repository"
    options = ["--instances", "2", "--max-batch-size", "8", "--weights", "link", "--cpu-kernels", "portable"]
    assert _write(triton_zoo, out, "--variants", PLAIN_VARIANT, *options) == 0
    config = _config(out / PLAIN_VARIANT)
    assert config["instance_group"] == [{"kind": "KIND_GPU", "count": 2}]  # GPU unless --device cpu
    assert config["max_batch_size"] == 8
    assert config["parameters"]["cpu_kernels"] == {"string_value": "portable"}
    assert (out / PLAIN_VARIANT / "1" / config["parameters"]["weights_file"]["string_value"]).is_symlink()


def _wrong_checkpoint(zoo, zoo_registry, tmp_path: Path) -> Path:
    """A weights dir whose file for the missing variant has its expected name but other bytes."""
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    (weights_dir / zoo_registry.resolve(MISSING_VARIANT).weights_filename).write_bytes(b"not this checkpoint" * 100)
    return weights_dir


@pytest.mark.parametrize(
    "args, message",
    [
        (["--variants", "bogus"], "unknown variant 'bogus'"),
        (["--variants", MISSING_VARIANT], f"checkpoint for '{MISSING_VARIANT}' not found"),
        (["--variants", DCN_VARIANT, "--instances", "0"], "--instances: invalid value '0'"),
        (["--variants", DCN_VARIANT, "--device", "tpu"], "--device: invalid choice: 'tpu'"),
    ],
)
def test_mistakes_are_one_line_errors_and_write_nothing(triton_zoo, tmp_path, capsys, args, message):
    out = tmp_path / "repository"
    assert _write(triton_zoo, out, *args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("attnzoo triton-repo: error:") and message in line, line
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_checkpoint_whose_hash_does_not_match_its_name_is_refused(triton_zoo, zoo_registry, tmp_path, capsys):
    weights_dir = _wrong_checkpoint(triton_zoo, zoo_registry, tmp_path)
    assert _write(triton_zoo, tmp_path / "repository", "--variants", MISSING_VARIANT, weights_dir=weights_dir) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "does not start with '12345678' from its name" in line
    assert [p.name for p in tmp_path.iterdir()] == ["weights"]


def test_an_output_folder_that_is_not_empty_is_refused(triton_zoo, tmp_path, capsys):
    out = tmp_path / "repository"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _write(triton_zoo, out, "--variants", PLAIN_VARIANT, "--weights", "link") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "already exists and is not an empty folder" in line
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

