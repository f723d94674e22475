"""One attnzoo variant inside Triton's Python backend: what each generated ``model.py`` delegates to.

``initialize`` reads the model's configuration (:class:`~app.triton.model_config.ModelParameters`),
loads the variant's checkpoint from the version folder, verified by hash (the prefix its name
carries and the whole sha256 the configuration holds), on the instance's device, and runs one
warm-up forward, as ``attnzoo serve`` does before it reports a variant loaded. A failure there
leaves the model unavailable, with the error as the reason in Triton's repository index.

``execute`` gets the requests Triton's dynamic batcher gathered. Each request carries ``IMAGE``
[b, 1] (b encoded images) and its own parameters ``score_thr``, ``max_dets``, ``classes``; the
stages are those of ``attnzoo serve``'s v2 door::

    parse parameters → decode and check each upload → Detector.prepare   (per request; an error
                                                                           answers that request only)
    Detector.infer on every image of the batch                            (one call)
    filter each image by its request's parameters → the four v2 tensors   (per request)

On CPU ``Detector.infer`` runs one forward per image, so an image's detections do not depend on
what Triton batched it with (bit for bit); on CUDA images of one padded shape share a forward.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_zoo import Detector, HashMismatchError, PreparedImage, keep_freed_memory, load_detector, load_registry

from ..core.decode import UploadError, decode_upload
from ..core.errors import ImageUnprocessableError, InvalidParameterError
from ..core.pool import warm_up
from ..core.requests import DetectParams
from ..core.served_variant import prepare
from ..oip.contract import IMAGE_INPUT
from ..oip.inference import detection_outputs, parse_parameters
from .model_config import ModelParameters, as_triton_output
from .repository import METAFILE_NAME

# Triton's own module: importable only inside its Python backend's stub (no package, no type stubs).
pb_utils = importlib.import_module("triton_python_backend_utils")


@dataclass(frozen=True)
class _ReadRequest:
    """A request whose parameters and images were accepted, waiting for the model."""

    params: DetectParams
    images: list[np.ndarray]  # (H, W, 3) BGR uint8, the decoded uploads
    prepared: list[PreparedImage]


class VariantModel:
    """The loaded variant of one Triton model instance.

    Args:
        args: what Triton passes to ``initialize``: ``model_config`` (JSON), ``model_repository``
            (the model's folder), ``model_version``, ``model_instance_kind`` ("CPU" or "GPU") and
            ``model_instance_device_id``.

    Raises:
        AttnzooError (missing, refused or broken checkpoint), or what loading the model raised.
    """

    def __init__(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        self.parameters = ModelParameters.from_config({key: value["string_value"] for key, value in config["parameters"].items()})
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        device = "cpu" if args["model_instance_kind"] == "CPU" else f"cuda:{args['model_instance_device_id']}"
        if self.parameters.keep_freed_memory:
            keep_freed_memory(self.parameters.malloc_arenas)
        self.detector = self._load(version_dir, device)
        warm_up(self.detector)

    def _load(self, version_dir: Path, device: str) -> Detector:
        path = version_dir / self.parameters.weights_file
        try:
            detector = load_detector(
                self.parameters.variant, path, device=device, registry=load_registry(version_dir / METAFILE_NAME),
                verify_hash=True, cpu_kernels=self.parameters.cpu_kernels,
            )  # fmt: skip
        except HashMismatchError as exc:
            raise _repository_checkpoint_refused(path, exc.sha256, exc.expected) from None
        if detector.sha256 != self.parameters.sha256:
            raise _repository_checkpoint_refused(path, detector.sha256 or "", self.parameters.sha256)
        return detector

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, in order: the four v2 outputs, or that request's error."""
        read = [self._read(request) for request in requests]
        prepared = [image for item in read if isinstance(item, _ReadRequest) for image in item.prepared]
        try:
            results = iter(self.detector.infer(prepared))
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the model's failure
            failure = pb_utils.TritonError(f"model failed: {type(exc).__name__}: {exc}", pb_utils.TritonError.INTERNAL)
            return [pb_utils.InferenceResponse(error=item if isinstance(item, pb_utils.TritonError) else failure) for item in read]
        responses = []
        for item in read:
            if not isinstance(item, _ReadRequest):
                responses.append(pb_utils.InferenceResponse(error=item))
                continue
            filtered = [next(results).filter(item.params.score_thr, item.params.max_dets, item.params.labels) for _ in item.images]
            tensors = [pb_utils.Tensor(name, as_triton_output(name, array)) for name, array in detection_outputs(filtered).items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        del self.detector

    def _read(self, request: Any) -> Any:
        """A request's parameters and images, decoded, checked and resized (a _ReadRequest); or its error (a TritonError)."""
        try:
            params = parse_parameters(json.loads(request.parameters())).detect
            uploads = pb_utils.get_input_tensor_by_name(request, IMAGE_INPUT).as_numpy().ravel()
            images = [decode_upload(bytes(upload), max_pixels=self.parameters.max_pixels).pixels for upload in uploads]
            return _ReadRequest(params, images, [prepare(self.detector, image) for image in images])
        except (InvalidParameterError, UploadError, ImageUnprocessableError) as exc:
            return pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)


def _repository_checkpoint_refused(path: Path, sha256: str, expected: str) -> HashMismatchError:
    return HashMismatchError(
        path, sha256, expected,
        message=f"checkpoint {str(path)!r} refused: its sha256 {sha256[:16]}… does not match {expected!r} "
        "(the sha256 prefix of its name, or the whole sha256 in config.pbtxt); the file is corrupt or not the one "
        "attnzoo triton-repo wrote: write the repository again",
    )  # fmt: skip
