"""A zoo of synthetic weights at a small test scale, laid out to be mounted as /weights.

    <folder>/metafile.yml            the bundled metafile reduced to the given variants
    <folder>/arch/*.yml              the bundled architectures, plus <variant>-small.yml for each
    <folder>/<stem>-<sha8>.pth       checkpoints, named like the published files (hash prefix)

Every path in it is relative, so the same folder works on the host and mounted in a container
(``ATTNZOO_METAFILE=/weights/metafile.yml``, ``ATTNZOO_WEIGHTS_DIR=/weights``). Used by
scripts/container-smoke and by tests/deploy.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Mapping

import yaml

TEST_VARIANT = "attn0010"
# Small test-time scale (long side, short side) so that a CPU forward takes well under a second.
TEST_SCALE = (320, 192)
UNREACHABLE = "http://127.0.0.1:9"  # a weights URL that is never fetched (the file is in place)


def hash_named(raw: Path, variant: str) -> Path:
    """Rename the checkpoint ``raw`` to the published file name of ``variant`` with ``raw``'s own
    sha256 prefix (``<stem>-<first 8 hex>.pth``, in the same folder), so the hash check holds."""
    from model_zoo.registry import load_registry
    from model_zoo.weights import sha256_file

    stem = Path(load_registry().resolve(variant).weights_filename).stem.rsplit("-", 1)[0]
    named = raw.with_name(f"{stem}-{sha256_file(raw)[:8]}.pth")
    raw.rename(named)
    return named


def write_metafile(folder: Path, weights_urls: Mapping[str, str], scale: tuple[int, int] = TEST_SCALE) -> Path:
    """``folder/metafile.yml`` with the bundled entries of the variants in ``weights_urls``
    ({alias: Weights URL}), each at the test-time ``scale``; returns its path."""
    from model_zoo.registry import BUNDLED_ARCHITECTURES, BUNDLED_METAFILE

    arch_dir = folder / "arch"
    arch_dir.mkdir(parents=True, exist_ok=True)
    for bundled in BUNDLED_ARCHITECTURES.glob("*.yml"):
        shutil.copyfile(bundled, arch_dir / bundled.name)
    metafile = yaml.safe_load(BUNDLED_METAFILE.read_text(encoding="utf-8"))
    models = {model["Alias"]: model for model in metafile["Models"]}
    unknown = set(weights_urls) - set(models)
    if unknown:
        raise ValueError(f"not bundled variants: {sorted(unknown)} (bundled: {sorted(models)})")
    metafile["Models"] = []
    for alias, url in weights_urls.items():
        small = arch_dir / f"{alias}-small.yml"
        small.write_text(
            yaml.safe_dump({"_base_": f"{models[alias]['Config']}.yml", "preprocess": {"scale": list(scale)}}),
            encoding="utf-8",
        )
        metafile["Models"].append({**models[alias], "Config": f"arch/{small.name}", "Weights": url})
    path = folder / "metafile.yml"
    path.write_text(yaml.safe_dump(metafile, sort_keys=False), encoding="utf-8")
    return path
