"""docker/k8s: the scale-out manifests, checked as data against the image, the CLI, the settings,
the metric contract and each other."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import yaml
from deploy_support import K8S_DIR, PROMETHEUS_CONFIG, load_yaml, parse_dockerfile

ADAPTER_RULES = K8S_DIR / "prometheus-adapter-rules.yaml"
# The gauges the brief's metric contract offers for autoscaling (per pod, no rate needed).
SCALING_GAUGES = {"attnzoo_queue_depth", "attnzoo_inflight_requests"}


def _container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


@pytest.fixture(scope="module")
def deployment(k8s_objects) -> dict[str, Any]:
    return k8s_objects[("Deployment", "attnzoo")]


@pytest.fixture(scope="module")
def server(deployment) -> dict[str, Any]:
    return _container(deployment, "attnzoo")


@pytest.fixture(scope="module")
def adapter_rules(k8s_objects) -> list[dict[str, Any]]:
    config_map = k8s_objects[("ConfigMap", "prometheus-adapter")]
    return yaml.safe_load(config_map["data"]["config.yaml"])["rules"]


def test_kustomization_lists_the_app_manifests():
    kustomization = load_yaml(K8S_DIR / "kustomization.yaml")
    listed = set(kustomization["resources"])
    for name in listed:
        assert (K8S_DIR / name).is_file(), f"kustomization lists a missing file {name}"
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    # The adapter rules go to the adapter's namespace with the adapter's install, not with the app;
    # the KServe InferenceService needs KServe's CRDs and replaces the Deployment where KServe runs.
    assert on_disk - listed == {ADAPTER_RULES.name, "inferenceservice.yaml"}
    assert {i["name"] for i in kustomization["images"]} == {"attnzoo"}


def test_deployment_requests_one_gpu(server):
    for section in ("limits", "requests"):
        assert int(server["resources"][section]["nvidia.com/gpu"]) == 1


def test_probes_use_the_service_health_endpoints(server, service_port):
    assert _port_number(server, "http") == service_port
    assert int(_env(server)["ATTNZOO_PORT"]) == service_port
    probes = {kind: server[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    for probe in probes.values():
        assert _port_number(server, probe["port"]) == service_port
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "room for loading four models"


def test_server_args_are_accepted_by_attnzoo_serve(server, service_port):
    from model_zoo.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "--host", "0.0.0.0", "--port", str(service_port), *server.get("args", [])]
    )
    assert args.device in ("cuda", "auto")


def test_service_routes_http_and_grpc_to_the_pods(k8s_objects, deployment, server, service_port, grpc_port):
    service = k8s_objects[("Service", "attnzoo")]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert set(ports) == {"http", "grpc"}
    assert _port_number(server, ports["http"]["targetPort"]) == service_port
    assert _port_number(server, ports["grpc"]["targetPort"]) == grpc_port == ports["grpc"]["port"]
    assert int(_env(server)["ATTNZOO_GRPC_PORT"]) == grpc_port
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c", "gRPC is plaintext HTTP/2"


def test_environment_names_are_real_settings(deployment, setting_env_names):
    pod = deployment["spec"]["template"]["spec"]
    for container in pod["initContainers"] + pod["containers"]:
        names = set(_env(container))
        assert names <= setting_env_names | {"ATTNZOO_FETCH_ON_START"}, f"{container['name']}: {sorted(names)}"


def test_readiness_is_not_strict(server):
    """Ready once one variant serves: one missing checkpoint must not take the pod out of the Service."""
    assert _env(server)["ATTNZOO_STRICT_READINESS"] == "false"


def test_weights_come_from_the_pvc_filled_by_an_init_container(k8s_objects, deployment, server):
    from model_zoo.cli import build_parser

    pod = deployment["spec"]["template"]["spec"]
    pvc = k8s_objects[("PersistentVolumeClaim", "attnzoo-weights")]
    volume = next(v for v in pod["volumes"] if v.get("persistentVolumeClaim"))
    assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]

    (init,) = pod["initContainers"]
    assert init["image"] == server["image"]
    # `sh -c "attnzoo fetch --all ... || echo ..."`: run for real in test_entrypoint_fetch.py.
    assert init["command"][:2] == ["sh", "-c"]
    fetch_command, _, fallback = init["command"][2].partition(" || ")
    fetch = build_parser().parse_args(shlex.split(fetch_command)[1:])
    assert shlex.split(fetch_command)[0] == "attnzoo" and fetch.command == "fetch" and fetch.all
    assert fallback.startswith("echo "), "a failed download must not fail the init container"
    for container, read_only in ((init, False), (server, True)):
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["mountPath"] == _env(container)["ATTNZOO_WEIGHTS_DIR"] == "/weights"
        assert bool(mount.get("readOnly")) is read_only
    assert _env(server)["ATTNZOO_FETCH_ON_START"] == "0"


def test_pods_run_as_the_image_user(deployment):
    preamble, *stages = parse_dockerfile()
    uid = next(i.args.split("=")[1] for i in stages[-1] if i.keyword == "ARG" and i.args.startswith("APP_UID="))
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert str(security["runAsUser"]) == uid
    assert str(security["fsGroup"]) == uid, "the init container must be able to write the weights volume"


def test_pods_are_annotated_for_scraping(deployment, server):
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == _port_number(server, "http")
    job = next(j for j in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"] if j["job_name"] == "attnzoo")
    assert annotations["prometheus.io/path"] == job.get("metrics_path", "/metrics")


def test_hpa_scales_the_deployment_on_a_prometheus_adapter_metric(k8s_objects, deployment, adapter_rules):
    hpa = k8s_objects[("HorizontalPodAutoscaler", "attnzoo")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    exposed = {rule["name"]["as"] for rule in adapter_rules}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] in exposed
    assert metric["pods"]["target"]["type"] == "AverageValue"
    assert float(metric["pods"]["target"]["averageValue"]) > 0


def test_adapter_rules_map_the_service_gauges_to_pods(adapter_rules):
    assert adapter_rules
    for rule in adapter_rules:
        series = re.match(r"([a-z_:][a-z0-9_:]*)", rule["seriesQuery"].strip("'\""))[1]
        assert series in SCALING_GAUGES
        assert re.fullmatch(rule["name"]["matches"], series)
        assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
        assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert placeholder in rule["metricsQuery"]
