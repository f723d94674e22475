"""docker-compose.yml, the Prometheus config and the Grafana provisioning, checked as data
against the service settings, the CLI and each other (no Docker engine here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from deploy_support import (
    GRAFANA_DIR,
    PROMETHEUS_CONFIG,
    REPO_ROOT,
    interpolate,
    load_yaml,
    parse_duration_s,
)

SERVICES = ("attnzoo", "attnzoo-cpu")


def _dotenv() -> dict[str, str]:
    values = {}
    for line in (REPO_ROOT / ".env").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _enabled(compose: dict[str, Any], profiles: list[str]) -> set[str]:
    """Services `docker compose` starts with these active profiles (compose spec rules)."""
    return {
        name
        for name, service in compose["services"].items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def _volumes(service: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, str]:
    """Short-syntax volumes as {target: source}, variables interpolated."""
    result = {}
    for spec in service.get("volumes", []):
        source, target = interpolate(spec, env).split(":")[:2]
        result[target] = source
    return result


def _gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def _container_port(spec: str) -> int:
    return int(str(spec).split(":")[-1].split("/")[0])


def test_plain_up_starts_the_gpu_service_and_the_cpu_profile_replaces_it(compose):
    default_profiles = _dotenv()["COMPOSE_PROFILES"].split(",")
    assert _enabled(compose, default_profiles) == {"attnzoo", "prometheus", "grafana"}
    # `--profile cpu` overrides COMPOSE_PROFILES: the GPU service is not started on a CPU host.
    cpu_stack = _enabled(compose, ["cpu"])
    assert cpu_stack == {"attnzoo-cpu", "prometheus", "grafana"}
    assert not any(_gpu_devices(compose["services"][name]) for name in cpu_stack)


def test_gpu_service_reserves_an_nvidia_gpu(compose):
    devices = _gpu_devices(compose["services"]["attnzoo"])
    assert len(devices) == 1
    device = devices[0]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert device.get("count") in (1, "all") or device.get("device_ids")


def test_cpu_service_runs_the_same_image_with_device_cpu(compose, service_port):
    from model_zoo.cli import build_parser

    gpu, cpu = compose["services"]["attnzoo"], compose["services"]["attnzoo-cpu"]
    assert cpu["image"] == gpu["image"] and cpu["build"] == gpu["build"]
    # The entrypoint appends the command to `attnzoo serve --host ... --port ...`.
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", str(service_port), *cpu["command"]])
    assert args.device == "cpu"
    # Prometheus scrapes one name whichever profile runs.
    assert "attnzoo" in cpu["networks"]["default"]["aliases"]


@pytest.mark.parametrize("name", SERVICES)
def test_weights_volume(compose, name):
    from model_zoo import registry

    service = compose["services"][name]
    assert service["environment"]["ATTNZOO_WEIGHTS_DIR"] == "/weights"
    source = _volumes(service)["/weights"]
    assert source in compose["volumes"], f"default weights source {source!r} is not a declared named volume"
    # ATTNZOO_WEIGHTS=./weights binds the folder where `attnzoo fetch` puts files on the host.
    bound = _volumes(service, {"ATTNZOO_WEIGHTS": "./weights"})["/weights"]
    assert (REPO_ROOT / bound).resolve() == (registry.REPO_ROOT / "weights").resolve()


@pytest.mark.parametrize("name", SERVICES)
def test_service_ports_are_the_settings_ports_everywhere(compose, name, service_port, grpc_port):
    service = compose["services"][name]
    assert int(service["environment"]["ATTNZOO_PORT"]) == service_port
    assert int(service["environment"]["ATTNZOO_GRPC_PORT"]) == grpc_port
    assert [_container_port(p) for p in service["ports"]] == [service_port, grpc_port]
    url = urlparse(service["healthcheck"]["test"][-1].split("'")[1])
    assert url.port == service_port
    targets = [t for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"] if job["job_name"] == "attnzoo"
               for sc in job["static_configs"] for t in sc["targets"]]  # fmt: skip
    assert targets == [f"attnzoo:{service_port}"]


@pytest.mark.parametrize("name", SERVICES)
def test_healthcheck_is_readiness_with_room_for_model_loading(compose, name):
    check = compose["services"][name]["healthcheck"]
    assert check["test"][0] == "CMD" and check["test"][1] == "python"
    assert "/readyz" in check["test"][-1] and "curl" not in " ".join(check["test"])
    assert parse_duration_s(check["start_period"]) >= 300
    assert parse_duration_s(check["timeout"]) < parse_duration_s(check["interval"])


@pytest.mark.parametrize("name", SERVICES)
def test_environment_names_are_real_settings(compose, name, setting_env_names):
    environment = compose["services"][name]["environment"]
    known = setting_env_names | {"ATTNZOO_FETCH_ON_START"}
    assert set(environment) <= known, f"not settings: {sorted(set(environment) - known)}"
    assert interpolate(environment["ATTNZOO_FETCH_ON_START"]) == "0", "downloading at start must be opt-in"
    assert environment["ATTNZOO_HOST"] == "0.0.0.0"
    # Healthy once one variant serves: a checkpoint that failed to fetch must not fail the stack.
    assert environment["ATTNZOO_STRICT_READINESS"] == "false"


def test_prometheus_uses_the_repo_config(compose):
    prometheus = compose["services"]["prometheus"]
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    mounted = _volumes(prometheus)[config_flag.split("=", 1)[1]]
    assert (REPO_ROOT / mounted).resolve() == PROMETHEUS_CONFIG
    job = next(j for j in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"] if j["job_name"] == "attnzoo")
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_grafana_provisioning_is_wired_to_prometheus_and_the_dashboard(compose, dashboard):
    grafana = compose["services"]["grafana"]
    mounts = {
        target: (REPO_ROOT / source).resolve() for target, source in _volumes(grafana).items() if source.startswith(".")
    }
    assert mounts["/etc/grafana/provisioning"] == GRAFANA_DIR / "provisioning"

    providers = [
        p for f in (GRAFANA_DIR / "provisioning" / "dashboards").glob("*.yml") for p in load_yaml(f)["providers"]
    ]
    assert len(providers) == 1
    dashboards_in_container = providers[0]["options"]["path"]
    assert mounts[dashboards_in_container] == GRAFANA_DIR / "dashboards"
    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (mounts[str(home.parent)] / home.name).is_file()

    sources = [
        d for f in (GRAFANA_DIR / "provisioning" / "datasources").glob("*.yml") for d in load_yaml(f)["datasources"]
    ]
    assert len(sources) == 1 and sources[0]["type"] == "prometheus"
    url = urlparse(sources[0]["url"])
    assert url.hostname == "prometheus" and url.hostname in compose["services"]
    assert [_container_port(p) for p in compose["services"]["prometheus"]["ports"]] == [url.port]
    scrape_interval = load_yaml(PROMETHEUS_CONFIG)["global"]["scrape_interval"]
    assert sources[0]["jsonData"]["timeInterval"] == scrape_interval, "$__rate_interval must fit the scrape interval"

    used = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    used |= {v["datasource"]["uid"] for v in dashboard["templating"]["list"]}
    assert used == {sources[0]["uid"]}


def test_dashboard_has_the_panels_the_issue_asks_for(dashboard):
    exprs_by_title = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in dashboard["panels"]}
    joined = "\n".join(exprs_by_title.values())
    assert "rate(attnzoo_requests_total" in joined
    for quantile in ("0.5", "0.95", "0.99"):
        assert (
            f"histogram_quantile({quantile}, sum by (le, variant) (rate(attnzoo_request_duration_seconds_bucket"
            in joined
        )
        assert (
            f"histogram_quantile({quantile}, sum by (le, stage) (rate(attnzoo_stage_duration_seconds_bucket" in joined
        )
    assert "attnzoo_batch_size_" in joined and "attnzoo_queue_depth" in joined
    assert 'status=~"4.."' in joined and 'status=~"5.."' in joined
    assert "attnzoo_gpu_memory_bytes" in joined
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_third_party_images_are_pinned(compose):
    for name in ("prometheus", "grafana"):
        image = compose["services"][name]["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin a version, not {image!r}"
