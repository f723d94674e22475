"""Loading official mmdet checkpoints, unchanged, strictly.

A checkpoint is ``{'meta': {...}, 'state_dict': {...}}`` (mmcv ``save_checkpoint`` after
``publish_model.py`` dropped the optimizer); a bare state dict is accepted too. It is read with
``torch.load(weights_only=True)`` — never full unpickling. The only rename is mmdet's legacy DCN
offset name (``conv2_offset.*`` → ``conv2.conv_offset.*``). Every model tensor must be filled and
every checkpoint tensor used, with equal shapes; otherwise :class:`CheckpointError` names the
variant expected, the first offending keys and, where it can tell, the variant the file fits.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from model_zoo.engine.detector import build_detector
from model_zoo.engine.spec import ArchSpec
from model_zoo.errors import CheckpointError

if TYPE_CHECKING:
    from model_zoo.registry import Registry, VariantEntry

# Legacy names → current names (mmdet <= Jan 2020 stored DCN offsets beside the conv).
RENAMES: tuple[tuple[re.Pattern[str], str], ...] = ((re.compile(r"^(.*\.conv2)_offset\.(weight|bias)$"), r"\1.conv_offset.\2"),)
SHOWN_KEYS = 5


@dataclass(frozen=True)
class KeyReport:
    """How a state dict's keys differ from a model's."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # key, file shape, model shape

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``path`` safely and return (state dict with current key names, meta)."""
    path = Path(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a plain-tensor checkpoint (refused by the safe loader: {_unpickler_reason(exc)})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{str(path)!r} cannot be read as a PyTorch checkpoint (truncated or corrupt?): {_one_line(str(exc))}"
        ) from None
    if isinstance(raw, Mapping) and "state_dict" in raw:
        state_dict, meta = raw["state_dict"], raw.get("meta") or {}
    elif isinstance(raw, Mapping) and raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        state_dict, meta = raw, {}
    else:
        found = ", ".join(map(str, list(raw)[:SHOWN_KEYS])) if isinstance(raw, Mapping) else type(raw).__name__
        raise CheckpointError(f"{str(path)!r} has no 'state_dict' (found: {found})")
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{str(path)!r}: 'state_dict' is not a mapping of tensors")
    return {_current_name(k): v for k, v in state_dict.items()}, dict(meta) if isinstance(meta, Mapping) else {}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _unpickler_reason(exc: Exception) -> str:
    """The specific reason inside torch's long weights-only refusal, on one line."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].split("Check the documentation", 1)[0]
    return _one_line(text) or type(exc).__name__


def _current_name(key: str) -> str:
    key = key.removeprefix("module.")
    for pattern, replacement in RENAMES:
        key = pattern.sub(replacement, key)
    return key


def compare_keys(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) -> KeyReport:
    """Compare a state dict against expected {key: shape}, in the expected key order."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, tuple(state_dict[k].shape), shape)
        for k, shape in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != shape
    ]
    return KeyReport(missing, unexpected, mismatched)


def expected_shapes(arch: ArchSpec) -> dict[str, tuple[int, ...]]:
    """{key: shape} of the model ``arch`` builds, without allocating its weights."""
    with torch.device("meta"):
        model = build_detector(arch)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_checkpoint(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    entry: "VariantEntry",
    registry: "Registry | None" = None,
) -> dict[str, Any]:
    """Fill every tensor of ``model`` (built for ``entry``) from the file; return the file's meta.

    Raises:
        CheckpointError: unreadable file, or keys/shapes that do not fit ``entry``'s architecture.
    """
    try:
        state_dict, meta = read_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"cannot load a checkpoint for variant {entry.alias!r}: {exc}") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    report = compare_keys(state_dict, expected)
    if not report.ok:
        raise CheckpointError(_mismatch_message(path, entry, report, _sniff_variant(state_dict, registry, entry)))
    model.load_state_dict(state_dict, strict=True)
    return meta


def _sniff_variant(
    state_dict: Mapping[str, torch.Tensor], registry: "Registry | None", expected: "VariantEntry"
) -> str | None:
    if registry is None:
        return None
    for entry in registry:
        if entry.alias != expected.alias and entry.arch != expected.arch and compare_keys(state_dict, expected_shapes(entry.arch)).ok:
            return entry.alias
    return None


def _mismatch_message(path: str | os.PathLike[str], entry: "VariantEntry", report: KeyReport, looks_like: str | None) -> str:
    parts = [f"checkpoint {str(path)!r} does not fit variant {entry.alias!r}"]
    if report.missing:
        parts.append(f"{len(report.missing)} missing keys (first: {', '.join(report.missing[:SHOWN_KEYS])})")
    if report.unexpected:
        parts.append(f"{len(report.unexpected)} unexpected keys (first: {', '.join(report.unexpected[:SHOWN_KEYS])})")
    if report.mismatched:
        shown = "; ".join(f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in report.mismatched[:SHOWN_KEYS])
        parts.append(f"{len(report.mismatched)} shape mismatches ({shown})")
    message = "; ".join(parts)
    if looks_like:
        message += f". The file looks like a {looks_like!r} checkpoint: use --variant {looks_like}"
    return message
