"""Fetching remote files: a mirror override, resumable transfers, checksums,
atomic unpacking, and one error line that says where to put a file by hand.

Every file the project fetches is a ``Remote`` with the size and checksum
recorded where it is declared (scripts/get_data.py, models/imagenet_backbone.py).
A download goes to ``<dest>.part``, resumes from there with an HTTP Range
request, and becomes ``<dest>`` only after its size and checksum match; a
mismatch deletes it. So ``<dest>`` is either absent or verified, never half.

Two environment variables point everything elsewhere (a mirror, or the local
fixture server of the tests and of ``REPRODUCE_PRESET=tiny``):

* ``HASHNET_DOWNLOAD_BASE=http://127.0.0.1:8000``: every URL becomes
  ``<base>/<host>/<path>`` of the original URL;
* ``HASHNET_CHECKSUMS=checksums.json``: ``{original URL: {"checksum": ..,
  "size": ..}}`` replaces the recorded values (fixture files only).
"""
import contextlib
import dataclasses
import http.client
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from urllib.parse import urlsplit

from tqdm import tqdm

from utils.base.errors import UserError
from utils.base.fingerprint import file_digest
from utils.base.io import disk_full_is_user_error, open_own_file, refuse_link
from utils.base.text_files import read_json

BASE_ENV = "HASHNET_DOWNLOAD_BASE"
CHECKSUMS_ENV = "HASHNET_CHECKSUMS"
TIMEOUT = 30        # seconds without a byte before a transfer counts as cut
ATTEMPTS = 3        # transfers per file in one run, each resuming the last
CHUNK = 1 << 20
CHECKSUM_KINDS = {"md5": 32, "sha1": 40, "git-blob-sha1": 40}   # kind -> hex digits


@dataclasses.dataclass(frozen=True)
class Remote:
    """A file to fetch. ``checksum`` is ``"md5:<hex>"`` or
    ``"sha1:<hex>"`` or ``"git-blob-sha1:<hex>"`` (the id git gives a file, for files taken from a
    git tree); ``size`` in bytes, or None where no source records it."""
    url: str
    checksum: str
    size: int = None


class DownloadFailed(Exception):
    """One file could not be fetched; callers gather these into one UserError."""

    def __init__(self, url, dest, reason):
        super().__init__(f"{url} ({reason}) -> put it at {os.path.abspath(dest)}")


def mirror_base():
    """``$HASHNET_DOWNLOAD_BASE`` checked (an http(s) URL with a host), or None."""
    base = os.environ.get(BASE_ENV)
    if not base:
        return None
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"{BASE_ENV}={base!r} is not an http(s) URL with a host (e.g. "
                        f"http://127.0.0.1:8000/): fix it or unset it")
    return base


def checksum_overrides():
    """``$HASHNET_CHECKSUMS``: {url: {"checksum": "kind:hex", "size": bytes}}
    read and checked, or {} when unset; anything else is a one-line
    UserError naming the variable."""
    path = os.environ.get(CHECKSUMS_ENV)
    if not path:
        return {}
    where = f"{CHECKSUMS_ENV}={path}"
    try:
        table = read_json(path)
    except OSError as err:
        raise UserError(f"{where}: cannot read it ({err.strerror}): fix the path or unset "
                        f"{CHECKSUMS_ENV}") from None
    except ValueError as err:
        raise UserError(f"{where} is not valid JSON ({err}): fix the file or unset "
                        f"{CHECKSUMS_ENV}") from None
    if not isinstance(table, dict):
        raise UserError(f"{where} must hold a JSON object {{url: {{\"checksum\": "
                        f"\"md5:<hex>\", \"size\": bytes}}}}, not a {type(table).__name__}")
    for url, entry in table.items():
        checksum = entry.get("checksum") if isinstance(entry, dict) else None
        size = entry.get("size") if isinstance(entry, dict) else None
        if not is_checksum(checksum) or not (size is None or type(size) is int and size >= 0):
            raise UserError(f"{where}: the entry for {url} must be {{\"checksum\": "
                            f"\"md5:<hex>\", \"sha1:<hex>\" or \"git-blob-sha1:<hex>\", "
                            f"\"size\": bytes (optional)}}, got {json.dumps(entry)[:120]}")
    return table


