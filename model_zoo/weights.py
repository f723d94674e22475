"""Weights files: the sha256 hash-prefix check and a verified, resumable, atomic download.

OpenMMLab and torch.hub name every checkpoint ``<stem>-<first 8+ hex of its sha256>.<ext>``;
this module checks that prefix on every file it downloads or is asked to load.

Downloading ``url`` to ``dest`` (:func:`fetch_weights`) goes through these steps:

1. Take the lock ``<dir>/.locks/<name>.lock``. A second fetch of the same file waits there
   and then finds the verified file in place.
2. Stream into ``<name>.part`` in the same directory. If a ``.part`` was left by a cut, ask for
   the rest with ``Range: bytes=<size>-``. A ``206`` reply is appended; a ``200`` means the
   server ignores ranges, so the file starts over.
3. A connection cut or a stall after some data has arrived resumes at once, up to
   ``_MAX_ATTEMPTS`` times. Otherwise the ``.part`` is kept for the next fetch to resume, unless
   it could not be written (a full disk): then it is deleted.
4. fsync the file, check the sha256 prefix (a mismatch deletes the ``.part``), then
   ``os.replace`` it onto ``dest``. The move is atomic within one filesystem.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx
from filelock import FileLock, Timeout
from tqdm import tqdm

from model_zoo.atomic_files import fsync_dir
from model_zoo.errors import DownloadError, HashMismatchError

_HASH_SUFFIX = re.compile(r"-([0-9a-f]{8,})\.[A-Za-z0-9]+$")
_CHUNK = 1 << 20
_MAX_ATTEMPTS = 5  # HTTP requests per download, counting resumes after a cut

DEFAULT_READ_TIMEOUT_S = 30.0  # longest silence from the server while reading, seconds
DEFAULT_CONNECT_TIMEOUT_S = 10.0

Log = Callable[[str], None]


def hash_prefix_of(filename: str | os.PathLike[str]) -> str | None:
    """The hex digits after the last '-' of the file name (``..._20200130-403cccba.pth`` → ``403cccba``)."""
    match = _HASH_SUFFIX.search(Path(filename).name)
    return match.group(1) if match else None


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_weights(path: str | os.PathLike[str], hash_prefix: str | None) -> str:
    """The sha256 of ``path``, which must start with ``hash_prefix`` (``None``: nothing to check).

    This reads the whole file.

    Raises:
        HashMismatchError: carrying the file's ``sha256`` and the ``expected`` prefix.
    """
    sha256 = sha256_file(path)
    if hash_prefix is not None and not sha256.startswith(hash_prefix):
        raise HashMismatchError(path, sha256, hash_prefix)
    return sha256


@dataclass(frozen=True)
class WeightsStatus:
    """What is on disk at one weights path.

    ``verified`` is True if the sha256 matches the name and False if it does not. It is None
    when the file is missing, was not hashed, or its name carries no hash prefix.
    """

    path: Path
    present: bool
    verified: bool | None
    sha256: str | None


@dataclass(frozen=True)
class FetchResult:
    path: Path
    sha256: str
    downloaded: bool  # False: the file was already in place and verified
    verified: bool  # False only when the file name carries no hash prefix to check against
    resumed_from: int  # bytes of an earlier partial download that were reused (0: fresh)


def weights_status(path: str | os.PathLike[str], *, verify: bool = True) -> WeightsStatus:
    """Whether the checkpoint ``path`` exists and (if ``verify``) matches the hash prefix of its name."""
    path = Path(path)
    if not path.is_file():
        return WeightsStatus(path=path, present=False, verified=None, sha256=None)
    if not verify:
        return WeightsStatus(path=path, present=True, verified=None, sha256=None)
    expected = hash_prefix_of(path)
    try:
        sha256 = verify_weights(path, expected)
    except HashMismatchError as exc:
        return WeightsStatus(path=path, present=True, verified=False, sha256=exc.sha256)
    return WeightsStatus(path=path, present=True, verified=None if expected is None else True, sha256=sha256)


def fetch_weights(
    url: str,
    dest: str | os.PathLike[str],
    *,
    progress: bool = True,
    timeout: float = DEFAULT_READ_TIMEOUT_S,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    log: Log | None = None,
) -> FetchResult:
    """Download ``url`` to ``dest`` under a file lock, unless a verified copy is there (the
    steps are in the module docstring).

    Args:
        progress: show a tqdm bar on stderr (only when stderr is a terminal).
        timeout: seconds of silence while reading before the transfer counts as stalled.
        connect_timeout: seconds allowed to open the connection.
        log: receives one-line notes (waiting for a lock, resuming, replacing a bad file).

    Raises:
        DownloadError: the server is unreachable, answers an error status, or stalls or cuts
            the connection for good. The message names the URL and where to put the file by hand.
        HashMismatchError: the downloaded file's sha256 does not match its name (it is deleted).
    """
    dest = Path(dest)
    say = log or (lambda message: None)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        (dest.parent / ".locks").mkdir(exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the weights directory {str(dest.parent)!r}: {exc.strerror or exc}") from None
    lock = FileLock(str(dest.parent / ".locks" / f"{dest.name}.lock"))
    try:
        lock.acquire(blocking=False)
    except Timeout:
        say(f"waiting for another fetch of {dest.name} to finish")
        lock.acquire()
    try:
        present = _verified_copy(dest, say)
        if present is not None:
            return present
        return _download_locked(url, dest, progress=progress, timeout=timeout, connect_timeout=connect_timeout, say=say)
    finally:
        lock.release()


def _verified_copy(dest: Path, say: Log) -> FetchResult | None:
    """The existing ``dest`` if it verifies; a file that does not is deleted (and fetched again)."""
    if not dest.is_file():
        return None
    expected = hash_prefix_of(dest)
    try:
        sha256 = verify_weights(dest, expected)
    except HashMismatchError as exc:
        say(f"{dest} has sha256 {exc.sha256[:8]}…, not {expected} as its name says; downloading it again")
        dest.unlink()
        return None
    return FetchResult(dest, sha256, downloaded=False, verified=expected is not None, resumed_from=0)


@dataclass
class _Transfer:
    """Mutable state of one download across its attempts."""

    url: str
    dest: Path
    part: Path
    timeout: float
    progress: bool
    received: int = 0  # bytes received in the current attempt


def _download_locked(
    url: str, dest: Path, *, progress: bool, timeout: float, connect_timeout: float, say: Log
) -> FetchResult:
    part = dest.with_name(dest.name + ".part")
    resumed_from = part.stat().st_size if part.is_file() else 0
    if resumed_from:
        say(f"resuming {dest.name} from byte {resumed_from}")
    transfer = _Transfer(url=url, dest=dest, part=part, timeout=timeout, progress=progress)
    client = httpx.Client(
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        follow_redirects=True,
        headers={"Accept-Encoding": "identity"},  # Range offsets count the bytes stored on disk
    )
    with client:
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            transfer.received = 0
            try:
                if _request_once(client, transfer):
                    break
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                if transfer.received == 0 or attempt == _MAX_ATTEMPTS:
                    if part.is_file() and _size(part) == 0:
                        part.unlink()  # nothing worth resuming
                    raise _transport_error(exc, transfer) from None
                say(f"connection lost after {_size(part)} bytes of {dest.name} ({_reason(exc)}); resuming")
            except httpx.HTTPError as exc:
                raise DownloadError(f"cannot download {url}: {_reason(exc)}" + _by_hand(transfer)) from None
            except OSError as exc:  # a full disk, say: a part that cannot grow is not worth keeping
                part.unlink(missing_ok=True)
                raise DownloadError(f"cannot write {str(dest)!r}: {exc.strerror or exc} (nothing was kept)") from None
        else:
            raise DownloadError(f"{url}: gave up after {_MAX_ATTEMPTS} requests" + _by_hand(transfer))
    return _verify_and_move(transfer, resumed_from)


def _request_once(client: httpx.Client, transfer: _Transfer) -> bool:
    """One GET, appending to (or restarting) the ``.part``; True once the server sent the rest.

    False means the ``.part`` did not fit what the server offered and was deleted: ask again.
    """
    offset = _size(transfer.part)
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with client.stream("GET", transfer.url, headers=headers) as response:
        status = response.status_code
        content_range = response.headers.get("Content-Range", "")
        if offset and status == 416:
            # Nothing left to send: complete if the total size equals what we hold.
            if content_range.rsplit("/", 1)[-1] == str(offset):
                return True
            transfer.part.unlink()
            return False
        if offset and status == 206:
            if not content_range.startswith(f"bytes {offset}-"):
                transfer.part.unlink()
                return False
            mode = "ab"
        elif status == 200:
            mode, offset = "wb", 0  # a fresh start, or a server that ignores Range
        else:
            raise DownloadError(f"{transfer.url}: HTTP {status} {response.reason_phrase}".rstrip() + _by_hand(transfer))
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        _stream_body(response, transfer, mode=mode, offset=offset, total=total)
    return True


def _stream_body(response: httpx.Response, transfer: _Transfer, *, mode: str, offset: int, total: int | None) -> None:
    stream = sys.stderr
    bar = tqdm(
        total=total,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=transfer.dest.name,
        file=stream,
        disable=not (transfer.progress and stream.isatty()),
        leave=False,
    )
    with bar, open(transfer.part, mode) as handle:
        try:
            for chunk in response.iter_raw():
                handle.write(chunk)
                transfer.received += len(chunk)
                bar.update(len(chunk))
        finally:
            handle.flush()
            os.fsync(handle.fileno())


def _verify_and_move(transfer: _Transfer, resumed_from: int) -> FetchResult:
    part, dest = transfer.part, transfer.dest
    expected = hash_prefix_of(dest)
    try:
        sha256 = verify_weights(part, expected)
    except HashMismatchError as exc:
        part.unlink(missing_ok=True)
        raise HashMismatchError(
            dest,
            exc.sha256,
            exc.expected,
            message=f"downloaded {transfer.url}: sha256 {exc.sha256[:16]}… does not start with {exc.expected!r} from "
            "the file name; the file is corrupt or not the published one and was deleted",
        ) from None
    os.replace(part, dest)
    fsync_dir(dest.parent)
    return FetchResult(dest, sha256, downloaded=True, verified=expected is not None, resumed_from=resumed_from)


def _transport_error(exc: httpx.HTTPError, transfer: _Transfer) -> DownloadError:
    held = _size(transfer.part)
    kept = f"; {held} bytes kept in {str(transfer.part)!r}, run the fetch again to resume" if held else ""
    if isinstance(exc, httpx.ConnectTimeout):
        what = f"cannot connect to {transfer.url} (connect timeout)"
    elif isinstance(exc, httpx.ConnectError):
        what = f"cannot reach {transfer.url} ({_reason(exc)}; no network?)"
    elif isinstance(exc, httpx.TimeoutException):
        what = f"{transfer.url}: the server sent nothing for {transfer.timeout:g} s (read timeout)"
    else:
        what = f"{transfer.url}: the connection was cut ({_reason(exc)})"
    return DownloadError(what + kept + _by_hand(transfer))


def _by_hand(transfer: _Transfer) -> str:
    return f"; to install it by hand, download that URL and put the file at {str(transfer.dest)!r}"


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
