"""Demo stand-ins on disk (made once, cached under names no official file has, replaced when
damaged, loadable) and the official / synthetic / custom classification of weights files."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from model_zoo.cli import main
from model_zoo.demo_weights import (
    demo_weights_dir,
    ensure_demo_weights,
    weights_or_stand_in,
    weights_source,
)
from model_zoo.errors import WeightsMissingError
from model_zoo.predictor import load_detector
from model_zoo.registry import BUNDLED_METAFILE, load_registry, weights_path_for
from model_zoo.weights import hash_prefix_of, sha256_file

IMAGE = Path(__file__).resolve().parents[1] / "fixtures" / "images" / "chelsea_small.png"


@pytest.fixture(scope="module")
def small_entry(synthetic_zoo):
    return load_registry(synthetic_zoo.metafile).resolve("attn0010")


@pytest.fixture(scope="module")
def stand_in(small_entry, tmp_path_factory) -> Path:
    """The stand-in, made once for the module in a fresh weights dir."""
    return ensure_demo_weights(small_entry, tmp_path_factory.mktemp("weights"))


def test_stand_in_is_cached_in_the_demo_folder_under_a_synthetic_name(small_entry, stand_in):
    official_names = {entry.weights_filename for entry in load_registry(BUNDLED_METAFILE)}
    assert stand_in.parent == demo_weights_dir(stand_in.parent.parent)
    assert stand_in.name == f"attn0010-synthetic-{sha256_file(stand_in)[:8]}.pth"
    assert stand_in.name not in official_names and hash_prefix_of(stand_in) == sha256_file(stand_in)[:8]

    modified = stand_in.stat().st_mtime_ns
    assert ensure_demo_weights(small_entry, stand_in.parent.parent) == stand_in  # made once
    assert stand_in.stat().st_mtime_ns == modified
    assert sorted(p.name for p in stand_in.parent.iterdir() if p.name != ".locks") == [stand_in.name]


def test_stand_in_loads_and_detects(small_entry, stand_in, synthetic_zoo):
    detector = load_detector("attn0010", stand_in, device="cpu", registry=load_registry(synthetic_zoo.metafile))
    assert detector.predict(IMAGE).detections
    assert weights_source(small_entry, stand_in, sha256=detector.sha256) == "synthetic"


def test_damaged_stand_in_is_made_again(small_entry, stand_in, tmp_path):
    weights_dir = tmp_path / "weights"
    shutil.copytree(stand_in.parent, demo_weights_dir(weights_dir))
    copy = demo_weights_dir(weights_dir) / stand_in.name
    with open(copy, "r+b") as handle:  # flip one byte: the name's hash prefix no longer matches
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))

    remade = ensure_demo_weights(small_entry, weights_dir)

    assert remade == copy  # the same deterministic content, so the same name
    assert sha256_file(remade) == sha256_file(stand_in)


def test_weights_or_stand_in(small_entry, synthetic_zoo, stand_in, tmp_path):
    assert weights_or_stand_in(small_entry, synthetic_zoo.weights_dir, demo=True) == synthetic_zoo.checkpoint
    assert weights_or_stand_in(small_entry, stand_in.parent.parent, demo=True) == stand_in  # no official file there
    with pytest.raises(WeightsMissingError, match="run `attnzoo fetch attn0010`, or download"):
        weights_or_stand_in(small_entry, stand_in.parent.parent, demo=False)


def test_weights_source_of_official_custom_and_misplaced_files(small_entry, stand_in, tmp_path):
    bundled = load_registry(BUNDLED_METAFILE).resolve("attn0010")
    official = weights_path_for(bundled, tmp_path)
    prefix = hash_prefix_of(official)
    # the official file's digest is what the loader computed; no file here has that sha256
    assert weights_source(bundled, official, sha256=prefix + "0" * 56) == "official"

    official.write_bytes(b"some other content under the official name")
    assert hashlib.sha256(official.read_bytes()).hexdigest()[:8] != prefix
    assert weights_source(bundled, official) == "custom"  # e.g. loaded with --no-verify

    # a user metafile's variant (not in the bundled metafile), even with its own hash right
    assert weights_source(small_entry, stand_in.with_name("x.pth"), sha256=sha256_file(stand_in)) == "custom"
    # the stand-in's name outside the demo folder is not ours
    moved = tmp_path / stand_in.name
    os.link(stand_in, moved)
    assert weights_source(small_entry, moved) == "custom"
    # another variant's stand-in
    assert weights_source(load_registry(BUNDLED_METAFILE).resolve("attn1111"), stand_in) == "custom"


def test_synth_weights_without_out_makes_the_demo_stand_in(synthetic_zoo, stand_in, capsys):
    weights_dir = stand_in.parent.parent
    assert main(["synth-weights", "--variant", "attn0010", "--metafile", str(synthetic_zoo.metafile),
                 "--weights-dir", str(weights_dir)]) == 0  # fmt: skip
    assert capsys.readouterr().out == (
        f"demo stand-in {stand_in} (variant attn0010, seed 0, sha256 {sha256_file(stand_in)})\n"
    )
    assert main(["synth-weights", "--variant", "attn0010", "--seed", "3", "--weights-dir", str(weights_dir)]) == 2
    assert capsys.readouterr().err == (
        "attnzoo synth-weights: error: --seed 3 needs --out: the demo stand-in always uses seed 0\n"
    )