def is_checksum(text):
    """``kind:<hex>`` with a known kind and that kind's number of hex digits."""
    kind, _, digits = text.partition(":") if isinstance(text, str) else ("", "", "")
    return (len(digits) == CHECKSUM_KINDS.get(kind)
            and all(c in "0123456789abcdef" for c in digits.lower()))


def check_mirror_settings():
    """Both download variables checked, when a command that may download
    starts (before any work), not at the first download."""
    mirror_base()
    checksum_overrides()


def mirrored(remote):
    """``remote`` with the environment's base URL and checksum overrides applied."""
    url, checksum, size = remote.url, remote.checksum, remote.size
    override = checksum_overrides().get(url)
    if override:
        checksum, size = override["checksum"], override.get("size")
    base = mirror_base()
    if base:
        parts = urlsplit(url)
        url = f"{base.rstrip('/')}/{parts.netloc}{parts.path}"
    return Remote(url, checksum, size)


def file_checksum(path, kind):
    """``kind:<hex>`` of a file; git's blob id hashes a ``blob <size>\\0`` header first."""
    if kind in ("md5", "sha1"):
        return f"{kind}:{file_digest(path, kind)}"
    if kind == "git-blob-sha1":
        return f"{kind}:{file_digest(path, 'sha1', b'blob %d' % os.path.getsize(path) + bytes(1))}"
    raise ValueError(f"unknown checksum kind {kind}")


def verify(path, remote):
    """None if ``path`` has the remote's size and checksum, else what differs."""
    size = os.path.getsize(path)
    if remote.size is not None and size != remote.size:
        return f"{size} bytes, expected {remote.size}"
    got = file_checksum(path, remote.checksum.split(":", 1)[0])
    if got != remote.checksum:
        return f"checksum {got}, expected {remote.checksum}"
    return None


