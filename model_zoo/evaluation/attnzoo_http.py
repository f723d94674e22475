"""attnzoo's own HTTP protocol as a transport of ``attnzoo eval --endpoint``.

``GET /models/{variant}``: the variant's state, the sha256 and source of the weights it loaded and
its device. ``POST /detect?variant=...&score_thr=...``: the raw image as the body, answered with
``detections`` (``bbox`` x1, y1, x2, y2 in original-image pixels, ``score``, ``category_id``) and
``timings_ms.model``, the server's model time.
"""

from __future__ import annotations

from typing import Any, Sequence

from .transport import EndpointError, EndpointModel, ServedDetection, ServedResult, Transport, json_object, optional_str


class AttnzooTransport(Transport):
    def describe(self, variant: str) -> EndpointModel:
        body = json_object(self.send("GET", f"/models/{variant}"))
        if body.get("state") not in (None, "loaded"):
            raise EndpointError(f"{self.url}: variant {variant!r} is {body.get('state')}: {body.get('reason')}")
        return EndpointModel(
            variant=str(body.get("variant", variant)),
            sha256=optional_str(body.get("sha256")),
            device=optional_str(body.get("device")),
            weights_source=optional_str(body.get("weights_source")),
        )

    def detect(self, image: bytes, variant: str) -> ServedResult:
        response = self.send(
            "POST",
            "/detect",
            params={"variant": variant, "score_thr": self.score_thr(variant)},
            content=image,
            headers={"Content-Type": "application/octet-stream", "Accept": "application/json"},
        )
        body = json_object(response)
        try:
            detections = [_served_detection(d["bbox"], d["score"], d["category_id"]) for d in body["detections"]]
            model_ms = (body.get("timings_ms") or {}).get("model")
        except (KeyError, TypeError, ValueError):
            raise EndpointError(f"{self.url}/detect: an answer without the detections schema") from None
        return ServedResult(detections, None if model_ms is None else float(model_ms) / 1000.0)


def _served_detection(bbox: Sequence[Any], score: Any, category_id: Any) -> ServedDetection:
    x1, y1, x2, y2 = (float(v) for v in bbox)
    return ServedDetection((x1, y1, x2, y2), float(score), int(category_id))
