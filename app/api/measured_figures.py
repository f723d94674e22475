"""Measured figures for ``/models``: the eval job's latest ``<results_dir>/table.json``.

The file is an object with ``rows``, one per variant (``variant`` = short or full name) carrying
``box_ap``, ``fps``, ``fps_end_to_end``, ``peak_memory_mb``, ``device`` and ``images`` among
others. It is re-read when its modification time changes; a missing file means no measured
figures, an unreadable one is logged and ignored (it must not break ``/models``).
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from model_zoo import Registry, UnknownVariantError

logger = logging.getLogger("attnzoo.measured")

TABLE_FILE = "table.json"
MEASURED_FIELDS = ("box_ap", "fps", "fps_end_to_end", "peak_memory_mb", "device", "images")


class MeasuredFigures:
    """Cached reader of ``results_dir / table.json``: variant alias → figures (or nothing)."""

    def __init__(self, results_dir: Path, registry: Registry) -> None:
        self.path = Path(results_dir) / TABLE_FILE
        self.registry = registry
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._figures: dict[str, dict[str, Any]] = {}

    def get(self, variant: str) -> dict[str, Any] | None:
        return self.all().get(variant)

    def all(self) -> dict[str, dict[str, Any]]:
        try:
            stat = self.path.stat()
        except OSError:
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._figures = self._read(stat.st_mtime)
                self._stamp = stamp
            return self._figures

    def _read(self, mtime: float) -> dict[str, dict[str, Any]]:
        try:
            rows = json.loads(self.path.read_text(encoding="utf-8"))["rows"]
            if not isinstance(rows, list):
                raise TypeError("'rows' is not a list")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring measured figures in %s: %s", self.path, exc)
            return {}
        measured_at = datetime.fromtimestamp(mtime, timezone.utc).isoformat(timespec="seconds")
        figures: dict[str, dict[str, Any]] = {}
        for row in rows:
            if not isinstance(row, dict) or not isinstance(row.get("variant"), str):
                continue
            try:
                alias = self.registry.resolve(row["variant"]).alias
            except UnknownVariantError:
                continue  # a results file from another registry
            figures[alias] = {
                **{field: row.get(field) for field in MEASURED_FIELDS},
                "source": str(self.path),
                "measured_at": measured_at,
            }
        return figures
