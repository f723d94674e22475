"""Architecture YAML files → a validated, frozen :class:`~model_zoo.engine.spec.ArchSpec`.

A file may extend another with ``_base_: other.yml`` (a path relative to it), deep-merged like
mmdet's configs. The merged mapping is validated by pydantic against the engine's own frozen
dataclasses (no second copy of the schema), then checked for what the engine can build.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from model_zoo.engine.spec import ArchSpec, ArchSpecError, check_supported
from model_zoo.errors import MetafileError


class _ArchDocument(BaseModel):
    """The merged file as one field, so that pydantic's config (unknown keys are errors, no
    string-to-number coercion) applies to every nested spec dataclass."""

    model_config = ConfigDict(extra="forbid", strict=True)

    arch: ArchSpec


def read_yaml(path: Path) -> Any:
    """The parsed YAML document at ``path``; unreadable or invalid files name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MetafileError(str(path), f"cannot read: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MetafileError(str(path), f"not valid YAML: {' '.join(str(exc).split())}") from None


def load_arch_file(path: Path) -> ArchSpec:
    """Read ``path`` (following ``_base_``), validate it and return the engine's spec.

    Raises:
        MetafileError: a file is unreadable, not YAML, not a mapping, or its ``_base_`` chain loops.
        ArchSpecError: naming the dotted field (``arch.backbone.attention.type``) and what is wrong.
    """
    return arch_spec_from_mapping(_read_merged(path, frozenset()))


def arch_spec_from_mapping(raw: Mapping[str, Any]) -> ArchSpec:
    """Validate a merged architecture mapping (the YAML keys of :class:`ArchSpec`).

    Validated as JSON text in strict mode: YAML's scalars are JSON's, so lists become tuples and
    integers become floats, while a string or a boolean where a number belongs is refused.
    """
    try:
        spec = _ArchDocument.model_validate_json(json.dumps({"arch": raw}, default=str)).arch
    except ValidationError as exc:
        raise _first_problem(exc) from None
    check_supported(spec)
    return spec


def _first_problem(exc: ValidationError) -> ArchSpecError:
    error = exc.errors(include_url=False)[0]
    loc = error["loc"]
    field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    if error["type"] == "missing":
        return ArchSpecError(field, "missing")
    if error["type"] == "unexpected_keyword_argument":
        return ArchSpecError(field, f"unknown key (valid: {', '.join(_keys_at(loc[:-1]))})")
    message = error["msg"][:1].lower() + error["msg"][1:]
    return ArchSpecError(field, f"{message}, got {error['input']!r}")


def _keys_at(loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the spec dataclass at ``loc`` (``('arch', 'backbone')`` → BackboneSpec's)."""
    kind: Any = _ArchDocument
    for part in loc:
        if isinstance(part, str):
            hints = typing.get_type_hints(kind)
            kind = next((arg for arg in typing.get_args(hints[part]) if arg is not type(None)), hints[part])
    return [field.name for field in dataclasses.fields(kind)]


def _read_merged(path: Path, seen: frozenset[Path]) -> dict[str, Any]:
    if path in seen:
        raise MetafileError(str(path), "_base_ chain loops back to this file")
    raw = read_yaml(path)
    if not isinstance(raw, Mapping):
        raise MetafileError(str(path), "an architecture file must be a mapping")
    raw = dict(raw)
    base = raw.pop("_base_", None)
    if base is None:
        return raw
    return _deep_merge(_read_merged((path.parent / str(base)).resolve(), seen | {path}), raw)


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
