"""The checks scripts/container-smoke makes of running containers, over real HTTP.

Each check raises :class:`SmokeFailure` saying what it saw. The containers are reached on their
bridge-network address (no host port is published, so ports busy on the host do not matter).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

import httpx
from compose_stack import REPO_ROOT
from docker_engine import DOCKER, SmokeFailure, docker, inspect, run
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")
SCORE_THR = 0.05  # the test config's own threshold: compare every detection the model keeps


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, interval_s: float = 0.5) -> T:
    """Call ``probe`` until it returns something other than None; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise SmokeFailure(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def container_address(container_id: str) -> str:
    """The container's IPv4 address on its (first) network."""
    networks = inspect("container", container_id)["NetworkSettings"]["Networks"]
    addresses = [n["IPAddress"] for n in networks.values() if n.get("IPAddress")]
    if not addresses:
        raise SmokeFailure(f"container {container_id[:12]} has no network address")
    return addresses[0]


def logs(container_id: str, lines: int = 40) -> str:
    """The end of the container's output (stdout and stderr)."""
    result = run([DOCKER, "logs", "--tail", str(lines), container_id], check=False)
    return result.stdout + result.stderr


def wait_healthy(container_id: str, timeout_s: float) -> float:
    """Wait until Docker reports the container's HEALTHCHECK healthy; returns the seconds taken."""
    start = time.monotonic()

    def probe() -> bool | None:
        state = inspect("container", container_id)["State"]
        if not state["Running"]:
            raise SmokeFailure(f"the container exited ({state['ExitCode']}):\n{logs(container_id)}")
        health = state.get("Health", {}).get("Status")
        if health == "unhealthy":
            raise SmokeFailure(f"HEALTHCHECK reports unhealthy:\n{state['Health']['Log'][-1]}\n{logs(container_id)}")
        return True if health == "healthy" else None

    wait_for("the HEALTHCHECK to report healthy", probe, timeout_s)
    return time.monotonic() - start


def wait_ready(url: str, timeout_s: float) -> float:
    """Wait until the service's /readyz answers 200 (a variant loaded and warm); returns seconds."""
    start = time.monotonic()

    def ready() -> bool | None:
        return True if httpx.get(f"{url}/readyz", timeout=10).status_code == 200 else None

    wait_for(f"{url}/readyz to answer 200", _tolerant(ready), timeout_s)
    return time.monotonic() - start


def check_non_root(container_id: str) -> str:
    """Every process of the container runs as a non-root user; returns the user and uids seen."""
    configured = inspect("container", container_id)["Config"]["User"]
    if configured in ("", "root", "0") or configured.startswith("0:"):
        raise SmokeFailure(f"the image's USER is {configured or 'unset (root)'}")
    table = docker("top", container_id, "-eo", "pid,uid,args").splitlines()[1:]  # docker top needs pid
    uids = {line.split()[1] for line in table}
    if not uids or "0" in uids:
        raise SmokeFailure("a process of the container runs as root:\n" + "\n".join(table))
    return f"USER {configured}, uids {sorted(uids)}"


def detect(url: str, image: bytes, variant: str, *, timeout_s: float = 120) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/detect",
        params={"variant": variant, "score_thr": SCORE_THR},
        files={"file": ("scene.png", image, "image/png")},
        timeout=timeout_s,
    )
    if response.status_code != 200:
        raise SmokeFailure(f"/detect answered {response.status_code}: {response.text[:500]}")
    return response.json()


def check_parity(served: dict[str, Any], local: Any) -> str:
    """The served detections equal the local engine's by the parity criterion of tools/parity.py
    (same label, IoU >= 0.99, |dscore| <= 2e-3, one to one); ``local`` is a DetectionResult."""
    parity = _parity_tool()
    remote = served["detections"]
    here = local.detections
    if not here:
        raise SmokeFailure("the local engine finds nothing in the test image: the comparison would be empty")
    match = parity.match_detections(
        [d.bbox for d in here], [d.score for d in here], [d.label for d in here],
        [d["bbox"] for d in remote], [d["score"] for d in remote], [d["label"] for d in remote],
    )  # fmt: skip
    if not match.ok:
        raise SmokeFailure(
            f"container and local engine differ: {match.matched} matched of {len(here)} local / {len(remote)} "
            f"served; unmatched local {match.unmatched_reference}, served {match.unmatched_ours}"
        )
    return f"{match.matched} detections match (min IoU {match.min_iou:.6f}, max |dscore| {match.max_score_diff:.1e})"


