"""The registry: an OpenMMLab-schema ``metafile.yml`` turned into frozen :class:`VariantEntry` s.

Each model entry names its architecture in ``Config``: either a bundled architecture
(``model_zoo/architectures/<name>.yml``) or a YAML file path relative to the metafile.
Architecture files may extend another with ``_base_: other.yml`` (deep merge, like mmdet's
configs). The result is an :class:`~model_zoo.engine.spec.ArchSpec` that the engine builds from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlparse

import yaml

from model_zoo.engine.spec import ArchSpec, ArchSpecError, arch_spec_from_dict
from model_zoo.errors import MetafileError, UnknownVariantError
from model_zoo.weights import hash_prefix_of

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_METAFILE = PACKAGE_DIR / "metafile.yml"
BUNDLED_ARCHITECTURES = PACKAGE_DIR / "architectures"
REPO_ROOT = PACKAGE_DIR.parent

METAFILE_ENV = "ATTNZOO_METAFILE"
WEIGHTS_DIR_ENV = "ATTNZOO_WEIGHTS_DIR"


@dataclass(frozen=True)
class PublishedFigures:
    """The figures a metafile entry publishes; ``None`` where the entry gives none."""

    box_ap: float | None
    inference_ms: float | None  # ms per image
    train_memory_gb: float | None
    hardware: str | None
    backend: str | None
    batch_size: int | None
    mode: str | None
    resolution: str | None

    @property
    def fps(self) -> float | None:
        """Images per second, as the README table prints it (1000 / ms, one decimal)."""
        return None if not self.inference_ms else round(1000.0 / self.inference_ms, 1)


@dataclass(frozen=True)
class VariantEntry:
    name: str  # the metafile's full Name
    alias: str  # the short name (Alias) used by `variant=` and the CLI
    collection: str | None
    config: str  # as written in the metafile: bundled architecture name or relative path
    arch: ArchSpec
    published: PublishedFigures
    weights_url: str | None
    training_resources: str | None

    @property
    def weights_filename(self) -> str | None:
        """Last path segment of the weights URL: the file name under the weights dir."""
        if not self.weights_url:
            return None
        return Path(urlparse(self.weights_url).path).name

    @property
    def hash_prefix(self) -> str | None:
        """The hex digits after the last '-' of the file name (OpenMMLab / torch.hub convention)."""
        filename = self.weights_filename
        return None if filename is None else hash_prefix_of(filename)


@dataclass(frozen=True)
class Registry:
    source: Path
    entries: tuple[VariantEntry, ...]

    @property
    def aliases(self) -> list[str]:
        return [entry.alias for entry in self.entries]

    def resolve(self, name: str) -> VariantEntry:
        """Find an entry by short name (Alias) or full metafile Name."""
        for entry in self.entries:
            if name in (entry.alias, entry.name):
                return entry
        raise UnknownVariantError(name, self.aliases)

    def resolve_many(self, names: Sequence[str] | None) -> list[VariantEntry]:
        """Entries of short or full names, in the order named, each once; ``None``: every entry.

        Raises:
            UnknownVariantError: naming the valid variants.
        """
        if names is None:
            return list(self.entries)
        entries: list[VariantEntry] = []
        for name in names:
            entry = self.resolve(name)
            if entry not in entries:
                entries.append(entry)
        return entries

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def default_metafile() -> Path:
    """``$ATTNZOO_METAFILE`` if set, else the bundled metafile."""
    override = os.environ.get(METAFILE_ENV)
    return Path(override) if override else BUNDLED_METAFILE


def default_weights_dir() -> Path:
    """``$ATTNZOO_WEIGHTS_DIR`` if set, else ``weights/`` at the repository root."""
    override = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(override) if override else REPO_ROOT / "weights"


def bundled_architectures() -> list[str]:
    return sorted(p.stem for p in BUNDLED_ARCHITECTURES.glob("*.yml") if not p.stem.startswith("_"))


def load_registry(metafile: str | os.PathLike[str] | None = None) -> Registry:
    """Parse and validate a metafile (default: :func:`default_metafile`).

    Raises:
        MetafileError: naming the file, the entry and the field that is wrong.
    """
    path = Path(metafile) if metafile is not None else default_metafile()
    source = str(path)
    raw = _read_yaml(path, source)
    if not isinstance(raw, Mapping) or not isinstance(raw.get("Models"), list) or not raw["Models"]:
        raise MetafileError(source, "expected a mapping with a non-empty 'Models' list", field="Models")
    collections = {c.get("Name"): c for c in raw.get("Collections") or [] if isinstance(c, Mapping)}
    entries = [_parse_entry(model, index, path, collections) for index, model in enumerate(raw["Models"])]
    seen: dict[str, str] = {}
    for entry in entries:
        for key in (entry.alias, entry.name):
            if key in seen and seen[key] != entry.name:
                raise MetafileError(source, f"name {key!r} is used by two entries", entry=entry.name, field="Alias")
            seen[key] = entry.name
    return Registry(source=path, entries=tuple(entries))


def _read_yaml(path: Path, source: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MetafileError(source, f"cannot read: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MetafileError(source, f"not valid YAML: {exc}") from None


def _parse_entry(model: Any, index: int, metafile: Path, collections: Mapping[str, Any]) -> VariantEntry:
    source = str(metafile)
    if not isinstance(model, Mapping):
        raise MetafileError(source, "expected a mapping", entry=f"Models[{index}]")
    name = model.get("Name")
    if not isinstance(name, str) or not name:
        raise MetafileError(source, "missing or not a string", entry=f"Models[{index}]", field="Name")
    alias = model.get("Alias", name)
    if not isinstance(alias, str) or not alias:
        raise MetafileError(source, "must be a non-empty string", entry=name, field="Alias")
    config = model.get("Config")
    if not isinstance(config, str) or not config:
        raise MetafileError(source, "missing or not a string", entry=name, field="Config")
    arch = _load_arch(config, metafile, entry=name)
    weights = model.get("Weights")
    if weights is not None and not isinstance(weights, str):
        raise MetafileError(source, "must be a URL string", entry=name, field="Weights")
    collection = model.get("In Collection")
    resources = (collections.get(collection) or {}).get("Metadata", {}).get("Training Resources")
    return VariantEntry(
        name=name,
        alias=alias,
        collection=collection,
        config=config,
        arch=arch,
        published=_parse_published(model, source, name),
        weights_url=weights,
        training_resources=resources,
    )


def _parse_published(model: Mapping[str, Any], source: str, name: str) -> PublishedFigures:
    metadata = model.get("Metadata") or {}
    if not isinstance(metadata, Mapping):
        raise MetafileError(source, "must be a mapping", entry=name, field="Metadata")
    timing = metadata.get("inference time (ms/im)") or [{}]
    if not isinstance(timing, list) or not isinstance(timing[0], Mapping):
        raise MetafileError(source, "must be a list of mappings", entry=name, field="Metadata.inference time (ms/im)")
    first = timing[0]
    box_ap = None
    for result in model.get("Results") or []:
        metrics = result.get("Metrics") if isinstance(result, Mapping) else None
        if isinstance(metrics, Mapping) and "box AP" in metrics:
            box_ap = _number(metrics["box AP"], source, name, "Results.Metrics.box AP")
    return PublishedFigures(
        box_ap=box_ap,
        inference_ms=_number(first.get("value"), source, name, "Metadata.inference time (ms/im).value"),
        train_memory_gb=_number(metadata.get("Training Memory (GB)"), source, name, "Metadata.Training Memory (GB)"),
        hardware=first.get("hardware"),
        backend=first.get("backend"),
        batch_size=first.get("batch size"),
        mode=first.get("mode"),
        resolution=first.get("resolution"),
    )


def _number(value: Any, source: str, entry: str, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MetafileError(source, f"expected a number, got {value!r}", entry=entry, field=field)
    return float(value)


def _load_arch(config: str, metafile: Path, *, entry: str) -> ArchSpec:
    bundled = BUNDLED_ARCHITECTURES / f"{config}.yml"
    if "/" not in config and not config.endswith((".yml", ".yaml")):
        if not bundled.is_file() or config.startswith("_"):
            raise MetafileError(
                str(metafile),
                f"unknown architecture {config!r}; bundled architectures: {', '.join(bundled_architectures())}"
                " (or give a YAML path relative to the metafile)",
                entry=entry,
                field="Config",
            )
        path = bundled
    else:
        path = (metafile.parent / config).resolve()
    try:
        merged = _read_arch_file(path, set())
        return arch_spec_from_dict(merged)
    except ArchSpecError as exc:
        raise MetafileError(str(metafile), f"architecture {str(path)!r}: {exc}", entry=entry, field="Config") from None
    except MetafileError as exc:
        raise MetafileError(str(metafile), str(exc), entry=entry, field="Config") from None


def _read_arch_file(path: Path, seen: set[Path]) -> dict[str, Any]:
    if path in seen:
        raise MetafileError(str(path), "_base_ chain loops back to this file")
    raw = _read_yaml(path, str(path))
    if not isinstance(raw, Mapping):
        raise MetafileError(str(path), "an architecture file must be a mapping")
    raw = dict(raw)
    base = raw.pop("_base_", None)
    if base is None:
        return raw
    return _deep_merge(_read_arch_file((path.parent / base).resolve(), seen | {path}), raw)


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
