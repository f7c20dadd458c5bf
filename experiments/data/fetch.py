"""Fetch the CLUE task zips and the model checkpoints, verify them, unpack them.

    python -m experiments.commands.download data [--tasks iflytek,tnews] [hydra overrides]   # make data
    python -m experiments.commands.download model [hydra overrides]                           # make model

The runner reads ``paths.clue_dir/<task>_public/`` and ``model.checkpoint_dir``, so those
folders must appear whole or not at all. For each archive:

1. download it to ``.<folder>.zip.part`` (``.tar.gz.part``) beside the folder; when the
   connection drops, ask for the rest with an HTTP Range request (also when the command is
   run again after an interruption); a server that ignores Range sends the whole file again;
2. unpack it into ``.<folder>.unpack`` beside the folder (files at the top of the archive or
   inside one folder; no member may land outside it: zipfile drops ``..`` and leading ``/``,
   tarfile's ``filter="data"`` refuses such members, links out of the folder and devices);
3. check every file against ``checksums.yaml`` (known sums and line counts) or, for files
   with no known sum, against the ``SHA256SUMS`` manifest the first download wrote;
4. only then rename the folder into place and add the new sums to the manifest.

When the folder is already there, ``make data`` / ``make model`` only verify it and
``make run`` (``download.auto``) does nothing. A model whose config has no ``url`` (releases
on Baidu Disk or Google Drive only) is never downloaded: a missing folder is a one-line
error saying where to get the release (``model.source``) and where to unpack it.
Network failures, corrupt archives and sum
mismatches are ``UserError``s: one line naming the URL or file, the folder and the fix.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import logging
import os
import re
import shutil
import socket
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
from omegaconf import OmegaConf

from experiments import records
from experiments.errors import UserError

log = logging.getLogger(__name__)

MANIFEST = "SHA256SUMS"  # sha256sum's format: `sha256sum -c SHA256SUMS` works too
JUNK = {"__MACOSX", ".DS_Store"}  # what zips made on a Mac carry besides the data
CHUNK = 1 << 16


@dataclass
class Target:
    """One archive and the folder it becomes."""

    url: str | None  # None: no direct download (the folder is put there by hand)
    dest: Path  # the folder the runner reads
    alternative: str  # what to do by hand, for the error messages
    known: dict = field(default_factory=dict)  # file -> {"sha256", "lines"} from checksums.yaml
    required: list = field(default_factory=list)  # files the runner needs, known sum or not


def _known_sums(dl, section: str, key: str) -> dict:
    path = Path(dl.checksums)
    if not path.is_file():
        raise UserError(
            f"{path}: checksums file not found; set download.checksums to the project's experiments/data/checksums.yaml"
        )
    return OmegaConf.to_container(OmegaConf.load(path)).get(section, {}).get(key) or {}


def task_target(clue_dir, task_cfg, dl) -> Target:
    dest = Path(clue_dir) / task_cfg.dir
    return Target(
        url=f"{dl.clue_base_url.rstrip('/')}/{task_cfg.name}_public.zip",
        dest=dest,
        alternative=f"download it elsewhere and unpack it into {dest}/, "
        f"or set paths.clue_dir to a folder that already holds {task_cfg.dir}/",
        known=_known_sums(dl, "clue", task_cfg.name),
        required=task_files(task_cfg),
    )


def task_files(task_cfg) -> list[str]:
    """What experiments.data reads of a task: its labels file (if any), train and dev files."""
    from experiments.data.loaders import labels_file

    return [f for f in (labels_file(task_cfg), task_cfg.train_file, task_cfg.dev_file) if f]


def model_target(model_cfg, dl) -> Target:
    from experiments.model.release import checkpoint_files

    if model_cfg.checkpoint_dir is None:
        raise UserError(f"model={model_cfg.name} has no checkpoint to download (model.checkpoint_dir is null)")
    dest = Path(model_cfg.checkpoint_dir)
    required = checkpoint_files(model_cfg)
    url = OmegaConf.select(model_cfg, "url")
    if url is None:
        source = OmegaConf.select(model_cfg, "source") or "the model's release"
        alternative = (
            f"model={model_cfg.name} has no direct download URL: get it from {source} and unpack it "
            f"into {dest}/ so that it holds {', '.join(required)}; or set model.checkpoint_dir to a "
            "folder that already does"
        )
    else:
        alternative = (
            f"download it elsewhere and unpack it into {dest}/, or set paths.models_dir "
            f"(or model.checkpoint_dir) to where a copy of {dest.name}/ already is"
        )
    return Target(
        url=url, dest=dest, alternative=alternative, known=_known_sums(dl, "models", model_cfg.name), required=required
    )


# --- what make run / make data / make model call --------------------------------------------


def fetch_missing(task_cfg, model_cfg, paths_cfg, download_cfg) -> None:
    """Download the task's data (into ``paths.clue_dir``) and the model's checkpoint if their folders
    do not exist."""
    from experiments.data import hub

    ensure(task_target(paths_cfg.clue_dir, task_cfg, download_cfg), download_cfg)
    if hub.uses_hub(model_cfg):  # no folder there, no TF1 URL: the Hub snapshot (data/hub.py)
        hub.resolve(model_cfg, download=True)
    elif model_cfg.checkpoint_dir is not None:
        ensure(model_target(model_cfg, download_cfg), download_cfg)


def ensure(t: Target, dl) -> None:
    """Install ``t`` unless its folder exists (a folder put there by hand is left alone)."""
    if not t.dest.exists():
        install(t, dl)


def fetch_or_verify(t: Target, dl) -> None:
    """``make data`` / ``make model``: install ``t``, or verify the copy already in place."""
    if not t.dest.exists():
        install(t, dl)
        return
    checked, total = verify(t)
    log.info("%s: present; %d of %d files match their recorded sha256", t.dest, checked, total)


def verify(t: Target, fix: str | None = None) -> tuple[int, int]:
    """Check the copy of ``t`` in place against the known and recorded sums (a UserError naming
    the file and ``fix`` if one differs); return (files with a sum checked, files)."""
    recorded = _recorded(t.dest)
    fix = fix or (f"delete {t.dest}/ and run this again to download it afresh" if t.url else t.alternative)
    sums = check_folder(t.dest, t, recorded, where=str(t.dest), fix=fix)
    return len(set(t.known) | set(recorded)), len(sums)


# --- install: download, unpack, verify, move into place --------------------------------------


def install(t: Target, dl) -> None:
    if t.url is None:
        raise UserError(f"{t.dest}: not found; {t.alternative}")
    parent = t.dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    part = parent / f".{t.dest.name}{_archive_suffix(t.url)}.part"
    unpack_dir = parent / f".{t.dest.name}.unpack"
    with _locked(parent):
        if t.dest.exists():  # another run (a parallel sweep) installed it while we waited
            return
        _download(t, part, dl)
        try:
            shutil.rmtree(unpack_dir, ignore_errors=True)  # left by a run that was killed
            unpack_dir.mkdir()
            root = _unpack(t, part, unpack_dir)
            sums = check_folder(
                root,
                t,
                _recorded(t.dest),
                where=f"{t.url}: {t.dest.name}",
                fix=f"the download is corrupt or changed upstream; nothing was placed in {t.dest}/",
            )
            manifest = read_manifest(parent)
            manifest.update({f"{t.dest.name}/{name}": sha for name, sha in sums.items()})
            write_manifest(parent, manifest)
            os.rename(root, t.dest)
        except UserError:
            part.unlink(missing_ok=True)  # a complete but bad archive: the next try starts afresh
            raise
        finally:
            shutil.rmtree(unpack_dir, ignore_errors=True)
        part.unlink()
    log.info("%s: downloaded, verified, %d files", t.dest, len(sums))


@contextmanager
def _locked(folder: Path):
    """Hold a lock on ``folder`` so parallel runs of a sweep download each archive once."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: waiting for another download into this folder", folder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class _Broken(Exception):
    """The connection dropped mid-transfer: what arrived is kept for a Range request."""


