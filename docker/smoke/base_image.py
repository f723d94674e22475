"""A Debian base image made on this host, for machines that cannot pull from a registry.

``debootstrap --variant=minbase`` from the Debian mirror the host's apt already uses, then
``docker import``. The image trusts the host's extra CA certificates (those
``update-ca-certificates`` installed from /usr/local/share/ca-certificates): HTTPS from inside
a build goes through the host's proxy, which may present its own certificate.

The imported image is saved once to ``CACHE_DIR/base-<key>.tar`` and loaded from there on later
runs; ``docker load`` of the same file gives the same image id, so BuildKit's layer cache of the
images built on it stays valid after the image itself was removed. The key covers the recipe,
the mirror and the certificates: a change to any of them makes a new base.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from docker_engine import CACHE_DIR, DOCKER, SmokeFailure, debian_mirror, debian_repositories, docker, run

RECIPE_VERSION = 1  # bump when what _configure() writes changes
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
IMAGE_CONFIG = ('ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'CMD ["/bin/bash"]')


def base_image_tag() -> str:
    """The tag of the base image for this host's mirror and certificates."""
    certificates = [(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in _host_certificates()]
    key = json.dumps([RECIPE_VERSION, debian_repositories(), certificates, IMAGE_CONFIG])
    return f"attnzoo-smoke-base:{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def provide_base_image(tag: str, workdir: Path) -> str:
    """Make ``tag`` exist in the engine (load the cached archive, or debootstrap and import it).
    Returns how: "loaded" or "built"."""
    archive = CACHE_DIR / f"base-{tag.split(':')[1]}.tar"
    if archive.is_file():
        docker("load", "--quiet", "--input", str(archive), timeout=300)
        return "loaded"
    rootfs = workdir / "rootfs"
    uri, codename = debian_mirror()
    debs = CACHE_DIR / f"debootstrap-{codename}"
    debs.mkdir(parents=True, exist_ok=True)
    try:
        run(
            ["debootstrap", "--variant=minbase", "--include=ca-certificates", f"--cache-dir={debs}",
             codename, str(rootfs), uri],
            timeout=900,
            log=workdir / "debootstrap.log",
        )  # fmt: skip
        _configure(rootfs)
        _import(rootfs, tag)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    partial = archive.with_suffix(".partial")
    docker("save", "--output", str(partial), tag, timeout=300)
    partial.rename(archive)
    return "built"


def _host_certificates() -> list[Path]:
    return sorted(HOST_CA_DIR.rglob("*.crt")) if HOST_CA_DIR.is_dir() else []


def _configure(rootfs: Path) -> None:
    """apt sources as on the host, the host's CA certificates, pip told to use the system store."""
    sources = "".join(f"deb {uri} {codename} main\n" for uri, codename in debian_repositories())
    (rootfs / "etc/apt/sources.list").write_text(sources, encoding="utf-8")
    target = rootfs / "usr/local/share/ca-certificates"
    for certificate in _host_certificates():
        destination = target / certificate.relative_to(HOST_CA_DIR)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(certificate, destination)
    run(["chroot", str(rootfs), "update-ca-certificates"], timeout=120)
    # Debian 12's pip (23.0) trusts only its bundled certifi, not the system store.
    (rootfs / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n", encoding="utf-8")
    for leftover in ("var/lib/apt/lists", "var/cache/apt"):
        for path in (rootfs / leftover).glob("*"):
            if path.is_file():
                path.unlink()


def _import(rootfs: Path, tag: str) -> None:
    changes = [arg for change in IMAGE_CONFIG for arg in ("--change", change)]
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
    try:
        imported = subprocess.run(
            [DOCKER, "import", *changes, "-", tag], stdin=tar.stdout, capture_output=True, text=True, timeout=600
        )
    finally:
        tar.stdout.close()  # type: ignore[union-attr]
        tar.wait()
    if imported.returncode != 0 or tar.returncode != 0:
        raise SmokeFailure(f"docker import of the debootstrap tree failed: {imported.stderr[-2000:]}")
