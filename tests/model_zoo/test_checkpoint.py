"""Checkpoint loading: the layouts we accept and the clear errors for everything else.

Real files on disk: full-size synthetic checkpoints (model_zoo.synth) and files derived from
them (renamed, truncated, a key removed or added, a tensor of the wrong shape, a pickle that
would run code). The CLI case runs ``attnzoo predict`` as a subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from model_zoo.checkpoint import load_checkpoint, read_checkpoint
from model_zoo.engine.detector import build_detector
from model_zoo.errors import CheckpointError
from model_zoo.predictor import load_detector
from model_zoo.registry import BUNDLED_METAFILE, load_registry
from model_zoo.synth import synthetic_checkpoint, write_synthetic_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE = REPO_ROOT / "tests" / "fixtures" / "images" / "chelsea_small.png"
PLAIN, DCN = "attn0010", "attn0010-dcn"  # the two smallest variants; DCN for conv_offset names


@pytest.fixture(scope="module")
def registry():
    return load_registry(BUNDLED_METAFILE)


@pytest.fixture(scope="module")
def files(tmp_path_factory, registry) -> dict[str, Path]:
    """A synthetic ``attn0010`` checkpoint (zip serialization) and an ``attn0010-dcn`` one in
    PyTorch's legacy (pre-1.6, non-zip) serialization, as 2020 files may be."""
    folder = tmp_path_factory.mktemp("checkpoints")
    legacy = folder / f"{DCN}.pth"
    torch.save(synthetic_checkpoint(registry.resolve(DCN).arch, 6, variant=DCN), legacy, _use_new_zipfile_serialization=False)
    return {PLAIN: write_synthetic_checkpoint(registry.resolve(PLAIN), folder / f"{PLAIN}.pth", seed=5), DCN: legacy}


def raw_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def load(registry, variant: str, path: Path) -> tuple[torch.nn.Module, dict]:
    """Build ``variant``'s model and load ``path`` into it with the registry (for sniffing)."""
    model = build_detector(registry.resolve(variant).arch)
    meta = load_checkpoint(model, path, entry=registry.resolve(variant), registry=registry)
    return model, meta


def assert_holds(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert set(loaded) == set(state_dict)
    different = [k for k in state_dict if not torch.equal(loaded[k], state_dict[k])]
    assert not different, f"tensors not loaded: {different[:5]}"


def save(path: Path, payload) -> Path:
    torch.save(payload, path)
    return path


# --- accepted layouts -----------------------------------------------------------------------------


def test_loads_a_good_checkpoint_into_every_tensor(files, registry):
    raw = raw_checkpoint(files[PLAIN])
    assert set(raw) == {"meta", "state_dict"}
    model, _ = load(registry, PLAIN, files[PLAIN])
    assert_holds(model, raw["state_dict"])


def test_loads_a_good_checkpoint_through_the_public_api(files, registry):
    detector = load_detector(PLAIN, files[PLAIN], registry=registry, verify_hash=False)
    assert detector.weights_path == files[PLAIN]
    assert len(detector.sha256) == 64
    result = detector.predict(IMAGE)
    assert (result.width, result.height) == (200, 133)


def test_returns_the_files_meta(files, registry):
    _, meta = load(registry, PLAIN, files[PLAIN])
    assert meta["seed"] == 5 and meta["CLASSES"][0] == "person" and len(meta["CLASSES"]) == 80


def test_legacy_serialization_is_accepted(files, registry):
    assert not zipfile.is_zipfile(files[DCN]), "fixture should use the pre-1.6 (non-zip) format"
    model, _ = load(registry, DCN, files[DCN])
    assert_holds(model, raw_checkpoint(files[DCN])["state_dict"])


def test_legacy_conv2_offset_names_are_accepted(files, registry, tmp_path):
    state = raw_checkpoint(files[DCN])["state_dict"]
    legacy = OrderedDict((k.replace(".conv2.conv_offset.", ".conv2_offset."), v) for k, v in state.items())
    renamed = [k for k in legacy if ".conv2_offset." in k]
    assert len(renamed) == 26  # 13 DCN convs (layer2-4), weight + bias
    model, _ = load(registry, DCN, save(tmp_path / "legacy_names.pth", {"meta": {}, "state_dict": legacy}))
    assert_holds(model, state)


def test_bare_state_dict_is_accepted(files, registry, tmp_path):
    state = raw_checkpoint(files[PLAIN])["state_dict"]
    model, meta = load(registry, PLAIN, save(tmp_path / "bare.pth", state))
    assert meta == {}
    assert_holds(model, state)


def test_module_prefix_of_data_parallel_is_stripped(files, registry, tmp_path):
    state = raw_checkpoint(files[PLAIN])["state_dict"]
    wrapped = OrderedDict((f"module.{k}", v) for k, v in state.items())
    model, _ = load(registry, PLAIN, save(tmp_path / "wrapped.pth", {"state_dict": wrapped}))
    assert_holds(model, state)


# --- refused files: each error names the expected variant and the offending keys --------------


def test_file_of_another_variant_names_expected_offending_keys_and_look_alike(files, registry):
    with pytest.raises(CheckpointError) as info:
        load(registry, PLAIN, files[DCN])
    message = str(info.value)
    assert "does not fit variant 'attn0010'" in message
    assert "26 unexpected keys (first: backbone.layer2.0.conv2.conv_offset.weight" in message
    assert "looks like a 'attn0010-dcn' checkpoint" in message


def test_file_without_attention_terms_names_missing_keys(files, registry):
    with pytest.raises(CheckpointError) as info:
        load(registry, "attn1111", files[PLAIN])
    message = str(info.value)
    assert "does not fit variant 'attn1111'" in message
    assert re.search(r"\d+ missing keys \(first: backbone\.layer3\.0\.gen_attention_block\.geom_bias", message)
    assert "looks like a 'attn0010' checkpoint" in message


@pytest.mark.parametrize("variant", [PLAIN, DCN])  # zip and legacy serialization
def test_truncated_file(files, registry, tmp_path, variant):
    data = files[variant].read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"variant 'attn0010.*cannot be read as a PyTorch checkpoint \(truncated or corrupt\?\)"):
        load(registry, variant, truncated)


