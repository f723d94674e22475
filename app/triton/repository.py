"""Write a Triton model repository: one Python-backend model per variant, named by its alias.

::

    <out>/<alias>/config.pbtxt           the v2 contract, batching, instances, parameters (model_config.py)
    <out>/<alias>/1/model.py             a copy of stub_model.py
    <out>/<alias>/1/environment.json     the Python that wrote the repository: version, site-packages
    <out>/<alias>/1/metafile.yml         the variant's metafile entry, its Config → architecture.yml
    <out>/<alias>/1/architecture.yml     the variant's whole architecture (its _base_ chain merged)
    <out>/<alias>/1/<checkpoint>.pth     copied (or linked) under its registry name, sha256 prefix included

A model needs nothing outside its folder but the environment with torch and attnzoo, so a
repository of copied checkpoints can be uploaded as it is (KServe's ``storageUri``). Every
checkpoint is verified by hash before anything is written, and the repository appears at ``out``
only once it is complete.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from model_zoo import AttnzooError, Registry, VariantEntry, existing_weights_path, hash_prefix_of, verify_weights

from ..oip.contract import MODEL_VERSION
from ..settings import Settings
from .model_config import ModelParameters, Scheduling, model_config, to_pbtxt

WeightsMode = Literal["copy", "link"]
METAFILE_NAME = "metafile.yml"
ARCHITECTURE_NAME = "architecture.yml"
# The names stub_model.py reads (it holds the same literals: attnzoo is not importable there yet).
MODEL_FILE = "model.py"
ENVIRONMENT_FILE = "environment.json"


@dataclass(frozen=True)
class VariantWeights:
    """A variant to write and its verified checkpoint."""

    entry: VariantEntry
    checkpoint: Path
    sha256: str


@dataclass(frozen=True)
class WrittenModel:
    name: str
    folder: Path
    checkpoint: Path  # in the repository
    sha256: str


def verified_weights(registry: Registry, variants: Sequence[str] | None, weights_dir: Path | None) -> list[VariantWeights]:
    """The checkpoints of ``variants`` (default: every registry entry) in ``weights_dir``, each
    verified against the sha256 prefix of its name.

    Raises:
        UnknownVariantError, WeightsMissingError, HashMismatchError.
    """
    chosen = []
    for entry in registry.resolve_many(variants):
        path = existing_weights_path(entry, weights_dir)
        chosen.append(VariantWeights(entry, path, verify_weights(path, hash_prefix_of(path))))
    return chosen


def write_repository(
    out: Path,
    registry: Registry,
    weights: Sequence[VariantWeights],
    scheduling: Scheduling,
    *,
    weights_mode: WeightsMode = "copy",
    cpu_kernels: str = "fast",
) -> list[WrittenModel]:
    """Write the repository of ``weights``' variants at ``out`` (absent or an empty folder).

    Raises:
        AttnzooError: ``out`` holds something already. OSError: a file cannot be written.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AttnzooError(f"{str(out)!r} already exists and is not an empty folder: give --out a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the repository from a server running as another user
    try:
        written = [_write_model(staging, registry, item, scheduling, weights_mode, cpu_kernels) for item in weights]
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [dataclasses.replace(model, folder=out / model.name, checkpoint=out / model.checkpoint.relative_to(staging)) for model in written]


def environment_record() -> dict[str, Any]:
    """What ``environment.json`` holds: this Python's version and site-packages folders."""
    paths = sysconfig.get_paths()
    return {"python": "%d.%d" % sys.version_info[:2], "sys_path": list(dict.fromkeys([paths["purelib"], paths["platlib"]]))}


def _write_model(
    root: Path, registry: Registry, item: VariantWeights, scheduling: Scheduling, weights_mode: WeightsMode, cpu_kernels: str
) -> WrittenModel:
    entry = item.entry
    folder = root / entry.alias
    version = folder / MODEL_VERSION
    version.mkdir(parents=True)
    checkpoint = version / item.checkpoint.name
    if weights_mode == "link":
        checkpoint.symlink_to(item.checkpoint.resolve())
    else:
        shutil.copyfile(item.checkpoint, checkpoint)
    parameters = ModelParameters(
        variant=entry.alias,
        full_name=entry.name,
        weights_file=checkpoint.name,
        sha256=item.sha256,
        cpu_kernels=cpu_kernels,
        max_pixels=Settings.model_fields["max_pixels"].default,
        keep_freed_memory=Settings.model_fields["keep_freed_memory"].default,
        malloc_arenas=Settings.model_fields["malloc_arenas"].default,
    )
    (folder / "config.pbtxt").write_text(to_pbtxt(model_config(parameters, scheduling)), encoding="utf-8")
    (version / MODEL_FILE).write_bytes(resources.files(__package__).joinpath("stub_model.py").read_bytes())
    (version / ENVIRONMENT_FILE).write_text(json.dumps(environment_record(), indent=2) + "\n", encoding="utf-8")
    (version / METAFILE_NAME).write_text(_metafile_of(registry, entry), encoding="utf-8")
    (version / ARCHITECTURE_NAME).write_text(_architecture_of(entry), encoding="utf-8")
    return WrittenModel(entry.alias, folder, checkpoint, item.sha256)


def _metafile_of(registry: Registry, entry: VariantEntry) -> str:
    """A metafile of ``entry`` alone (its collection too), as its registry's file writes it, with
    ``Config`` naming the architecture file beside it."""
    raw = yaml.safe_load(registry.source.read_text(encoding="utf-8"))
    model = dict(next(model for model in raw["Models"] if model.get("Name") == entry.name))
    model["Config"] = ARCHITECTURE_NAME
    collections = [c for c in raw.get("Collections") or [] if isinstance(c, dict) and c.get("Name") == entry.collection]
    document = {"Collections": collections, "Models": [model]} if collections else {"Models": [model]}
    return f"# {entry.alias} as {registry.source} defines it; written by attnzoo triton-repo\n" + yaml.safe_dump(document, sort_keys=False)


def _architecture_of(entry: VariantEntry) -> str:
    """``entry``'s architecture as one YAML file (what its ``_base_`` chain merges to)."""
    plain = json.loads(json.dumps(dataclasses.asdict(entry.arch)))  # tuples → lists, as YAML holds them
    return f"# {entry.alias}: the whole architecture; written by attnzoo triton-repo\n" + yaml.safe_dump(plain, sort_keys=False)
