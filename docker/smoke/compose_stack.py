"""docker-compose.yml driven by compose v2 for the smoke test: validation, the CPU profile up
with the smoke's overrides (compose.smoke.yml), and removal of everything the project created."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from docker_engine import DOCKER, docker, run

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
SMOKE_OVERRIDE = Path(__file__).with_name("compose.smoke.yml")
PROJECT_LABEL = "com.docker.compose.project"


def parse_duration_s(text: str) -> float:
    """Compose/Go duration (``10m``, ``1m30s``, ``15s``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


class ComposeStack:
    """One compose project (``-p project``) over docker-compose.yml and optional overrides."""

    def __init__(self, project: str, *, overrides: tuple[Path, ...] = (), env: dict[str, str] | None = None) -> None:
        self.project = project
        self.files = (COMPOSE_FILE, *overrides)
        self.profiles: list[str] = []  # those `up` was given: `down` only sees their services
        # The host's ATTNZOO_* variables would pass through to the services: only ours count.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ATTNZOO_")} | (env or {})

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        files = [arg for path in self.files for arg in ("-f", str(path))]
        cmd = [DOCKER, "compose", "-p", self.project, *files, *args]
        return run(cmd, timeout=timeout, env=self.env, check=check).stdout

    def config(self, *profiles: str) -> dict[str, Any]:
        """The resolved configuration (validated by compose) with these profiles active."""
        options = [arg for profile in profiles for arg in ("--profile", profile)]
        return json.loads(self.compose(*options, "config", "--format", "json"))

    def up(self, profile: str, services: list[str], *, timeout_s: float) -> None:
        """Start ``services`` of ``profile`` from local images and wait until they are healthy."""
        self.profiles.append(profile)
        self.compose(
            "--profile", profile, "up", "--detach", "--no-build", "--wait", "--wait-timeout", str(int(timeout_s)),
            *services, timeout=timeout_s + 60,
        )  # fmt: skip

    def container_id(self, service: str) -> str:
        ids = docker("ps", "-q", "--filter", f"label={PROJECT_LABEL}={self.project}",
                     "--filter", f"label=com.docker.compose.service={service}").split()  # fmt: skip
        if len(ids) != 1:
            raise RuntimeError(f"expected one running container of {service}, found {ids}")
        return ids[0]

    def remove(self) -> None:
        """Take the project down, then remove by id whatever still carries its label
        (containers, networks, volumes)."""
        profiles = [arg for profile in self.profiles for arg in ("--profile", profile)]
        self.compose(*profiles, "down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=180, check=False)
        label = f"label={PROJECT_LABEL}={self.project}"
        for kind, remove in (("container", ("rm", "-f")), ("network", ("network", "rm")), ("volume", ("volume", "rm"))):
            listing = ("ps", "-aq") if kind == "container" else (kind, "ls", "-q")
            for ref in docker(*listing, "--filter", label).split():
                docker(*remove, ref, check=False)
                print(f"  removed {kind} {ref[:12]} left by `compose down`")
