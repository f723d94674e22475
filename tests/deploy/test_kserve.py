"""docker/k8s/inferenceservice.yaml: attnzoo as a KServe custom predictor, checked by KServe's own
typed SDK models (``kserve`` on PyPI) so that a misspelt or misplaced field fails, then against
the service's contract (ports, protocol, probes, metrics), the plain Deployment it mirrors, and
the HorizontalPodAutoscaler beside it (kubernetes-validate checks that one, in test_k8s.py)."""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest
import yaml
from deploy_support import K8S_DIR, PROMETHEUS_CONFIG, load_yaml
from typed_manifest import check_in_subprocess

ISVC_FILE = K8S_DIR / "inferenceservice.yaml"
V2_HEALTH = {"livenessProbe": "/v2/health/live", "readinessProbe": "/v2/health/ready"}

# KServe's annotations, and what KServe does with them (its pod webhook and raw-deployment
# reconciler, pkg/webhook/admission/pod/metrics_aggregate_injector.go and reconcilers/hpa in
# KServe's repository): with the scraping switch "true" (the annotation, or when it is absent the
# cluster's inferenceservice-config default), the webhook sets the pod's prometheus.io/port to the
# queue-proxy's 9091 and prometheus.io/path to /metrics; autoscalerClass "external" makes KServe
# create no HPA and leave the replica count alone; the predictor's Deployment is <name>-predictor.
SCRAPING = "serving.kserve.io/enable-prometheus-scraping"
AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
QUEUE_PROXY_METRICS = {"prometheus.io/port": "9091", "prometheus.io/path": "/metrics"}


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, Any]]:
    """The file's objects by kind."""
    by_kind = {doc["kind"]: doc for doc in yaml.safe_load_all(ISVC_FILE.read_text(encoding="utf-8")) if doc}
    assert set(by_kind) == {"InferenceService", "HorizontalPodAutoscaler"}
    return by_kind


@pytest.fixture(scope="module")
def manifest(documents) -> dict[str, Any]:
    return documents["InferenceService"]


@pytest.fixture(scope="module")
def autoscaler(documents) -> dict[str, Any]:
    return documents["HorizontalPodAutoscaler"]


@pytest.fixture(scope="module")
def predictor(manifest) -> dict[str, Any]:
    return manifest["spec"]["predictor"]


