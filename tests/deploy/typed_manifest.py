"""Load a manifest into KServe's typed SDK models, refusing any field the models do not have.

KServe's Python SDK (``kserve.models``, generated from KServe's OpenAPI spec) types the
InferenceService down to the Kubernetes types it nests (``V1Container``, ``V1Probe``, ... from
the ``kubernetes`` client). Its own ``ApiClient.deserialize`` is not usable for this: it looks
type names up in ``kserve.models`` only (so it fails on the nested Kubernetes types) and, like
every OpenAPI-generated client, silently drops keys it does not know, so a misspelt or misplaced
field would load without a word. This walks the same ``openapi_types``/``attribute_map`` tables
the generated deserialiser walks, with both model packages, and raises on unknown keys; the
models' constructors then apply their own client-side validation (required fields, enums).

KServe's SDK registers the Open Inference Protocol's protobuf messages in the process-wide pool,
as tritonclient.grpc does, and the second registration fails the import: so the tests run this
module as a script in a process of its own (:func:`check_in_subprocess`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

_PRIMITIVES: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "bytes": str,
    "int": int,
    "float": (int, float),
    "bool": bool,
    "date": str,
    "datetime": str,
    "object": object,  # int-or-string fields (ports, quantities) and free-form objects
}


class ManifestFieldError(ValueError):
    """A manifest field the typed models do not have, or a value of the wrong type."""


def load_typed(data: Any, type_name: str, path: str = "") -> Any:
    """``data`` (parsed YAML) as an instance of the SDK type ``type_name`` (e.g.
    ``"V1beta1InferenceService"``); ``path`` names the place in error messages."""
    # Container types as KServe's generator (list[X], dict(str, X)) and Kubernetes' (List[X], Dict[str, X]) write them.
    if match := re.fullmatch(r"[lL]ist\[(.+)\]", type_name):
        _expect(data, list, type_name, path)
        return [load_typed(item, match[1], f"{path}[{i}]") for i, item in enumerate(data)]
    if match := re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", type_name):
        _expect(data, dict, type_name, path)
        return {key: load_typed(value, match[1] or match[2], f"{path}.{key}") for key, value in data.items()}
    if type_name in _PRIMITIVES:
        _expect(data, _PRIMITIVES[type_name], type_name, path)
        if type_name in ("int", "float") and isinstance(data, bool):
            raise ManifestFieldError(f"{path or '.'}: expected {type_name}, got a boolean")
        return data
    import kserve.models  # here, not at import: this module also runs in processes that must not import kserve
    import kubernetes.client.models

    model = getattr(kserve.models, type_name, None) or getattr(kubernetes.client.models, type_name, None)
    if model is None:
        raise LookupError(f"no SDK model named {type_name}")
    _expect(data, dict, type_name, path)
    attribute_of = {key: attribute for attribute, key in model.attribute_map.items()}
    unknown = sorted(set(data) - set(attribute_of))
    if unknown:
        raise ManifestFieldError(
            f"{path or '.'}: {type_name} has no field {', '.join(map(repr, unknown))} "
            f"(its fields: {', '.join(sorted(attribute_of))})"
        )
    values = {
        attribute_of[key]: load_typed(value, model.openapi_types[attribute_of[key]], f"{path}.{key}")
        for key, value in data.items()
    }
    try:
        return model(**values)
    except ValueError as exc:  # the generated models' own validation (required fields, enums)
        raise ManifestFieldError(f"{path or '.'}: {exc}") from None


def _expect(data: Any, kind: type | tuple[type, ...], type_name: str, path: str) -> None:
    if not isinstance(data, kind):
        raise ManifestFieldError(f"{path or '.'}: expected {type_name}, got {type(data).__name__} {data!r:.60}")


def check_in_subprocess(documents: dict[str, Any], type_name: str) -> dict[str, dict[str, Any]]:
    """Load each of ``documents`` (name → parsed YAML) as ``type_name`` in a fresh process.

    Returns name → ``{"error": <ManifestFieldError text or None>, "round_trip": <the typed model
    serialised back by the SDK, or None>}``.
    """
    request = json.dumps({"type": type_name, "documents": documents})
    completed = subprocess.run(
        [sys.executable, __file__], input=request, capture_output=True, text=True, timeout=300, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"typed_manifest.py failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout)


def _main() -> None:
    from kserve import ApiClient

    request = json.loads(sys.stdin.read())
    results: dict[str, dict[str, Any]] = {}
    for name, document in request["documents"].items():
        try:
            typed = load_typed(document, request["type"])
        except ManifestFieldError as exc:
            results[name] = {"error": str(exc), "round_trip": None}
        else:
            results[name] = {"error": None, "round_trip": ApiClient().sanitize_for_serialization(typed), "type": type(typed).__name__}
    print(json.dumps(results))


if __name__ == "__main__":
    _main()