def _download(t: Target, part: Path, dl) -> None:
    for attempt in range(dl.retries + 1):
        try:
            return _get(t, part, dl)
        except _Broken as err:
            got = part.stat().st_size if part.exists() else 0
            if attempt == dl.retries:
                raise UserError(
                    f"download of {t.url} broke off after {got} bytes ({err}); run the command "
                    f"again to resume it, or {t.alternative}"
                ) from None
            log.warning("%s: broke off after %d bytes (%s); resuming", t.url, got, err)


def _get(t: Target, part: Path, dl) -> None:
    """One request for ``t.url``: the rest of ``part`` if it holds a start, else the whole file."""
    have = part.stat().st_size if part.exists() else 0
    # identity: Range offsets and Content-Length then count the bytes we store
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
    try:
        response = requests.get(t.url, headers=headers, stream=True, timeout=dl.timeout)
    except requests.RequestException as err:
        raise _unreachable(t, _reason(err, dl.timeout)) from None
    with response:
        if response.status_code == 416 and have:
            # Nothing after byte `have`: the part is the whole file (a run stopped before
            # unpacking it) or longer than the file (stale): keep it or start over.
            if response.headers.get("Content-Range") == f"bytes */{have}":
                return
            part.unlink()
            return _get(t, part, dl)
        if response.status_code not in (200, 206):
            raise _unreachable(t, f"HTTP {response.status_code} {response.reason}")
        match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
        if response.status_code != 206 or match is None or int(match[1]) != have:
            have = 0  # the server ignored Range and sends the whole file: write it afresh
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        # urllib3 would raise on a short body and drop the bytes of its last read; keep them
        # all instead: the size check below notices the cut, the Range request continues it.
        response.raw.enforce_content_length = False
        with part.open("ab" if have else "wb") as out, _progress(t, total, have, dl) as bar:
            try:
                for chunk in response.iter_content(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            except requests.RequestException as err:  # reset, short read, read timeout
                raise _Broken(_reason(err, dl.timeout)) from None
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Broken(f"{total - size} of {total} bytes missing")


def _progress(t: Target, total, initial, dl):
    from tqdm.auto import tqdm

    disable = None if dl.progress is None else not dl.progress  # None: only on a terminal
    return tqdm(
        total=total,
        initial=initial,
        desc=t.url.rsplit("/", 1)[-1],
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=disable,
    )


def _unreachable(t: Target, reason: str) -> UserError:
    return UserError(f"cannot download {t.url} ({reason}) to fill {t.dest}/: {t.alternative}")


def _reason(err: BaseException, timeout) -> str:
    """A few words on why a request failed, from the innermost cause requests wraps."""
    if isinstance(err, requests.Timeout):
        return f"no answer within {timeout} s"
    while True:  # requests' ConnectionError -> urllib3's MaxRetryError -> ... -> the OSError
        cause = getattr(err, "reason", None)
        cause = cause if isinstance(cause, BaseException) else err.__cause__ or err.__context__
        if cause is None:
            break
        err = cause
    if isinstance(err, ConnectionRefusedError):
        return "connection refused: no server at that address"
    if isinstance(err, socket.gaierror):
        return "cannot resolve the host name: offline or no DNS"
    return str(err) or type(err).__name__


def _archive_suffix(url: str) -> str:
    """``.tar.gz`` for gzipped tars (Google's ALBERT releases), else ``.zip``."""
    return ".tar.gz" if url.split("?")[0].endswith((".tar.gz", ".tgz")) else ".zip"


def _unpack(t: Target, part: Path, into: Path) -> Path:
    """Unpack into ``into``; the folder holding the files (``into`` or its only subfolder)."""
    kind = _archive_suffix(t.url)
    try:
        if kind == ".tar.gz":
            with tarfile.open(part, "r:gz") as archive:
                # "data": no absolute paths, no "..", no links leaving `into`, no devices (PEP 706)
                archive.extractall(into, filter="data")
        else:
            with zipfile.ZipFile(part) as archive:
                archive.extractall(into)  # zipfile drops ".." and leading "/" from member names
    except tarfile.FilterError as err:
        raise UserError(
            f"{t.url}: refused to unpack member {err.tarinfo.name!r} ({err}); nothing was placed in "
            f"{t.dest}/; the archive is not the release: {t.alternative}"
        ) from None
    except (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, zlib.error, EOFError) as err:
        raise UserError(
            f"{t.url}: not a valid {kind[1:]} archive ({err}); nothing was placed in {t.dest}/; "
            f"run this again to download it afresh, or {t.alternative}"
        ) from None
    for junk in JUNK:
        path = into / junk
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    entries = list(into.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else into


# --- verification ------------------------------------------------------------------------------


def check_folder(folder: Path, t: Target, recorded: dict, where: str, fix: str) -> dict[str, str]:
    """sha256 of every file under ``folder``, after checking the known and recorded ones.

    ``where`` prefixes file names in the messages (the URL, or the folder in place).
    """
    for name in dict.fromkeys([*t.required, *t.known, *recorded]):
        if not (folder / name).is_file():
            raise UserError(f"{where}/{name}: missing; {fix}")
    sums = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        sha, lines = digest(path)
        if name in t.known:
            want = t.known[name]
            if sha != want["sha256"] or lines != want.get("lines", lines):
                raise UserError(
                    f"{where}/{name}: sha256 {sha} ({lines} lines), expected {want['sha256']} "
                    f"({want.get('lines', '?')} lines) as in checksums.yaml; {fix}"
                )
        elif name in recorded and sha != recorded[name]:
            raise UserError(
                f"{where}/{name}: sha256 {sha}, expected {recorded[name]} as recorded in "
                f"{t.dest.parent / MANIFEST} by the first download; {fix}"
            )
        sums[name] = sha
    return sums


def digest(path: Path) -> tuple[str, int]:
    """sha256 and line count of a file (a last line without a final newline counts)."""
    sha, lines, last = hashlib.sha256(), 0, b"\n"
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return sha.hexdigest(), lines + (last != b"\n")


def read_manifest(folder: Path) -> dict[str, str]:
    """``<folder>/SHA256SUMS`` as {"tnews_public/train.json": sha256}."""
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    pairs = (line.split(maxsplit=1) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {name.lstrip("*"): sha for sha, name in pairs}


def write_manifest(folder: Path, sums: dict[str, str]) -> None:
    """Replace the manifest atomically: readers see the old one or the new one."""
    records.write_text_atomic(folder / MANIFEST, "".join(f"{sha}  {name}\n" for name, sha in sorted(sums.items())))


def _recorded(dest: Path) -> dict[str, str]:
    """The manifest's sums for the files of ``dest``, by name inside it."""
    prefix = dest.name + "/"
    return {k[len(prefix) :]: v for k, v in read_manifest(dest.parent).items() if k.startswith(prefix)}


# --- command line ------------------------------------------------------------------------------