def test_missing_key(files, registry, tmp_path):
    state = raw_checkpoint(files[PLAIN])["state_dict"]
    del state["rpn_head.rpn_cls.bias"]
    with pytest.raises(CheckpointError) as info:
        load(registry, PLAIN, save(tmp_path / "missing.pth", {"state_dict": state}))
    assert "does not fit variant 'attn0010'; 1 missing keys (first: rpn_head.rpn_cls.bias)" in str(info.value)
    assert "looks like" not in str(info.value)


def test_extra_key(files, registry, tmp_path):
    state = raw_checkpoint(files[PLAIN])["state_dict"]
    state["roi_head.bbox_head.fc_extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"'attn0010'; 1 unexpected keys \(first: roi_head\.bbox_head\.fc_extra\.weight\)"):
        load(registry, PLAIN, save(tmp_path / "extra.pth", {"state_dict": state}))


def test_wrong_shape(files, registry, tmp_path):
    state = raw_checkpoint(files[PLAIN])["state_dict"]
    state["roi_head.bbox_head.fc_cls.weight"] = torch.zeros(91, 1024)  # a 90-class head
    with pytest.raises(CheckpointError) as info:
        load(registry, PLAIN, save(tmp_path / "shape.pth", {"state_dict": state}))
    assert "1 shape mismatches (roi_head.bbox_head.fc_cls.weight: file [91, 1024] vs model [81, 1024])" in str(info.value)


def test_not_a_checkpoint_mapping(registry, tmp_path):
    with pytest.raises(CheckpointError, match=r"has no 'state_dict' \(found: optimizer"):
        load(registry, PLAIN, save(tmp_path / "optimizer.pth", {"optimizer": {"lr": 0.02}}))


class _MakesDirectory:
    """Pickles as a call to ``os.mkdir(path)``: any loader that runs pickled globals creates it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_pickle_with_a_code_global_is_refused_without_running_it(registry, tmp_path):
    marker = tmp_path / "payload_ran"
    path = save(tmp_path / "evil.pth", {"meta": {"hook": _MakesDirectory(str(marker))}, "state_dict": {"w": torch.zeros(1)}})
    with pytest.raises(CheckpointError, match="not a plain-tensor checkpoint"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="variant 'attn0010'.*refused by the safe loader"):
        load(registry, PLAIN, path)
    assert not marker.exists(), "the pickled call ran"
    # The payload is real: full unpickling would have run it.
    torch.load(path, weights_only=False)
    assert marker.is_dir()


# --- the CLI: one line on stderr, non-zero exit, no traceback -------------------------------------


def attnzoo_command() -> list[str]:
    script = Path(sys.executable).with_name("attnzoo")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "model_zoo"]


@pytest.mark.parametrize("case", ["truncated", "other_variant", "text_file", "code_global"])
def test_cli_predict_with_a_bad_checkpoint_fails_with_one_line(files, tmp_path, case):
    if case == "truncated":
        bad = tmp_path / "truncated.pth"
        bad.write_bytes(files[PLAIN].read_bytes()[:100_000])
        expected = "cannot be read as a PyTorch checkpoint"
    elif case == "other_variant":
        bad, expected = files[DCN], "looks like a 'attn0010-dcn' checkpoint"
    elif case == "text_file":
        bad = tmp_path / "notes.pth"
        bad.write_text("not a checkpoint\n")
        expected = "checkpoint"
    else:
        marker = tmp_path / "payload_ran"
        bad = save(tmp_path / "evil.pth", {"meta": {"hook": _MakesDirectory(str(marker))}, "state_dict": {"w": torch.zeros(1)}})
        expected = "refused by the safe loader"
    completed = subprocess.run(
        [*attnzoo_command(), "predict", "--variant", PLAIN, "--checkpoint", str(bad), str(IMAGE)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode != 0
    assert completed.stdout == ""
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("attnzoo predict: error: cannot load a checkpoint for variant 'attn0010'") or lines[0].startswith(
        "attnzoo predict: error: checkpoint"
    ), lines[0]
    assert expected in lines[0]
    assert not (tmp_path / "payload_ran").exists()
