"""docker/smoke/synthetic_zoo.py: the zoo the smoke mounts into the container as /weights."""

from __future__ import annotations

import dataclasses

from deploy_support import TEST_VARIANT, write_metafile
from synthetic_zoo import TEST_SCALE, UNREACHABLE


def test_the_zoo_resolves_wherever_it_is_mounted(tmp_path):
    """Written in one place and read from another (as in a container): every path is relative."""
    from model_zoo.registry import load_registry

    url = f"{UNREACHABLE}/faster_rcnn_r50_fpn_attention_0010_1x_coco_20200130-12345678.pth"
    write_metafile(tmp_path / "written", {TEST_VARIANT: url})
    mounted = (tmp_path / "written").rename(tmp_path / "mounted")
    entry = load_registry(mounted / "metafile.yml").resolve(TEST_VARIANT)
    bundled = load_registry().resolve(TEST_VARIANT)
    assert entry.weights_url == url
    assert entry.arch.preprocess.scale == TEST_SCALE
    # The bundled architecture, only the test-time scale changed.
    same_preprocess = dataclasses.replace(entry.arch.preprocess, scale=bundled.arch.preprocess.scale)
    assert dataclasses.replace(entry.arch, preprocess=same_preprocess) == bundled.arch
