"""The container engine of the smoke test: Debian's packages, dockerd, and the `docker` CLI.

The client is Debian's own ``/usr/bin/docker`` (20.10, from ``docker.io``), not whatever
``docker`` comes first on PATH: with ``DOCKER_BUILDKIT=1`` it builds with BuildKit by itself,
whereas Docker >= 23 clients (such as a 28.x ``/usr/local/bin/docker``) refuse to use BuildKit
without the buildx plugin, which no Debian 12 package provides. Compose v2 is the
``docker-compose`` package of the next Debian release where the host's own is 1.x (Debian 12's
1.29 rejects the compose file's top-level ``name:``); it is a static Go binary whose only
dependency (libc6 >= 2.34) Debian 12 satisfies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
PACKAGES = ("docker.io", "containerd", "runc", "debootstrap")
CACHE_DIR = Path("/var/cache/attnzoo-smoke")  # kept between runs: downloaded .debs, the base image
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
NEXT_RELEASE = {"bullseye": "bookworm", "bookworm": "trixie"}


class SmokeFailure(Exception):
    """A check or a step of the smoke test failed; the message says which and why."""


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (in environment ``env``, default this process's); its output is captured (or
    written to ``log``). A failure raises :class:`SmokeFailure` with the command and the end of
    its output."""
    if log is None:
        result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
        output = result.stdout + result.stderr
    else:
        with open(log, "w", encoding="utf-8") as handle:
            result = subprocess.run(
                list(cmd), stdout=handle, stderr=subprocess.STDOUT, text=True, timeout=timeout, env=env, cwd=cwd
            )
        output = log.read_text(encoding="utf-8", errors="replace")
        result = subprocess.CompletedProcess(result.args, result.returncode, output, "")
    if check and result.returncode != 0:
        where = f" (full log: {log})" if log else ""
        raise SmokeFailure(f"`{' '.join(cmd)}` exited with {result.returncode}{where}:\n{output[-4000:]}")
    return result


def docker(*args: str, check: bool = True, timeout: float | None = 300, log: Path | None = None) -> str:
    """Debian's docker client with BuildKit on; returns its stdout, stripped."""
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    return run([DOCKER, *args], check=check, timeout=timeout, env=env, log=log).stdout.strip()


def inspect(kind: str, ref: str) -> dict[str, Any]:
    """``docker <kind> inspect ref`` as a dict (kind: container, image, network, volume)."""
    return json.loads(docker(kind, "inspect", ref))[0]


# --------------------------------------------------------------------------- packages


def install_engine() -> list[str]:
    """Install what is missing of docker.io, containerd, runc, debootstrap and compose v2
    (apt; the next release's compose .deb is cached in CACHE_DIR). Returns what was installed."""
    missing = [name for name in PACKAGES if not _installed(name)]
    compose_ok = _compose_v2_works()
    if not missing and compose_ok:
        return []
    run(["apt-get", "update", "-qq"], timeout=300)
    compose = [] if compose_ok else [_compose_v2_package()]
    run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, *compose],
        timeout=900,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    if not _compose_v2_works():
        raise SmokeFailure("`docker compose version` does not work after installing compose v2")
    return missing + (["docker-compose (v2)"] if compose else [])


def _installed(package: str) -> bool:
    result = run(["dpkg-query", "-W", "-f=${Status}", package], check=False)
    return result.returncode == 0 and result.stdout.endswith("install ok installed")


def _compose_v2_works() -> bool:
    if not Path(DOCKER).exists():
        return False
    result = run([DOCKER, "compose", "version", "--short"], check=False)
    major = result.stdout.strip().lstrip("v").split(".")[0]
    return result.returncode == 0 and major.isdigit() and int(major) >= 2


