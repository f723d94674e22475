"""docker/k8s: the scale-out manifests, checked against Kubernetes' own schemas (kubernetes-validate),
rendered by kustomize (kubectl's), and as data against the image, the CLI, the settings, the
metric contract and each other."""

from __future__ import annotations

import copy
import re
import shlex
import shutil
import subprocess
from importlib.metadata import version
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_support import K8S_DIR, PROMETHEUS_CONFIG, load_yaml, parse_dockerfile

ADAPTER_RULES = K8S_DIR / "prometheus-adapter-rules.yaml"
# The gauges the brief's metric contract offers for autoscaling (per pod, no rate needed).
SCALING_GAUGES = {"attnzoo_queue_depth", "attnzoo_inflight_requests"}
# The Kubernetes release whose OpenAPI schemas the manifests are checked against.
KUBERNETES_VERSION = "1.32.0"
# Objects of KServe's API group are checked by KServe's typed models instead (test_kserve.py).
KSERVE_API_GROUP = "serving.kserve.io/"
IMAGE_KEY = "attnzoo"  # the image name the manifests' containers give, which the kustomization sets
KUBECTL_MISSING = (
    "KUBECTL NOT INSTALLED: this test renders docker/k8s with kubectl's kustomize "
    "(`kubectl kustomize`, no cluster needed); the development and CI machines have it"
)


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


def _kserve_files() -> set[str]:
    return {
        path.name
        for path in K8S_DIR.glob("*.yaml")
        if any(doc and str(doc.get("apiVersion", "")).startswith(KSERVE_API_GROUP) for doc in yaml.safe_load_all(path.read_text()))
    }


def test_kustomization_lists_the_app_manifests():
    kustomization = load_yaml(K8S_DIR / "kustomization.yaml")
    listed = set(kustomization["resources"])
    for name in listed:
        assert (K8S_DIR / name).is_file(), f"kustomization lists a missing file {name}"
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    # The adapter rules go to the adapter's namespace with the adapter's install, not with the app;
    # the KServe InferenceServices need KServe's CRDs and replace the Deployment where KServe runs.
    assert "inferenceservice.yaml" in _kserve_files()
    assert on_disk - listed == {ADAPTER_RULES.name} | _kserve_files()
    assert {i["name"] for i in kustomization["images"]} == {IMAGE_KEY}


def test_kustomization_sets_the_image_of_this_release():
    """A full reference, tagged with the package version: not the bare key, not `latest`."""
    (image,) = load_yaml(K8S_DIR / "kustomization.yaml")["images"]
    assert image["newName"] and image["newTag"] == version("attnzoo")


@pytest.fixture(scope="module")
def kustomized() -> list[dict[str, Any]]:
    """``kubectl kustomize docker/k8s``: the objects `kubectl apply -k docker/k8s` would create."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(KUBECTL_MISSING)
    done = subprocess.run([kubectl, "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _images(node: Any) -> list[str]:
    """Every container's and init container's image anywhere in ``node``."""
    if isinstance(node, list):
        return [image for item in node for image in _images(item)]
    if not isinstance(node, dict):
        return []
    found = [c["image"] for key in ("containers", "initContainers") for c in node.get(key) or [] if isinstance(c, dict)]
    return found + [image for key, value in node.items() if key not in ("containers", "initContainers") for image in _images(value)]


def test_kustomize_gives_every_container_the_kustomizations_image(kustomized):
    (image,) = load_yaml(K8S_DIR / "kustomization.yaml")["images"]
    images = _images(kustomized)
    assert len(images) == 2  # the server and the weights init container
    assert set(images) == {f"{image['newName']}:{image['newTag']}"}
    assert {(doc["kind"], doc["metadata"]["name"]) for doc in kustomized} == {
        ("Deployment", "attnzoo"),
        ("Service", "attnzoo"),
        ("HorizontalPodAutoscaler", "attnzoo"),
        ("PersistentVolumeClaim", "attnzoo-weights"),
    }


def _kubernetes_objects() -> list[tuple[str, dict[str, Any]]]:
    """Every object of docker/k8s/*.yaml outside KServe's API group, with where it comes from."""
    objects = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and not doc["apiVersion"].startswith(KSERVE_API_GROUP):
                objects.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return objects


@pytest.mark.parametrize(("where", "manifest"), _kubernetes_objects(), ids=[where for where, _ in _kubernetes_objects()])
def test_every_object_is_valid_for_kubernetes(where, manifest):
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_kustomized_objects_are_valid_for_kubernetes(kustomized):
    for manifest in kustomized:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["spec", "template", "spec", "containers", 0, "imagePullPolicyy"], "IfNotPresent"),  # misspelt
        (["spec", "template", "spec", "terminationGracePeriodSecond"], 50),  # misspelt
        (["spec", "replicas"], "one"),  # wrongly typed
    ],
)
def test_the_schema_check_refuses_a_misspelt_or_mistyped_field(deployment, path, value):
    broken = copy.deepcopy(deployment)
    node = broken
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError) as error:
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    assert str(path[-1]) in str(error.value.message) or list(error.value.path)[-1] == path[-1]


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
