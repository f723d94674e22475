"""docker/k8s/inferenceservice-triton.yaml: the Triton model repository on KServe's Triton runtime,
checked by KServe's own typed SDK models, then against Triton itself (the PyPI wheel's tritonserver
takes the runtime's command line with the manifest's args) and against docker/triton/Dockerfile,
the image it runs (which cannot be built here: its base is NVIDIA's registry image)."""

from __future__ import annotations

import copy
import re
import subprocess
from importlib.metadata import version
from typing import Any, Callable
from urllib.parse import urlparse

import pytest
from deploy_support import DOCKER_DIR, K8S_DIR, REPO_ROOT, load_yaml, parse_dockerfile
from typed_manifest import check_in_subprocess

from tests.triton.client_script import http_client
from tests.triton_tools import ToolUnavailable, TritonServer, TritonServerInstall, find_tritonserver

ISVC_FILE = K8S_DIR / "inferenceservice-triton.yaml"
TRITON_DOCKERFILE = DOCKER_DIR / "triton" / "Dockerfile"
STUB_MODEL = REPO_ROOT / "app" / "triton" / "stub_model.py"
# KServe 0.21's kserve-tritonserver ClusterServingRuntime runs `tritonserver` with these, then the
# InferenceService's args (KServe appends them); its ports are replaced by free ones here.
RUNTIME_ARGS = ["--model-store=/mnt/models", "--grpc-port=9000", "--http-port=8080", "--allow-grpc=true", "--allow-http=true"]
# Where KServe's storage initializer can fetch a storageUri from.
STORAGE_SCHEMES = {"s3", "gs", "pvc", "https", "http", "hdfs", "webhdfs", "oci", "hf", "azure"}
NGC_RELEASE_OF_TRITON = {"2.51.0": "24.10"}  # NVIDIA's container release of each Triton server version


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return load_yaml(ISVC_FILE)


@pytest.fixture(scope="module")
def model(manifest) -> dict[str, Any]:
    return manifest["spec"]["predictor"]["model"]


@pytest.fixture(scope="module")
def tritonserver_install() -> TritonServerInstall:
    try:
        return find_tritonserver()
    except ToolUnavailable as exc:
        pytest.skip(str(exc))


def _rename(path: list[str], old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        node = doc
        for part in path:
            node = node[part]
        node[new] = node.pop(old)

    return mutate


def _protocol_on_the_predictor(doc: dict[str, Any]) -> None:
    predictor = doc["spec"]["predictor"]
    predictor["protocolVersion"] = predictor["model"].pop("protocolVersion")


def _replicas_as_words(doc: dict[str, Any]) -> None:
    doc["spec"]["predictor"]["minReplicas"] = "one"


MUTATIONS = {
    "misspelt storageUri": (_rename(["spec", "predictor", "model"], "storageUri", "storageURI"), "storageURI"),
    "misspelt modelFormat": (_rename(["spec", "predictor", "model"], "modelFormat", "format"), "format"),
    "misplaced protocolVersion": (_protocol_on_the_predictor, "protocolVersion"),
    "wrongly typed minReplicas": (_replicas_as_words, "minReplicas"),
}  # fmt: skip


@pytest.fixture(scope="module")
def typed(manifest) -> dict[str, dict[str, Any]]:
    documents = {"as written": manifest}
    for name, (mutate, _field) in MUTATIONS.items():
        documents[name] = copy.deepcopy(manifest)
        mutate(documents[name])
    return check_in_subprocess(documents, "V1beta1InferenceService")


def test_loads_into_kserves_typed_inference_service_and_round_trips(manifest, typed):
    result = typed["as written"]
    assert result["error"] is None and result["type"] == "V1beta1InferenceService"
    assert result["round_trip"] == manifest


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_a_misspelt_misplaced_or_mistyped_field_fails(typed, mutation):
    error = typed[mutation]["error"]
    assert error is not None and MUTATIONS[mutation][1] in error, typed[mutation]


def test_the_repository_on_kserves_triton_runtime_over_v2_with_one_gpu(manifest, model):
    assert manifest["metadata"]["name"] == "attnzoo-triton"
    assert manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert (model["modelFormat"]["name"], model["runtime"], model["protocolVersion"]) == ("triton", "kserve-tritonserver", "v2")
    assert urlparse(model["storageUri"]).scheme in STORAGE_SCHEMES and urlparse(model["storageUri"]).path.strip("/")
    for section in ("limits", "requests"):
        assert int(model["resources"][section]["nvidia.com/gpu"]) == 1


def test_prometheus_scrapes_tritons_metrics_port(manifest, tritonserver_install):
    annotations = manifest["spec"]["predictor"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    usage = subprocess.run(
        [str(tritonserver_install.binary), "--help"], env={"LD_LIBRARY_PATH": str(tritonserver_install.library_dir)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60, check=False,
    ).stdout  # fmt: skip
    default = re.search(r"--metrics-port <integer>\s+The port reporting prometheus metrics\. Default is (\d+)\.", usage)
    assert default is not None and annotations["prometheus.io/port"] == default[1]
    # KServe's own switch would point prometheus.io/port at Knative's queue-proxy (see the file).
    assert manifest["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "false"


def test_tritonserver_takes_the_runtimes_command_line_with_the_manifests_args(model, tritonserver_install, tmp_path):
    """The wheel's tritonserver (the release of the image's base) starts with KServe's runtime
    arguments and the manifest's, on an empty repository, and is ready (non-strict readiness)."""
    flags = [arg for arg in RUNTIME_ARGS if not arg.startswith(("--model-store", "--grpc-port", "--http-port"))]
    (tmp_path / "models").mkdir()
    with TritonServer(tritonserver_install, tmp_path / "models", tmp_path / "tritonserver.log", extra_args=[*flags, *model["args"]]) as server:
        with http_client(server.http_url) as client:
            assert client.is_server_ready()
            assert client.get_server_metadata()["version"] in NGC_RELEASE_OF_TRITON
    assert "unrecognized option" not in server.log_tail(400)


def test_the_image_is_nvidias_triton_release_with_attnzoo_in_the_venv_the_models_are_told_of(model):
    preamble, stage = parse_dockerfile(TRITON_DOCKERFILE)
    base = next(i.args for i in preamble if i.keyword == "ARG" and i.args.startswith("TRITON_IMAGE="))
    assert base == f"TRITON_IMAGE=nvcr.io/nvidia/tritonserver:{NGC_RELEASE_OF_TRITON['2.51.0']}-py3"
    assert stage[0].args == "${TRITON_IMAGE}"
    env = " ".join(i.args for i in stage if i.keyword == "ENV")
    variable = re.search(r'SYS_PATH_ENV = "([A-Z_]+)"', STUB_MODEL.read_text())
    assert variable is not None
    sys_path = re.search(rf"{variable[1]}=(\S+)", env)
    venv = re.search(r"python3 -m venv (\S+)", " ".join(i.args for i in stage if i.keyword == "RUN"))
    assert sys_path and venv and sys_path[1] == f"{venv[1]}/lib/python${{PYTHON_VERSION}}/site-packages"
    runs = " ".join(i.args for i in stage if i.keyword == "RUN")
    assert 'pip install --no-cache-dir "numpy<2"' in runs, "the stub's Python keeps numpy 1.x"
    assert f"{venv[1]}/bin/pip install /src" in runs
    assert model["image"] == f"attnzoo-triton:{version('attnzoo')}"
    assert f"-t {model['image']} ." in TRITON_DOCKERFILE.read_text()
