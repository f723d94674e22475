"""A repository whose DCN checkpoint was replaced by other bytes (its sha256 no longer matches the
prefix in its name): Triton keeps that model unavailable, with the backend's reason in its
repository index, while the plain model serves. A server that must keep serving the others is
started with ``--exit-on-error=false`` (the KServe manifest passes it): the minimal start ends
when a model fails to load."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.triton.client_script import http_client, image_input, infer
from tests.triton.conftest import DCN_VARIANT, PLAIN_VARIANT, triton_repo
from tests.triton_tools import TritonServer


@pytest.fixture(scope="module")
def broken_repository(triton_zoo, zoo_registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both variants, checkpoints linked; the DCN one then replaced by a file of other bytes."""
    out = tmp_path_factory.mktemp("broken") / "repository"
    written = triton_repo(triton_zoo, out, "--weights", "link")
    assert written.returncode == 0, written.stderr
    checkpoint = out / DCN_VARIANT / "1" / zoo_registry.resolve(DCN_VARIANT).weights_filename
    checkpoint.unlink()
    checkpoint.write_bytes(b"not the checkpoint attnzoo triton-repo wrote" * 1000)
    return out


@pytest.fixture(scope="module")
def broken_triton(tritonserver_install, broken_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    log = tmp_path_factory.mktemp("broken_log") / "tritonserver.log"
    with TritonServer(tritonserver_install, broken_repository, log, extra_args=["--exit-on-error=false"]) as server:
        yield server


def test_the_mismatched_model_is_unavailable_with_the_reason_while_the_other_serves(broken_triton, zoo_registry, images):
    with http_client(broken_triton.http_url) as client:
        index = {model["name"]: model for model in client.get_model_repository_index()}
        assert index[PLAIN_VARIANT]["state"] == "READY"
        broken = index[DCN_VARIANT]
        assert broken["state"] == "UNAVAILABLE"
        first_line = broken["reason"].splitlines()[0]
        checkpoint = zoo_registry.resolve(DCN_VARIANT).weights_filename
        assert checkpoint in first_line and "refused" in first_line and "does not match" in first_line, broken["reason"]
        assert "write the repository again" in first_line
        assert not client.is_server_ready() and client.is_model_ready(PLAIN_VARIANT) and not client.is_model_ready(DCN_VARIANT)
        (detections,) = infer(httpclient, client, PLAIN_VARIANT, [images["coffee_landscape.png"]], "rows", {"score_thr": 0.05})
        assert len(detections.scores) > 0
        with pytest.raises(InferenceServerException, match=f"'{DCN_VARIANT}' has no available versions"):
            client.infer(DCN_VARIANT, [image_input(httpclient, [images["coffee_landscape.png"]], "rows")])


def test_linked_checkpoints_point_at_the_weights_dir(broken_repository, triton_zoo, zoo_registry):
    linked = broken_repository / PLAIN_VARIANT / "1" / zoo_registry.resolve(PLAIN_VARIANT).weights_filename
    assert linked.is_symlink() and linked.resolve() == (triton_zoo.weights_dir / linked.name).resolve()


def test_the_minimal_start_ends_when_a_model_fails_to_load(tritonserver_install, broken_repository, tmp_path):
    only_broken = tmp_path / "repository"
    shutil.copytree(broken_repository / DCN_VARIANT, only_broken / DCN_VARIANT, symlinks=True)
    server = TritonServer(tritonserver_install, only_broken, tmp_path / "tritonserver.log")
    with pytest.raises(RuntimeError, match="tritonserver exited"):
        server.start()
    assert "failed to load all models" in server.log_tail(200)
