"""The registry: an OpenMMLab-schema ``metafile.yml`` turned into frozen :class:`VariantEntry` s.

Each model entry names its architecture in ``Config``: either a bundled architecture
(``model_zoo/architectures/<name>.yml``) or a YAML file path relative to the metafile, read by
:mod:`model_zoo.arch_config` into the :class:`~model_zoo.engine.spec.ArchSpec` the engine builds
from. Names (short or full) resolve to entries here and nowhere else, and an entry's weights
file is ``<weights dir>/<last path segment of its Weights URL>`` (:func:`weights_path_for`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import urlparse

from model_zoo.arch_config import load_arch_file, read_yaml
from model_zoo.engine.spec import ArchSpec, ArchSpecError
from model_zoo.errors import MetafileError, UnknownVariantError, WeightsMissingError

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
        """Entries for ``names`` (short or full, in the order given, repeats dropped); ``None``:
        every entry in registry order.

        Raises:
            UnknownVariantError: at the first unknown name, listing the valid ones.
        """
        if names is None:
            return list(self.entries)
        entries = [self.resolve(name) for name in names]
        return list({entry.name: entry for entry in entries}.values())

    def __iter__(self) -> Iterator[VariantEntry]:
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


def weights_path_for(entry: VariantEntry, weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """``weights_dir / <last path segment of the entry's Weights URL>`` (default dir:
    :func:`default_weights_dir`).

    Raises:
        WeightsMissingError: the entry has no Weights URL, so it has no file name.
    """
    if entry.weights_filename is None:
        raise WeightsMissingError(
            f"variant {entry.alias!r} has no Weights URL in the metafile, so it has no file in the weights dir; "
            "give its checkpoint path instead"
        )
    return Path(weights_dir if weights_dir is not None else default_weights_dir()) / entry.weights_filename


def existing_weights_path(entry: VariantEntry, weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """:func:`weights_path_for`, checked to be a file.

    Raises:
        WeightsMissingError: naming the path, the fetch command and the URL to download by hand.
    """
    path = weights_path_for(entry, weights_dir)
    if not path.is_file():
        raise WeightsMissingError(
            f"checkpoint for {entry.alias!r} not found at {str(path)!r}: run `attnzoo fetch {entry.alias}`, "
            f"or download {entry.weights_url} and put the file there (keep its name)"
        )
    return path


def bundled_architectures() -> list[str]:
    return sorted(p.stem for p in BUNDLED_ARCHITECTURES.glob("*.yml") if not p.stem.startswith("_"))


def load_registry(metafile: str | os.PathLike[str] | None = None) -> Registry:
    """Parse and validate a metafile (default: :func:`default_metafile`).

    Raises:
        MetafileError: naming the file, the entry and the field that is wrong.
    """
    path = Path(metafile) if metafile is not None else default_metafile()
    source = str(path)
    raw = read_yaml(path)
    if not isinstance(raw, Mapping) or not isinstance(raw.get("Models"), list) or not raw["Models"]:
        raise MetafileError(source, "expected a mapping with a non-empty 'Models' list", field="Models")
    collections = {c["Name"]: c for c in raw.get("Collections") or [] if isinstance(c, Mapping) and isinstance(c.get("Name"), str)}
    entries = [_parse_entry(model, index, path, collections) for index, model in enumerate(raw["Models"])]
    seen: dict[str, str] = {}
    for entry in entries:
        for key in (entry.alias, entry.name):
            if key in seen and seen[key] != entry.name:
                raise MetafileError(source, f"name {key!r} is used by two entries", entry=entry.name, field="Alias")
            seen[key] = entry.name
    return Registry(source=path, entries=tuple(entries))


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
    if collection is not None and not isinstance(collection, str):
        raise MetafileError(source, "must be a collection's Name", entry=name, field="In Collection")
    collection_fields = (collections.get(collection) or {}) if collection is not None else {}
    resources = collection_fields.get("Metadata", {}).get("Training Resources")
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
        return load_arch_file(path)
    except ArchSpecError as exc:
        raise MetafileError(str(metafile), f"architecture {str(path)!r}: {exc}", entry=entry, field="Config") from None
    except MetafileError as exc:
        raise MetafileError(str(metafile), str(exc), entry=entry, field="Config") from None