@pytest.fixture(scope="module")
def server(predictor) -> dict[str, Any]:
    (container,) = predictor["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def test_loads_into_kserves_typed_inference_service_and_round_trips(manifest, typed):
    result = typed["as written"]
    assert result["error"] is None and result["type"] == "V1beta1InferenceService"
    assert (result["round_trip"]["apiVersion"], result["round_trip"]["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    # Serialised back by the SDK: nothing was dropped, renamed or retyped on the way.
    assert result["round_trip"] == manifest


def _rename(path: list[str | int], old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        node = doc
        for part in path:
            node = node[part]
        node[new] = node.pop(old)

    return mutate


def _move_grace_into_the_container(doc: dict[str, Any]) -> None:
    predictor = doc["spec"]["predictor"]
    predictor["containers"][0]["terminationGracePeriodSeconds"] = predictor.pop("terminationGracePeriodSeconds")


def _port_as_words(doc: dict[str, Any]) -> None:
    doc["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"


MUTATIONS = {
    "misspelt readinessProbe": (_rename(["spec", "predictor", "containers", 0], "readinessProbe", "readinesProbe"), "readinesProbe"),
    "misspelt minReplicas": (_rename(["spec", "predictor"], "minReplicas", "minReplica"), "minReplica"),
    "misplaced terminationGracePeriodSeconds": (_move_grace_into_the_container, "terminationGracePeriodSeconds"),
    "wrongly typed containerPort": (_port_as_words, "containerPort"),
}  # fmt: skip


@pytest.fixture(scope="module")
def typed(manifest) -> dict[str, dict[str, Any]]:
    """The manifest as written and each mutated copy, loaded by KServe's SDK in one other process."""
    documents = {"as written": manifest}
    for name, (mutate, _field) in MUTATIONS.items():
        documents[name] = copy.deepcopy(manifest)
        mutate(documents[name])
    return check_in_subprocess(documents, "V1beta1InferenceService")


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_a_misspelt_misplaced_or_mistyped_field_fails(typed, mutation):
    _mutate, field = MUTATIONS[mutation]
    error = typed[mutation]["error"]
    assert error is not None and field in error, typed[mutation]


def test_custom_predictor_speaks_v2_on_the_http_and_grpc_ports(manifest, server, service_port, grpc_port):
    assert manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert server["name"] == "kserve-container"
    env = _env(server)
    assert env["PROTOCOL"] == "v2"
    assert int(env["ATTNZOO_PORT"]) == service_port and int(env["ATTNZOO_GRPC_PORT"]) == grpc_port
    # KServe routes HTTP to the first container port; the gRPC port keeps its number.
    assert [(p["name"], p["containerPort"]) for p in server["ports"]] == [("http", service_port), ("grpc", grpc_port)]


def test_requests_one_gpu_and_runs_on_cuda(server):
    for section in ("limits", "requests"):
        assert int(server["resources"][section]["nvidia.com/gpu"]) == 1
    assert server["args"] == ["--device", "cuda"]


def test_probes_are_the_v2_health_endpoints(server):
    for kind, path in V2_HEALTH.items():
        assert server[kind]["httpGet"] == {"path": path, "port": "http"}
    assert server["startupProbe"]["httpGet"]["path"] == V2_HEALTH["livenessProbe"]
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "room for loading four models"


def test_probe_paths_are_routes_of_the_service(tmp_path):
    from app.main import create_app
    from app.settings import Settings

    routes = set(create_app(Settings(weights_dir=tmp_path)).openapi()["paths"])
    if not any(route.startswith("/v2/") for route in routes):
        pytest.skip("the service on this branch has no KServe v2 routes yet (issue 14 adds them)")
    assert set(V2_HEALTH.values()) <= routes


def _without_image(container: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in container.items() if key != "image"}


def kustomized_image() -> str:
    """The image kustomization.yaml gives deployment.yaml's containers (named ``attnzoo`` there)."""
    (entry,) = load_yaml(K8S_DIR / "kustomization.yaml")["images"]
    return f"{entry.get('newName', entry['name'])}:{entry['newTag']}"


def test_mirrors_the_deployment_weights_init_and_security(k8s_objects, predictor, server):
    pod = k8s_objects[("Deployment", "attnzoo")]["spec"]["template"]["spec"]
    assert [_without_image(c) for c in predictor["initContainers"]] == [_without_image(c) for c in pod["initContainers"]]
    assert predictor["volumes"] == pod["volumes"]
    assert predictor["securityContext"] == pod["securityContext"]
    (deployed,) = [c for c in pod["containers"] if c["name"] == "attnzoo"]
    assert server["volumeMounts"] == deployed["volumeMounts"]
    # Same service settings (PROTOCOL is KServe's own variable).
    assert {k: v for k, v in _env(server).items() if k != "PROTOCOL"} == _env(deployed)


def test_runs_the_image_the_kustomization_sets_for_the_deployment(predictor, server):
    """Not in the kustomization (it needs KServe's CRDs), so the image is written out: the same one."""
    assert {c["image"] for c in [server, *predictor["initContainers"]]} == {kustomized_image()}


def test_pods_are_scraped_at_the_services_metrics_endpoint(k8s_objects, manifest, predictor, server):
    """The pod's prometheus.io/* annotations once KServe has made the pod: the InferenceService's
    and the predictor's annotations, then the webhook's rewrite when the scraping switch is on."""
    isvc_annotations = manifest["metadata"]["annotations"]
    # Set either way, so that a cluster-wide default of "true" cannot apply.
    assert isvc_annotations[SCRAPING] in ("true", "false")
    pod = {**isvc_annotations, **predictor["annotations"]}
    if pod[SCRAPING] == "true":
        pod.update(QUEUE_PROXY_METRICS)

    assert pod["prometheus.io/scrape"] == "true"
    assert int(pod["prometheus.io/port"]) == next(p["containerPort"] for p in server["ports"] if p["name"] == "http")
    job = next(j for j in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"] if j["job_name"] == "attnzoo")
    assert pod["prometheus.io/path"] == job.get("metrics_path", "/metrics")
    deployed = k8s_objects[("Deployment", "attnzoo")]["spec"]["template"]["metadata"]["annotations"]
    assert predictor["annotations"] == deployed


def test_scales_on_queue_depth_like_the_deployment_not_on_kserves_cpu_default(k8s_objects, manifest, predictor, autoscaler):
    assert manifest["metadata"]["annotations"][AUTOSCALER_CLASS] == "external"
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", f"{manifest['metadata']['name']}-predictor")
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (predictor["minReplicas"], predictor["maxReplicas"])
    # The same metric, target and pace as hpa.yaml's (whose metric test_k8s.py checks against the adapter rules).
    deployment_hpa = k8s_objects[("HorizontalPodAutoscaler", "attnzoo")]["spec"]
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert (autoscaler["spec"]["metrics"], autoscaler["spec"]["behavior"]) == (deployment_hpa["metrics"], deployment_hpa["behavior"])
