"""scripts/container-smoke: build the attnzoo image on this machine and check it as deployed.

On a root Debian host with apt (no registry needed): installs Debian's container engine, starts
dockerd if none runs, builds a Debian base image from the host's mirror, builds the project's
image on it, and checks, each step printed with its time:

- the container runs as a non-root user, and the image's HEALTHCHECK turns healthy;
- ``/detect`` on a mounted synthetic checkpoint answers what the local engine answers for the
  same image (same label, IoU >= 0.99, |dscore| <= 2e-3);
- SIGTERM with requests in flight: all answered, exit 0 within the compose grace period;
- ``docker compose config`` accepts docker-compose.yml (compose v2), both profiles;
- the compose CPU profile comes up with a Prometheus built from Debian's package, and
  Prometheus scrapes the service (target up, a /detect latency sample). Grafana is left out:
  its image only comes from a registry (see compose.smoke.yml).

Everything it starts is removed again by id, also when a step fails or the run is interrupted:
containers, the compose project's networks and volumes, the images it built or loaded, its temp
dir, and dockerd if it started it. Kept on purpose for the next run: /var/cache/attnzoo-smoke
(downloaded .debs, the base image archive) and BuildKit's layer cache in the engine
(``docker builder prune`` frees it).

    scripts/container-smoke                  run it (exit 1 on any failure)
    scripts/container-smoke --if-possible    the same, or exit 0 with the reason it cannot run here
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from base_image import base_image_tag, provide_base_image
from compose_stack import REPO_ROOT, SMOKE_OVERRIDE, ComposeStack, parse_duration_s
from docker_engine import (
    CACHE_DIR,
    Dockerd,
    SmokeFailure,
    debian_mirror,
    docker,
    free_disk_bytes,
    install_engine,
    make_workdir,
)
from smoke_checks import (
    SCORE_THR,
    check_drain,
    check_non_root,
    check_parity,
    check_prometheus_scrapes,
    container_address,
    detect,
    wait_healthy,
    wait_ready,
)
from synthetic_zoo import TEST_VARIANT, UNREACHABLE, hash_named, write_metafile

MIN_FREE_DISK = 20 * 10**9
SERVICE_PORT = 8000
PROMETHEUS_PORT = 9090
DRAIN_REQUESTS = 2  # in flight at SIGTERM; more would risk the 30 s deadline on a loaded 2-core machine
HEALTH_TIMEOUT_S = 300


class Progress:
    """Prints each step with the time since the start and the time the step took."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> str:
        seconds = time.monotonic() - self.start
        return f"{int(seconds // 60)}:{seconds % 60:04.1f}"

    @contextmanager
    def step(self, title: str) -> Iterator[list[str]]:
        """``with progress.step("...") as notes: notes.append("what was seen")``."""
        print(f"[{self.elapsed()}] {title} ...", flush=True)
        began, notes = time.monotonic(), []
        yield notes
        print(f"[{self.elapsed()}]   ok ({time.monotonic() - began:.1f} s){': ' if notes else ''}{'; '.join(notes)}", flush=True)


