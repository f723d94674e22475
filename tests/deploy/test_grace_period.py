"""Shutdown: the time the orchestrators give the service between SIGTERM and SIGKILL covers the
request deadline, so that no in-flight request is cut (issue 12, item 5).

On SIGTERM the service stops accepting and lets each in-flight request finish or reach its
deadline (ATTNZOO_REQUEST_TIMEOUT_S): uvicorn waits ``app.server.graceful_shutdown_s`` for them,
then the service closes its batchers and exits. The grace period must hold any preStop delay,
that wait, and a margin for the exit. scripts/container-smoke checks
the same for real: requests in flight at SIGTERM are all answered and the container ends within
the compose grace period.
"""

from __future__ import annotations

from typing import Any

import pytest
from deploy_support import parse_duration_s

# Least time left after the graceful wait for closing the batchers and exiting.
EXIT_MARGIN_S = 5.0
POD_SPECS = {  # (kind, name) -> where the pod spec sits in that object
    ("Deployment", "attnzoo"): ("spec", "template", "spec"),
    ("InferenceService", "attnzoo"): ("spec", "predictor"),
}


def _graceful_s(env: dict[str, str]) -> float:
    """How long the service waits for requests in flight after SIGTERM, with the request deadline
    a container runs with (its env, else the settings' default)."""
    from app.server.runner import graceful_shutdown_s
    from app.settings import Settings

    value = env.get("ATTNZOO_REQUEST_TIMEOUT_S")
    return float(graceful_shutdown_s(Settings(request_timeout_s=value) if value else Settings()))


def _pre_stop_s(container: dict[str, Any]) -> float:
    """Seconds the preStop hook holds the container before SIGTERM (``sleep N`` or ``sleep: {seconds}``)."""
    hook = container.get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0.0
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    command = hook["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, f"preStop must be a plain sleep, not {command}"
    return float(command[1])


@pytest.mark.parametrize("key", POD_SPECS, ids=lambda key: key[0])
def test_kubernetes_grace_covers_prestop_and_the_request_deadline(k8s_objects, key):
    pod = k8s_objects[key]
    for field in POD_SPECS[key]:
        pod = pod[field]
    grace = float(pod["terminationGracePeriodSeconds"])
    for container in pod["containers"]:
        env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
        needed = _pre_stop_s(container) + _graceful_s(env) + EXIT_MARGIN_S
        assert grace >= needed, (
            f"{key[0]}: terminationGracePeriodSeconds {grace:.0f} < preStop {_pre_stop_s(container):.0f} "
            f"+ graceful wait {_graceful_s(env):.0f} + {EXIT_MARGIN_S:.0f} s to exit"
        )


@pytest.mark.parametrize("name", ["attnzoo", "attnzoo-cpu"])
def test_compose_stop_grace_covers_the_request_deadline(compose, name):
    service = compose["services"][name]
    # An empty value passes the host's variable through; the host's default is the settings' one.
    env = {k: v or "" for k, v in service["environment"].items()}
    grace = parse_duration_s(service["stop_grace_period"])
    assert grace >= _graceful_s(env) + EXIT_MARGIN_S, f"{name}: stop_grace_period {grace:.0f} s"
