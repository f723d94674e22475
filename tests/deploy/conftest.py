"""Fixtures of the deployment tests (helpers live in deploy_support.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from deploy_support import (
    COMPOSE_FILE,
    CONTRACT_SETTINGS,
    DASHBOARD_FILE,
    K8S_DIR,
    PROMETHEUS_MISSING,
    TEST_VARIANT,
    SyntheticWeights,
    hash_named,
    load_yaml,
)


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """docker-compose.yml with YAML merge keys (``<<:``) resolved."""
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="session")
def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object in docker/k8s/*.yaml by (kind, metadata.name); kustomization files excluded."""
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in objects, f"{path.name}: {key} defined twice"
                objects[key] = doc
    return objects


@pytest.fixture(scope="session")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def service_port() -> int:
    """The service's default port, from the one place it is defined: the settings class."""
    from app.settings import Settings

    return int(Settings.model_fields["port"].default)


@pytest.fixture(scope="session")
def grpc_port() -> int:
    """The gRPC port's default: Settings' where the service has it, else issue 14's contract."""
    from app.settings import Settings

    field = Settings.model_fields.get("grpc_port")
    return int(field.default if field is not None else CONTRACT_SETTINGS["grpc_port"])


@pytest.fixture(scope="session")
def setting_env_names() -> set[str]:
    """Every ATTNZOO_* variable the service reads (Settings' fields and the contract names)."""
    from app.settings import ENV_PREFIX, Settings

    return {f"{ENV_PREFIX}{name.upper()}" for name in set(Settings.model_fields) | set(CONTRACT_SETTINGS)}


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip(PROMETHEUS_MISSING)
    return path


@pytest.fixture(scope="session")
def promtool_bin() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(PROMETHEUS_MISSING)
    return path


@pytest.fixture(scope="session")
def synthetic_weights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyntheticWeights]:
    """A synthetic attn0010 checkpoint (~160 MB, deleted afterwards), named
    ``<stem>-<first 8 hex of its sha256>.pth`` like the published files."""
    from model_zoo.registry import BUNDLED_METAFILE, load_registry
    from model_zoo.synth import write_synthetic_checkpoint
    from model_zoo.weights import sha256_file

    store = tmp_path_factory.mktemp("weights-store")
    entry = load_registry(BUNDLED_METAFILE).resolve(TEST_VARIANT)
    named = hash_named(Path(write_synthetic_checkpoint(entry, store / "synthetic.pth", seed=0)), TEST_VARIANT)
    yield SyntheticWeights(store=store, filename=named.name, sha256=sha256_file(named))
    shutil.rmtree(store, ignore_errors=True)


@pytest.fixture(scope="session")
def test_image_png() -> bytes:
    """A 160x120 PNG with a few filled shapes (real image bytes for /detect)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(7)
    image = rng.integers(0, 60, size=(120, 160, 3), dtype=np.uint8)
    cv2.rectangle(image, (20, 30), (70, 100), (40, 180, 220), thickness=-1)
    cv2.circle(image, (115, 55), 28, (200, 60, 40), thickness=-1)
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()