def why_not_here() -> str | None:
    """Why this machine cannot run the smoke test, or None when it can."""
    if os.geteuid() != 0:
        return "not root (installing packages and running dockerd need root)"
    if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        return "not a Debian host with apt-get"
    free = free_disk_bytes()
    if free < MIN_FREE_DISK:
        return f"only {free / 1e9:.1f} GB free for /var/lib/docker (needs {MIN_FREE_DISK / 1e9:.0f} GB)"
    try:
        uri, codename = debian_mirror()
        urllib.request.urlopen(f"{uri.rstrip('/')}/dists/{codename}/InRelease", timeout=20).close()
    except (OSError, SmokeFailure) as exc:
        return f"the Debian mirror is not reachable ({exc})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/container-smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--if-possible", action="store_true", help="exit 0 with the reason when this machine cannot run it")
    args = parser.parse_args(argv)
    reason = why_not_here()
    if reason is not None:
        print(f"container-smoke: {'skipped' if args.if_possible else 'cannot run'}: {reason}", file=sys.stderr)
        return 0 if args.if_possible else 2
    for sig in (signal.SIGTERM, signal.SIGHUP):  # clean up on these as on Ctrl-C
        signal.signal(sig, _exit_on_signal)
    progress = Progress()
    try:
        with ExitStack() as cleanup:
            run_smoke(progress, cleanup)
            print(f"[{progress.elapsed()}] cleaning up ...", flush=True)
    except SmokeFailure as exc:
        print(f"[{progress.elapsed()}] container-smoke FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"[{progress.elapsed()}] container-smoke interrupted (cleaned up)", file=sys.stderr, flush=True)
        return 130
    print(f"[{progress.elapsed()}] container-smoke passed", flush=True)
    return 0


def _exit_on_signal(signum: int, frame: object) -> None:
    print(f"container-smoke: {signal.Signals(signum).name}, cleaning up", file=sys.stderr, flush=True)
    sys.exit(128 + signum)  # SystemExit unwinds the ExitStack: everything started is removed


def run_smoke(progress: Progress, cleanup: ExitStack) -> None:
    run_id = f"{os.getpid()}-{int(time.time())}"
    workdir = make_workdir()
    cleanup.callback(_removed, "temp dir", str(workdir), lambda: shutil.rmtree(workdir, ignore_errors=True))

    # The synthetic checkpoint takes the engine a while on CPU: written while the images build.
    zoo_writer = _start_synth_weights(workdir / "zoo", cleanup)
    with progress.step("engine: docker.io, containerd, runc, debootstrap, compose v2 (Debian packages)") as notes:
        notes.append(f"installed {', '.join(installed)}" if (installed := install_engine()) else "already installed")
    with progress.step("dockerd") as notes:
        dockerd = cleanup.enter_context(Dockerd(workdir))
        notes.append("started here (stopped at the end)" if dockerd.started_here else "already running")
    cleanup.callback(_report_caches)  # runs after the removals below, before dockerd stops

    image, prometheus_image = _build_images(progress, cleanup, run_id, workdir)
    with progress.step("docker compose config (compose v2): docker-compose.yml, default and cpu profiles") as notes:
        validated = ComposeStack(f"attnzoo-smoke-{run_id}")
        default, cpu = validated.config(), validated.config("cpu")
        grace_s = parse_duration_s(cpu["services"]["attnzoo-cpu"]["stop_grace_period"])
        notes.append(f"default: {sorted(default['services'])}; cpu: {sorted(cpu['services'])}; stop grace {grace_s:.0f} s")
    with progress.step(f"synthetic zoo: attnzoo synth-weights --variant {TEST_VARIANT} (started first), test scale") as notes:
        zoo, metafile = _finish_synthetic_zoo(zoo_writer, workdir / "zoo")
        notes.append(str(zoo))
    scene = _test_image()
    _check_container(progress, cleanup, image, zoo, metafile, scene, grace_s)
    _check_compose_stack(progress, cleanup, f"attnzoo-smoke-{run_id}", image, prometheus_image, zoo, scene)


def _build_images(progress: Progress, cleanup: ExitStack, run_id: str, workdir: Path) -> tuple[str, str]:
    """The Debian base, the project's image and the Prometheus image on it; their tags."""
    with progress.step("base image: debootstrap --variant=minbase from the host's mirror, docker import") as notes:
        base = base_image_tag()
        _remove_image_at_exit(cleanup, base, existed=_image_exists(base))
        notes.append(f"{base} {provide_base_image(base, workdir)}")
    image = f"attnzoo-smoke:{run_id}"
    with progress.step(f"build the project's image on it ({image})") as notes:
        notes.append(_build(cleanup, image, REPO_ROOT, workdir / "build.log", base))
    prometheus_image = f"attnzoo-smoke-prometheus:{run_id}"
    with progress.step(f"build Prometheus from Debian's package ({prometheus_image})") as notes:
        notes.append(
            _build(cleanup, prometheus_image, SMOKE_OVERRIDE.parent, workdir / "prometheus-build.log", base,
                   dockerfile=SMOKE_OVERRIDE.with_name("prometheus.Dockerfile"))
        )  # fmt: skip
    return image, prometheus_image


def _check_container(
    progress: Progress, cleanup: ExitStack, image: str, zoo: Path, metafile: Path, scene: bytes, grace_s: float
) -> None:
    """The image run by `docker run`: user, HEALTHCHECK, /detect parity, SIGTERM drain."""
    with progress.step("container: non-root, HEALTHCHECK healthy") as notes:
        container = _run_container(cleanup, image, zoo)
        notes.append(f"healthy after {wait_healthy(container, HEALTH_TIMEOUT_S):.1f} s")
        notes.append(check_non_root(container))
    url = f"http://{container_address(container)}:{SERVICE_PORT}"
    with progress.step("/detect in the container vs the local engine (parity criterion)") as notes:
        notes.append(f"ready after {wait_ready(url, HEALTH_TIMEOUT_S):.1f} s more")
        notes.append(check_parity(detect(url, scene, TEST_VARIANT), _local_detections(zoo, metafile, scene)))
    with progress.step(f"SIGTERM with {DRAIN_REQUESTS} requests in flight") as notes:
        notes.append(check_drain(container, url, scene, TEST_VARIANT, requests=DRAIN_REQUESTS, grace_s=grace_s))


def _check_compose_stack(
    progress: Progress, cleanup: ExitStack, project: str, image: str, prometheus_image: str, zoo: Path, scene: bytes
) -> None:
    """The compose file's CPU profile (Grafana left out) with the smoke's images; Prometheus scrapes."""
    with progress.step("compose --profile cpu up attnzoo-cpu prometheus; Prometheus scrapes the service") as notes:
        stack = ComposeStack(
            project,
            overrides=(SMOKE_OVERRIDE,),
            env={"ATTNZOO_WEIGHTS": str(zoo), "ATTNZOO_SMOKE_IMAGE": image, "ATTNZOO_SMOKE_PROMETHEUS_IMAGE": prometheus_image},
        )
        cleanup.callback(_removed, "compose project", stack.project, stack.remove)
        stack.up("cpu", ["attnzoo-cpu", "prometheus"], timeout_s=HEALTH_TIMEOUT_S)
        service_url = f"http://{container_address(stack.container_id('attnzoo-cpu'))}:{SERVICE_PORT}"
        detect(service_url, scene, TEST_VARIANT)
        prometheus_url = f"http://{container_address(stack.container_id('prometheus'))}:{PROMETHEUS_PORT}"
        notes.append(check_prometheus_scrapes(prometheus_url, "attnzoo", TEST_VARIANT, timeout_s=90))


def _build(cleanup: ExitStack, tag: str, context: Path, log: Path, base: str, dockerfile: Path | None = None) -> str:
    """``docker build`` with BuildKit; the image is removed at exit. Returns a summary."""
    options = ["--file", str(dockerfile)] if dockerfile else []
    docker("build", "--progress=plain", "--build-arg", f"BASE_IMAGE={base}", *options, "--tag", tag, str(context),
           timeout=1800, log=log)  # fmt: skip
    _remove_image_at_exit(cleanup, tag, existed=False)
    text = log.read_text(encoding="utf-8", errors="replace")
    steps = set(re.findall(r"^#(\d+) \[(?!internal\])", text, re.M))  # the Dockerfile's own steps
    cached = set(re.findall(r"^#(\d+) CACHED", text, re.M))
    size = int(docker("image", "inspect", "--format", "{{.Size}}", tag))
    return f"{len(cached & steps)} of {len(steps)} steps cached, {size / 1e9:.2f} GB"


def _image_exists(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False) not in ("", "[]")


def _remove_image_at_exit(cleanup: ExitStack, ref: str, *, existed: bool) -> None:
    """Remove ``ref``'s image by id at exit, unless it was there before this run."""
    if existed:
        return

    def remove() -> None:
        image_id = docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
        if image_id.startswith("sha256:"):
            docker("image", "rm", "--force", image_id, check=False)
            print(f"  removed image {ref} ({image_id[7:19]})")

    cleanup.callback(remove)


def _removed(kind: str, ref: str, remove) -> None:
    remove()
    print(f"  removed {kind} {ref}")


def _start_synth_weights(zoo: Path, cleanup: ExitStack) -> subprocess.Popen[str]:
    """``attnzoo synth-weights`` (the engine's CLI) writing ``zoo/synthetic.pth``, in the background."""
    zoo.mkdir(mode=0o755)
    cmd = [str(Path(sys.executable).with_name("attnzoo")), "synth-weights", "--variant", TEST_VARIANT,
           "--out", str(zoo / "synthetic.pth")]  # fmt: skip
    writer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop() -> None:  # only does something when the smoke failed before the writer ended
        if writer.poll() is None:
            writer.kill()
            writer.wait()

    cleanup.callback(stop)
    return writer


def _finish_synthetic_zoo(writer: subprocess.Popen[str], zoo: Path) -> tuple[Path, Path]:
    """Wait for the checkpoint, name it by its hash, write the metafile; all readable by the
    container's user."""
    output, _ = writer.communicate(timeout=600)
    if writer.returncode != 0:
        raise SmokeFailure(f"attnzoo synth-weights exited with {writer.returncode}:\n{output[-3000:]}")
    checkpoint = hash_named(zoo / "synthetic.pth", TEST_VARIANT)
    metafile = write_metafile(zoo, {TEST_VARIANT: f"{UNREACHABLE}/{checkpoint.name}"})
    for path in [zoo, *zoo.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return zoo, metafile


def _run_container(cleanup: ExitStack, image: str, zoo: Path) -> str:
    """The image as `docker run` starts it, the zoo mounted read-only as /weights.
    --health-interval only makes Docker run the image's own HEALTHCHECK command more often."""
    container = docker(
        "run", "--detach", "--init", "--health-interval", "2s",
        "--volume", f"{zoo}:/weights:ro",
        "--env", "ATTNZOO_METAFILE=/weights/metafile.yml",
        image, "--device", "cpu",
    )  # fmt: skip
    cleanup.callback(_removed, "container", container[:12], lambda: docker("rm", "--force", container, check=False))
    return container


def _test_image() -> bytes:
    """The calibration scene the synthetic weights detect objects in, as a 320x240 PNG."""
    import cv2

    from model_zoo.synth import calibration_image

    ok, png = cv2.imencode(".png", cv2.resize(calibration_image(0), (320, 240), interpolation=cv2.INTER_AREA))
    if not ok:
        raise SmokeFailure("could not encode the test image")
    return png.tobytes()


def _local_detections(zoo: Path, metafile: Path, image: bytes):
    from model_zoo import load_detector, load_registry

    detector = load_detector(TEST_VARIANT, registry=load_registry(metafile), weights_dir=zoo, device="cpu")
    return detector.predict(image, score_thr=SCORE_THR)


def _report_caches() -> None:
    """What stays on disk for the next run (after everything this run made is removed)."""
    build_cache = re.search(r"^Build Cache\s+\d+\s+\d+\s+(\S+)", docker("system", "df", check=False), re.M)
    print(f"  kept: {CACHE_DIR} ({_du(CACHE_DIR) / 1e6:.0f} MB), the engine's build cache "
          f"({build_cache[1] if build_cache else '?'}; `docker builder prune` frees it)")  # fmt: skip


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


if __name__ == "__main__":
    sys.exit(main())