def _parity_tool():
    """tools/parity.py, whose matching the parity tests use (it is a script, not a package)."""
    name = "attnzoo_parity_tool"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tools" / "parity.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve their module by name
        spec.loader.exec_module(module)
    return sys.modules[name]


def inflight(url: str) -> float:
    """The service's /detect requests in progress (attnzoo_inflight_requests summed)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "attnzoo_inflight_requests"
        for sample in family.samples
    )


# How a drained service may end: uvicorn exits 0, or re-raises the SIGTERM it handled once it has
# shut down (143 = 128 + 15 through the container's init). 137 would be a SIGKILL.
DRAINED_EXIT_CODES = (0, 128 + 15)


def check_drain(container_id: str, url: str, image: bytes, variant: str, *, requests: int, grace_s: float) -> str:
    """With ``requests`` /detect requests in flight, SIGTERM: every one is answered 200 and the
    container ends by itself (DRAINED_EXIT_CODES) within ``grace_s``, before any SIGKILL."""
    with ThreadPoolExecutor(requests) as pool:
        futures = [pool.submit(detect, url, image, variant) for _ in range(requests)]
        wait_for(f"{requests} requests in flight", lambda: True if inflight(url) >= requests else None, 60, 0.05)
        signalled = time.monotonic()
        docker("kill", "--signal", "TERM", container_id)
        exit_code = int(docker("wait", container_id, timeout=grace_s + 30))
        stopped_after = time.monotonic() - signalled
        try:
            answers = [future.result() for future in futures]
        except (httpx.HTTPError, SmokeFailure) as exc:
            raise SmokeFailure(f"a request in flight at SIGTERM was not answered: {exc!r}") from None
    if exit_code not in DRAINED_EXIT_CODES or inspect("container", container_id)["State"]["OOMKilled"]:
        raise SmokeFailure(f"exit code {exit_code} after SIGTERM:\n{logs(container_id)}")
    if stopped_after > grace_s:
        raise SmokeFailure(f"took {stopped_after:.1f} s to stop, longer than the {grace_s:.0f} s grace period")
    detections = {len(answer["detections"]) for answer in answers}
    return (
        f"{len(answers)} in-flight requests answered 200 ({detections} detections); "
        f"exit {exit_code} {stopped_after:.1f} s after SIGTERM (grace {grace_s:.0f} s)"
    )


def check_prometheus_scrapes(prometheus_url: str, job: str, variant: str, timeout_s: float) -> str:
    """Prometheus' HTTP API shows the ``job`` target up and a /detect latency sample of ``variant``."""

    def target_up() -> dict[str, Any] | None:
        targets = httpx.get(f"{prometheus_url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        mine = [t for t in targets if t["labels"].get("job") == job]
        return mine[0] if mine and mine[0]["health"] == "up" else None

    def latency_sample() -> float | None:
        query = f'sum(attnzoo_request_duration_seconds_count{{job="{job}",variant="{variant}"}})'
        result = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": query}, timeout=10).json()
        values = [float(r["value"][1]) for r in result["data"]["result"]]
        return values[0] if values and values[0] >= 1 else None

    target = wait_for(f"Prometheus to report the {job} target up", _tolerant(target_up), timeout_s, 1.0)
    count = wait_for("a latency sample in Prometheus", _tolerant(latency_sample), timeout_s, 1.0)
    return f"target {target['scrapeUrl']} up, {count:.0f} /detect latency sample(s) of {variant}"


def _tolerant(probe: Callable[[], T | None]) -> Callable[[], T | None]:
    """``probe`` with connection errors counted as 'not yet' (Prometheus may still be starting)."""

    def wrapped() -> T | None:
        try:
            return probe()
        except httpx.TransportError:
            return None

    return wrapped
