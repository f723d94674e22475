"""The registry: the bundled metafile against the published table, name resolution, naming
consistency, user metafiles (env var, --metafile, relative architecture files), and errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from model_zoo.cli import main
from model_zoo.engine.spec import ArchSpec
from model_zoo.errors import MetafileError, UnknownVariantError
from model_zoo.registry import BUNDLED_ARCHITECTURES, BUNDLED_METAFILE, METAFILE_ENV, load_registry
from model_zoo.weights import hash_prefix_of

# The README table of mmdet's configs/empirical_attention: alias -> (full name, attention, DCN,
# box AP, fps, training memory GB).
PUBLISHED = {
    "attn1111": ("faster-rcnn_r50_fpn_attention_1111_1x_coco", "1111", False, 40.0, 13.8, 8.0),
    "attn0010": ("faster-rcnn_r50_fpn_attention_0010_1x_coco", "0010", False, 39.1, 18.4, 4.2),
    "attn1111-dcn": ("faster-rcnn_r50_fpn_attention_1111_dcn_1x_coco", "1111", True, 42.1, 12.7, 8.0),
    "attn0010-dcn": ("faster-rcnn_r50_fpn_attention_0010_dcn_1x_coco", "0010", True, 42.0, 17.1, 4.2),
}


@pytest.fixture(autouse=True)
def _no_user_metafile(monkeypatch):
    monkeypatch.delenv(METAFILE_ENV, raising=False)


@pytest.fixture(scope="module")
def bundled():
    return load_registry(BUNDLED_METAFILE)


def test_bundled_metafile_holds_exactly_the_four_variants(bundled):
    assert bundled.aliases == list(PUBLISHED)
    assert load_registry().source == BUNDLED_METAFILE  # the default without ATTNZOO_METAFILE


@pytest.mark.parametrize("alias", list(PUBLISHED))
def test_bundled_entry_matches_the_published_table(bundled, alias):
    name, attention, dcn, box_ap, fps, memory = PUBLISHED[alias]
    entry = bundled.resolve(alias)
    assert entry.name == name
    assert (entry.arch.attention_type, entry.arch.with_dcn) == (attention, dcn)
    assert entry.published.box_ap == box_ap
    assert entry.published.fps == fps
    assert entry.published.train_memory_gb == memory
    assert entry.published.hardware == "V100" and entry.published.batch_size == 1
    assert entry.weights_url.startswith("https://download.openmmlab.com/mmdetection/v2.0/empirical_attention/")
    assert entry.training_resources == "8x V100 GPUs"


@pytest.mark.parametrize("alias", list(PUBLISHED))
def test_alias_and_full_name_resolve_to_the_same_entry(bundled, alias):
    assert bundled.resolve(PUBLISHED[alias][0]) is bundled.resolve(alias)


def test_unknown_name_lists_the_valid_ones(bundled):
    with pytest.raises(UnknownVariantError) as failure:
        bundled.resolve("attn1010")
    assert str(failure.value) == "unknown variant 'attn1010'; valid variants: " + ", ".join(PUBLISHED)


@pytest.mark.parametrize("alias", list(PUBLISHED))
def test_naming_consistency(bundled, alias):
    """Every entry has an ArchSpec, a weights file named <stem>_<date>-<8 hex>.pth, and a short alias."""
    entry = bundled.resolve(alias)
    assert isinstance(entry.arch, ArchSpec)
    assert re.fullmatch(r"attn(1111|0010)(-dcn)?", entry.alias)
    assert entry.config == entry.alias  # the bundled architecture of the same name
    assert re.fullmatch(r"[a-z0-9_]+_\d{8}-[0-9a-f]{8}\.pth", entry.weights_filename)
    assert hash_prefix_of(entry.weights_filename) == entry.weights_filename[-12:-4]
    # The file name is the full name in the old (2.x) underscore spelling.
    assert entry.weights_filename.startswith(entry.name.replace("-", "_") + "_")
    assert ("dcn" in entry.alias) == entry.arch.with_dcn
    assert entry.arch.attention_type in entry.alias


def test_user_metafile_from_the_environment(monkeypatch, make_metafile):
    path = make_metafile({"mine": "http://example.invalid/w/mine-0123abcd.pth"}, config="attn1111-dcn")
    monkeypatch.setenv(METAFILE_ENV, str(path))

    registry = load_registry()

    assert registry.source == path and registry.aliases == ["mine"]
    entry = registry.resolve("test_mine_model")
    assert entry.alias == "mine" and entry.arch == load_registry(BUNDLED_METAFILE).resolve("attn1111-dcn").arch
    assert (entry.published.box_ap, entry.published.fps, entry.published.train_memory_gb) == (12.5, 20.0, 1.5)
    assert entry.weights_filename == "mine-0123abcd.pth"


def _write_relative_architecture(root: Path) -> None:
    """archs/mine.yml extends archs/base.yml (a copy of the bundled Faster R-CNN base) via _base_."""
    (root / "archs").mkdir()
    base = (BUNDLED_ARCHITECTURES / "_base_faster_rcnn_r50_fpn.yml").read_text()
    (root / "archs" / "base.yml").write_text(base)
    mine = {
        "_base_": "base.yml",
        "backbone": {
            "dcn_stages": [3, 4],
            "attention": {"type": "0010", "stages": [4], "num_heads": 8, "kv_stride": 2, "position_magnitude": 1},
        },
        "roi": {"score_thr": 0.3},
    }
    (root / "archs" / "mine.yml").write_text(yaml.safe_dump(mine))


def test_metafile_flag_with_a_relative_architecture_file(tmp_path, make_metafile, capsys):
    _write_relative_architecture(tmp_path)
    metafile = make_metafile({"mine": None}, config="archs/mine.yml")

    entry = load_registry(metafile).resolve("mine")
    assert entry.arch.backbone.dcn_stages == (3, 4)
    assert entry.arch.backbone.attention.stages == (4,)
    assert entry.arch.roi.score_thr == 0.3
    assert entry.arch.roi.nms_iou == 0.5  # inherited from base.yml

    assert main(["models", "--metafile", str(metafile), "--weights-dir", str(tmp_path / "w"), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["alias"], row["attention"], row["dcn"]) == ("mine", "0010", True)
    assert (row["weights_url"], row["weights_present"], row["weights_verified"]) == (None, False, None)


def test_unparsable_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yml"
    path.write_text("Models:\n  - Name: [unclosed\n")
    with pytest.raises(MetafileError, match=re.escape(f"{path}: not valid YAML")):
        load_registry(path)


def test_unknown_architecture_names_entry_and_field(make_metafile):
    path = make_metafile({"mine": None}, config="attn9999")
    with pytest.raises(MetafileError) as failure:
        load_registry(path)
    assert (failure.value.entry, failure.value.field) == ("test_mine_model", "Config")
    message = str(failure.value)
    assert "entry 'test_mine_model', field 'Config'" in message
    assert "unknown architecture 'attn9999'" in message and "attn0010-dcn" in message


def test_bad_number_names_entry_and_field(make_metafile):
    path = make_metafile({"mine": None})
    raw = yaml.safe_load(path.read_text())
    raw["Models"][0]["Results"][0]["Metrics"]["box AP"] = "forty"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(MetafileError, match="entry 'test_mine_model', field 'Results.Metrics.box AP'.*'forty'"):
        load_registry(path)


def test_bad_architecture_field_names_entry_and_dotted_field(tmp_path, make_metafile):
    _write_relative_architecture(tmp_path)
    mine = yaml.safe_load((tmp_path / "archs" / "mine.yml").read_text())
    mine["backbone"]["attention"]["type"] = "12"
    (tmp_path / "archs" / "mine.yml").write_text(yaml.safe_dump(mine))
    with pytest.raises(MetafileError) as failure:
        load_registry(make_metafile({"mine": None}, config="archs/mine.yml"))
    assert failure.value.field == "Config"
    assert "arch.backbone.attention.type" in str(failure.value)


def test_bad_metafile_is_one_cli_line_without_traceback(tmp_path, capsys):
    path = tmp_path / "broken.yml"
    path.write_text("Models: 3\n")
    assert main(["models", "--metafile", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"attnzoo models: error: {path}, field 'Models'")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_models_table_lists_published_figures(tmp_path, capsys):
    assert main(["models", "--weights-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ALIAS", "BOX", "AP", "FPS", "TRAIN", "MEM", "GB", "HARDWARE", "WEIGHTS"]
    for alias, (name, _, _, box_ap, fps, memory) in PUBLISHED.items():
        (line,) = [line for line in lines if f" {alias} " in line]
        assert line.split() == [name, alias, f"{box_ap:.1f}", f"{fps:.1f}", f"{memory:.1f}", "V100", "missing"]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda arch: arch["backbone"].update(depth="fifty"), "arch.backbone.depth", "input should be a valid integer, got 'fifty'"),
        (lambda arch: arch["backbone"].update(depth=True), "arch.backbone.depth", "input should be a valid integer, got True"),
        (lambda arch: arch["rpn"].update(nms_iou="0.7"), "arch.rpn.nms_iou", "input should be a valid number, got '0.7'"),
        (lambda arch: arch["anchors"].update(strides=[4, 8, "x", 32, 64]), "arch.anchors.strides[2]", "input should be a valid integer, got 'x'"),
        (lambda arch: arch["roi"].pop("nms_iou"), "arch.roi.nms_iou", "missing"),
        (
            lambda arch: arch["backbone"]["attention"].update(heads=8),
            "arch.backbone.attention.heads",
            "unknown key (valid: type, stages, num_heads, kv_stride, position_magnitude)",
        ),
    ],
)
def test_wrongly_typed_architecture_field_is_named_by_its_dotted_path(tmp_path, make_metafile, change, field, message):
    _write_relative_architecture(tmp_path)
    base = yaml.safe_load((tmp_path / "archs" / "base.yml").read_text())
    base["backbone"]["attention"] = {"type": "0010", "stages": [4], "num_heads": 8, "kv_stride": 2, "position_magnitude": 1}
    change(base)
    (tmp_path / "archs" / "mine.yml").write_text(yaml.safe_dump(base))
    with pytest.raises(MetafileError) as failure:
        load_registry(make_metafile({"mine": None}, config="archs/mine.yml"))
    assert failure.value.field == "Config"
    assert f"{field}: {message}" in str(failure.value)
    assert "\n" not in str(failure.value)


def test_integers_in_float_fields_and_lists_in_tuple_fields_are_accepted(tmp_path, make_metafile):
    _write_relative_architecture(tmp_path)  # position_magnitude: 1, finest_scale: 56 (ints for floats)
    arch = load_registry(make_metafile({"mine": None}, config="archs/mine.yml")).resolve("mine").arch
    assert arch.backbone.attention.position_magnitude == 1.0 and isinstance(arch.backbone.attention.position_magnitude, float)
    assert arch.anchors.strides == (4, 8, 16, 32, 64)


def test_resolve_many_keeps_order_drops_repeats_and_defaults_to_every_entry(bundled):
    picked = bundled.resolve_many(["attn0010-dcn", PUBLISHED["attn1111"][0], "attn0010-dcn", "attn1111"])
    assert [entry.alias for entry in picked] == ["attn0010-dcn", "attn1111"]
    assert [entry.alias for entry in bundled.resolve_many(None)] == list(PUBLISHED)
    assert bundled.resolve_many([]) == []
    with pytest.raises(UnknownVariantError, match="unknown variant 'nope'; valid variants: attn1111, attn0010"):
        bundled.resolve_many(["attn1111", "nope"])