@lru_cache(maxsize=1)
def debian_repositories() -> tuple[tuple[str, str], ...]:
    """(repository URI, suite codename) of the host's Debian ``main`` package lists, from apt
    (after an ``apt-get update`` when apt has no lists yet, as on a fresh machine)."""
    for attempt in range(2):
        lines = run(
            ["apt-get", "indextargets", "--format", "$(ORIGIN)|$(REPO_URI)|$(CODENAME)|$(COMPONENT)|$(IDENTIFIER)"]
        ).stdout.splitlines()
        repos: list[tuple[str, str]] = []
        for line in lines:
            origin, uri, codename, component, identifier = line.split("|")
            if origin == "Debian" and component == "main" and identifier == "Packages" and (uri, codename) not in repos:
                repos.append((uri, codename))
        if repos:
            return tuple(repos)
        if attempt == 0:
            run(["apt-get", "update", "-qq"], timeout=300)
    raise SmokeFailure("apt lists no Debian `main` repository after `apt-get update`: is this a Debian host?")


def debian_mirror() -> tuple[str, str]:
    """(mirror URI, release codename) of the host's Debian release itself (not -updates/-security)."""
    for uri, codename in debian_repositories():
        if "-" not in codename:
            return uri, codename
    raise SmokeFailure(f"no Debian release repository among {debian_repositories()}")


def _compose_v2_package() -> str:
    """What `apt-get install` is given for compose v2: the host's docker-compose where its
    candidate is 2.x, else the path of the next Debian release's .deb (downloaded once)."""
    policy = run(["apt-cache", "policy", "docker-compose"]).stdout
    candidate = re.search(r"Candidate:\s*(\S+)", policy)
    if candidate and candidate[1].startswith("2."):
        return "docker-compose"
    uri, codename = debian_mirror()
    release = NEXT_RELEASE.get(codename)
    if release is None:
        raise SmokeFailure(f"no compose v2 for Debian {codename}: install the docker-compose-plugin by hand")
    folder = CACHE_DIR / f"apt-{release}"
    cached = sorted(folder.glob("docker-compose_2.*.deb"))
    if cached:
        return str(cached[-1])
    for sub in ("lists/partial", "cache/archives/partial"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "sources.list").write_text(f"deb [signed-by={DEBIAN_KEYRING}] {uri} {release} main\n", encoding="utf-8")
    options = [  # apt with that release's lists only, kept apart from the host's own
        f"-oDir::Etc::SourceList={folder / 'sources.list'}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={folder / 'lists'}",
        f"-oDir::Cache={folder / 'cache'}",
        "-oAPT::Sandbox::User=root",
    ]
    run(["apt-get", *options, "update", "-qq"], timeout=300)
    run(["apt-get", *options, "download", "-qq", "docker-compose"], cwd=folder, timeout=600)  # into cwd
    debs = sorted(folder.glob("docker-compose_2.*.deb"))
    if not debs:
        raise SmokeFailure(f"Debian {release} has no docker-compose 2.x")
    return str(debs[-1])


# --------------------------------------------------------------------------- dockerd


class Dockerd:
    """Uses the running dockerd, or starts one and stops it again on exit (only that one)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "dockerd.log"

    def __enter__(self) -> "Dockerd":
        if run([DOCKER, "info"], check=False, timeout=30).returncode == 0:
            return self
        with open(self.log, "wb") as handle:
            self.process = subprocess.Popen(
                [DOCKERD, "--pidfile", str(self.workdir / "dockerd.pid")],
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not killed by a Ctrl-C meant for the smoke; stopped below
            )
        deadline = time.monotonic() + 60
        while run([DOCKER, "info"], check=False, timeout=30).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-3000:]
                self.__exit__()
                raise SmokeFailure(f"dockerd did not start:\n{tail}")
            time.sleep(0.5)
        return self

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # dockerd stops its containerd with it
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_disk_bytes() -> int:
    """Free space where Docker keeps its data (/var/lib/docker, or the nearest existing parent)."""
    path = Path("/var/lib/docker")
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def make_workdir() -> Path:
    """A private temp dir that the container's non-root user can still read (mounted files)."""
    workdir = Path(tempfile.mkdtemp(prefix="attnzoo-smoke-"))
    workdir.chmod(0o755)
    return workdir