def _transfer(url, part, size):
    """Append the rest of ``url`` to ``part`` (Range from its current size).
    Returns True when the server sent the whole remaining body."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    if size is not None and have >= size:
        return True
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        if have and response.status != 206:  # the server ignored Range: start over
            have = 0
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length is not None else size
        mode = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if have else os.O_TRUNC)
        with open(open_own_file(part, mode, "partial download"), "ab") as f, \
                tqdm(total=expected, initial=have, unit="B", unit_scale=True,
                     desc=os.path.basename(part[:-len(".part")]), leave=False) as bar:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                f.write(block)
                bar.update(len(block))
    return expected is None or os.path.getsize(part) >= expected


def _download(url, part, size):
    """Transfer ``url`` into ``part``, resuming after a cut connection while
    bytes keep arriving. Returns None when complete, else why it stopped."""
    reason = "no data"
    for _ in range(ATTEMPTS):
        before = os.path.getsize(part) if os.path.exists(part) else 0
        try:
            if _transfer(url, part, size):
                return None
            reason = "connection cut"
        except urllib.error.HTTPError as err:
            if err.code == 416:  # nothing left to send: the part is already whole
                return None
            return f"HTTP {err.code} {err.reason}"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            reason = str(getattr(err, "reason", err)) or type(err).__name__
        if (os.path.getsize(part) if os.path.exists(part) else 0) == before:
            return reason  # no progress: offline, refused, or stuck
    return reason


def fetch(remote, dest):
    """Make ``dest`` a verified copy of ``remote``: keep a verified file that is
    already there, else download (resuming ``dest.part``) and verify.
    Raises DownloadFailed; a bad file is deleted, never left as ``dest``."""
    remote = mirrored(remote)
    if os.path.exists(dest):
        problem = verify(dest, remote)
        if problem is None:
            return dest
        os.remove(dest)
        raise DownloadFailed(remote.url, dest, f"the file there had {problem}: deleted it")
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = dest + ".part"
    reason = _download(remote.url, part, remote.size)
    if reason:
        _drop_empty(part)
        if os.path.exists(part):
            reason += f"; run again to resume {part}"
        raise DownloadFailed(remote.url, dest, reason)
    problem = verify(part, remote)
    if problem:
        os.remove(part)
        raise DownloadFailed(remote.url, dest, f"download had {problem}: deleted it")
    os.replace(part, dest)
    return dest


def _drop_empty(part):
    if os.path.exists(part) and os.path.getsize(part) == 0:
        os.remove(part)


def through_paddle(paddle_download, remote, cached):
    """Run one of Paddle's own downloaders, ``paddle_download(url, md5)``, which
    md5-check and cache a file at ``cached`` but, when they give up, raise a
    bare RuntimeError and may leave a bad file or ``_tmp`` behind: remove
    those and raise DownloadFailed instead."""
    source = mirrored(remote)
    md5 = source.checksum.split(":", 1)[1]
    for path in (cached, cached + "_tmp"):   # where Paddle opens its file with open(path, "wb")
        refuse_link(path, "download cache file")
    try:
        with quiet("paddle.utils.download", "httpx"):  # our error line says it once
            return paddle_download(source.url, md5)
    except Exception:  # Paddle's RuntimeError names no reason; its retries are spent
        bad = os.path.exists(cached)
        for leftover in (cached, cached + "_tmp"):
            if os.path.exists(leftover):
                os.remove(leftover)
        reason = (f"md5 differs from {md5}: deleted it" if bad
                  else "no answer to Paddle's downloader after its retries")
        raise DownloadFailed(source.url, cached, reason) from None


@contextlib.contextmanager
def quiet(*logger_names):
    """Hide INFO lines of these loggers (Paddle logs every retry and request)."""
    loggers = [logging.getLogger(name) for name in logger_names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def run_downloads(jobs):
    """Run each job (a callable raising DownloadFailed), all of them even when
    one fails; then one UserError naming every file that failed."""
    failures = []
    for job in jobs:
        try:
            job()
        except DownloadFailed as err:
            failures.append(str(err))
    if failures:
        raise UserError(f"could not download {len(failures)} file(s): " + "; ".join(failures)
                        + " (then run the same command again)")


def unpack_zip(archive, root, folder):
    """Extract ``archive`` into a temporary folder under ``root``, then rename
    its top-level ``folder`` to ``root/folder``: an interrupted extraction never
    leaves a partial ``root/folder`` that a later run would take as complete."""
    final = os.path.join(root, folder)
    for stale in os.listdir(root):
        if stale.startswith(f".{folder}.unpack-"):
            shutil.rmtree(os.path.join(root, stale), ignore_errors=True)
    tmp = tempfile.mkdtemp(dir=root, prefix=f".{folder}.unpack-")
    try:
        # A full disk or a file-size limit mid-way is the one-line disk-full
        # error naming the folder; the partial extraction goes with tmp.
        with zipfile.ZipFile(archive) as z, disk_full_is_user_error(final):
            for member in tqdm(z.infolist(), desc=f"unpack {os.path.basename(archive)}",
                               unit="file", leave=False):
                z.extract(member, tmp)  # zipfile drops absolute paths and '..'
        if not os.path.isdir(os.path.join(tmp, folder)):
            raise UserError(f"{archive} has no top-level folder {folder}/: not the expected archive "
                            "(delete it and run again)")
        os.replace(os.path.join(tmp, folder), final)
    except zipfile.BadZipFile as err:
        raise UserError(f"{archive} is not a valid zip ({err}): delete it and run again")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
