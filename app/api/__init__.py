"""The HTTP API: ``/detect``, ``/compare``, ``/attention``, ``/models`` (+ load/unload), health, the
docs and the page (``routes/``), and their helpers (uploads, image answers, response schemas).

Its front door serves every path no other door claims; its error body is ``error_bodies.detail_body``.
"""

from __future__ import annotations

from ..core.metrics import PROTOCOL_HTTP
from ..error_bodies import detail_body
from ..server.context import FrontDoor

DOOR = FrontDoor("", PROTOCOL_HTTP, detail_body)
