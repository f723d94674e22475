"""Attention maps are computed without touching module state: asked for while another thread runs
batches on the same detector, they and the batches' detections equal those of serial calls."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from model_zoo.attention_maps import attention_map
from model_zoo.engine.detector import build_detector
from model_zoo.predictor import Detector
from model_zoo.registry import load_registry
from model_zoo.synth import calibration_image, synthetic_state_dict
from tests.conftest import at_scale

QUERIES = [(3, 0, 100.0, 50.0), (3, 5, 600.0, 400.0), (4, 2, 320.0, 200.0)]  # (stage, block, x, y)


@pytest.fixture(scope="module", params=[("attn1111", "fast"), ("attn0010", "portable")])
def detector(request):
    alias, kernels = request.param
    entry = at_scale(load_registry().resolve(alias), (320, 192))
    model = build_detector(entry.arch)
    model.load_state_dict(synthetic_state_dict(entry.arch, seed=9))
    return Detector(entry, model, device=torch.device("cpu"), cpu_kernels=kernels)


def test_attention_maps_while_another_thread_runs_batches(detector):
    image = calibration_image(41)
    batch = [detector.prepare(calibration_image(seed)) for seed in (42, 43, 44)]
    serial_maps = [attention_map(detector, image, stage=s, block=b, x=x, y=y) for s, b, x, y in QUERIES]
    serial_detections = detector.infer([detector.prepare(image)])[0]
    serial_batch = detector.infer(batch)

    stop, batch_results, errors = threading.Event(), [], []

    def run_batches() -> None:
        try:
            while not stop.is_set():
                batch_results.append(detector.infer(batch))
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    worker = threading.Thread(target=run_batches)
    worker.start()
    try:
        while not batch_results and not errors and worker.is_alive():
            stop.wait(0.01)  # the first batch is done: the second is running while the maps are made
        concurrent_maps, concurrent_detections = [], []
        for _ in range(2):
            for s, b, x, y in QUERIES:
                concurrent_maps.append(attention_map(detector, image, stage=s, block=b, x=x, y=y))
                concurrent_detections.append(detector.infer([detector.prepare(image)])[0])
    finally:
        stop.set()
        worker.join(120)
    assert not errors and not worker.is_alive()
    assert len(batch_results) >= 2  # at least one batch ran while the maps were made
    for got, expected in zip(concurrent_maps, serial_maps * 2):
        assert np.array_equal(got.weights, expected.weights) and got.query_cell == expected.query_cell
    assert all(detections == serial_detections for detections in concurrent_detections)
    assert all(results == serial_batch for results in batch_results)
