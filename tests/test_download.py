"""experiments.commands.download against a local HTTP server (127.0.0.1 only) serving zips built here."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from experiments import PROJECT_ROOT
from experiments.config import compose
from experiments.data import fetch
from experiments.errors import UserError
from tests.helpers.clue import SHARED_BERT, SHARED_CLUE, make_clue, requires_shared

PATH = "/tnews_public.zip"


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; Range support and a one-off cut-off are switches on the server."""

    def do_GET(self):
        server = self.server
        server.log.append((self.path, self.headers.get("Range")))
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start, wanted = 0, re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if wanted and server.ranges:
            start = int(wanted[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if server.cut_after is not None:  # send the first bytes, then drop the connection
            self.wfile.write(body[start : start + server.cut_after])
            self.wfile.flush()
            server.cut_after = None
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.log, httpd.ranges, httpd.cut_after = {}, [], True, None
    httpd.handle_error = lambda *args: None  # the cut-off connection's broken pipe is intended
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def tnews_files(tmp_path) -> dict[str, bytes]:
    folder = make_clue(tmp_path / "fixture") / "tnews_public"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def zip_bytes(files: dict[str, bytes], folder: str = "") -> bytes:
    """A zip of ``files``, at its top or (``folder``) inside one folder, as a Mac would make it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        if folder:
            archive.writestr(folder + "/", b"")
            archive.writestr(f"__MACOSX/{folder}/._train.json", b"resource fork")
        for name, data in files.items():
            archive.writestr(f"{folder}/{name}" if folder else name, data)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checksums_file(tmp_path, files: dict[str, bytes], known=("dev.json", "labels.json")) -> Path:
    """A checksums.yaml knowing some of the fixture's files; the others go to the manifest."""
    path = tmp_path / "checksums.yaml"
    newline = b"\n"  # the fixture's files end with one: the count is the line count
    lines = [f"    {n}: {{sha256: {sha(files[n])}, lines: {files[n].count(newline)}}}\n" for n in known]
    path.write_text("clue:\n  tnews:\n" + "".join(lines), encoding="utf-8")
    return path


def config(tmp_path, url: str, checksums: Path, **extra):
    overrides = {
        "task": "tnews",
        "model": "tiny",
        "paths.clue_dir": tmp_path / "clue",
        "paths.models_dir": tmp_path / "models",
        "download.clue_base_url": url,
        "download.checksums": checksums,
        "download.progress": False,
        **extra,
    }
    return compose([f"{k}={v}" for k, v in overrides.items()])


def fetch_task(cfg):
    fetch.fetch_or_verify(fetch.task_target(cfg.paths.clue_dir, cfg.task, cfg.download), cfg.download)


@pytest.fixture
def archives(monkeypatch) -> list[bytes]:
    """The bytes of every downloaded archive, as unpacked: resuming must not garble them."""
    seen, unpack = [], fetch._unpack

    def spy(t, part, into):
        seen.append(part.read_bytes())
        return unpack(t, part, into)

    monkeypatch.setattr(fetch, "_unpack", spy)
    return seen


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_installed(clue: Path, files: dict[str, bytes]):
    assert listing(clue) == ["SHA256SUMS", "tnews_public"]  # no .part, no .unpack folder left
    assert {p.name: p.read_bytes() for p in (clue / "tnews_public").iterdir()} == files
    assert (clue / "SHA256SUMS").read_text() == "".join(f"{sha(files[n])}  tnews_public/{n}\n" for n in sorted(files))


@pytest.mark.parametrize("folder", ["", "tnews_public", "some_other_name"])
def test_both_zip_layouts_unpack_to_the_task_folder(tmp_path, server, tnews_files, folder):
    server.files[PATH] = zip_bytes(tnews_files, folder)
    cfg = config(tmp_path, server.url, checksums_file(tmp_path, tnews_files))
    fetch_task(cfg)
    assert_installed(tmp_path / "clue", tnews_files)  # the __MACOSX junk is gone too
    assert server.log == [(PATH, None)]


def test_a_cut_connection_is_resumed_with_range(tmp_path, server, tnews_files, archives):
    server.files[PATH] = body = zip_bytes(tnews_files)
    server.cut_after = half = len(body) // 2
    fetch_task(config(tmp_path, server.url, checksums_file(tmp_path, tnews_files)))
    assert server.log == [(PATH, None), (PATH, f"bytes={half}-")]
    assert_installed(tmp_path / "clue", tnews_files)
    assert archives == [body]


def test_an_interrupted_download_resumes_on_the_next_run(tmp_path, server, tnews_files, archives):
    server.files[PATH] = body = zip_bytes(tnews_files)
    server.cut_after = half = len(body) // 2
    cfg = config(tmp_path, server.url, checksums_file(tmp_path, tnews_files), **{"download.retries": 0})
    with pytest.raises(
        UserError,
        match=rf"^download of {re.escape(server.url)}tnews_public\.zip broke off after {half} bytes "
        r"\(.*\); run the command again to resume it, or download it elsewhere",
    ):
        fetch_task(cfg)
    clue = tmp_path / "clue"
    assert listing(clue) == [".tnews_public.zip.part"]  # the start, kept; no task folder
    assert (clue / ".tnews_public.zip.part").read_bytes() == body[:half]
    fetch_task(cfg)
    assert server.log == [(PATH, None), (PATH, f"bytes={half}-")]
    assert_installed(clue, tnews_files)
    assert archives == [body]


def test_a_server_without_range_support_sends_everything_again(tmp_path, server, tnews_files, archives):
    server.files[PATH] = body = zip_bytes(tnews_files)
    server.ranges = False
    clue = tmp_path / "clue"
    clue.mkdir()
    (clue / ".tnews_public.zip.part").write_bytes(body[:100])  # left by an interrupted run
    fetch_task(config(tmp_path, server.url, checksums_file(tmp_path, tnews_files)))
    assert server.log == [(PATH, "bytes=100-")]  # asked for the rest, got a 200 with everything
    assert_installed(clue, tnews_files)
    assert archives == [body]


def test_a_complete_part_is_not_downloaded_again(tmp_path, server, tnews_files, archives):
    server.files[PATH] = body = zip_bytes(tnews_files)
    clue = tmp_path / "clue"
    clue.mkdir()
    (clue / ".tnews_public.zip.part").write_bytes(body)  # a run stopped before unpacking
    fetch_task(config(tmp_path, server.url, checksums_file(tmp_path, tnews_files)))
    assert server.log == [(PATH, f"bytes={len(body)}-")]  # answered 416: nothing after the end
    assert_installed(clue, tnews_files)
    assert archives == [body]


def test_a_sum_mismatch_is_an_error_and_leaves_nothing(tmp_path, server, tnews_files):
    bad = {**tnews_files, "dev.json": tnews_files["dev.json"].replace("足球".encode(), "篮球".encode(), 1)}
    server.files[PATH] = zip_bytes(bad)
    url, dest = server.url + "tnews_public.zip", tmp_path / "clue" / "tnews_public"
    with pytest.raises(UserError) as err:
        fetch_task(config(tmp_path, server.url, checksums_file(tmp_path, tnews_files)))
    lines = tnews_files["dev.json"].count(b"\n")
    assert str(err.value) == (
        f"{url}: tnews_public/dev.json: sha256 {sha(bad['dev.json'])} ({lines} lines), expected "
        f"{sha(tnews_files['dev.json'])} ({lines} lines) as in checksums.yaml; the download is corrupt or "
        f"changed upstream; nothing was placed in {dest}/"
    )
    assert listing(tmp_path / "clue") == []  # no task folder, no manifest, no .part, no .unpack


def test_a_known_file_missing_from_the_zip_is_an_error(tmp_path, server, tnews_files):
    server.files[PATH] = zip_bytes({n: d for n, d in tnews_files.items() if n != "labels.json"})
    with pytest.raises(UserError, match=r"tnews_public.zip: tnews_public/labels.json: missing; the download"):
        fetch_task(config(tmp_path, server.url, checksums_file(tmp_path, tnews_files)))
    assert listing(tmp_path / "clue") == []


def test_sums_recorded_by_the_first_download_are_checked_from_then_on(tmp_path, server, tnews_files):
    server.files[PATH] = zip_bytes(tnews_files)
    checksums = checksums_file(tmp_path, tnews_files)  # train.json has no known sum
    cfg = config(tmp_path, server.url, checksums)
    fetch_task(cfg)
    clue = tmp_path / "clue"
    manifest = (clue / "SHA256SUMS").read_text()
    assert f"{sha(tnews_files['train.json'])}  tnews_public/train.json\n" in manifest

    # The folder in place: verified with no request; a changed file is named with both sums.
    fetch_task(cfg)
    assert len(server.log) == 1
    train, changed = clue / "tnews_public" / "train.json", tnews_files["train.json"] + b"\n"
    train.write_bytes(changed)
    with pytest.raises(UserError) as err:
        fetch_task(cfg)
    assert str(err.value) == (
        f"{train}: sha256 {sha(changed)}, expected {sha(tnews_files['train.json'])} "
        f"as recorded in {clue / 'SHA256SUMS'} by the first download; delete {clue / 'tnews_public'}/ and run "
        "this again to download it afresh"
    )

    # Downloaded again after the folder was deleted: a different train.json is refused.
    for path in (clue / "tnews_public").iterdir():
        path.unlink()
    (clue / "tnews_public").rmdir()
    server.files[PATH] = zip_bytes({**tnews_files, "train.json": tnews_files["train.json"][:-1]})
    with pytest.raises(
        UserError,
        match=rf"tnews_public/train.json: sha256 \w+, expected "
        rf"{sha(tnews_files['train.json'])} as recorded in",
    ):
        fetch_task(cfg)
    assert listing(clue) == ["SHA256SUMS"]
    assert (clue / "SHA256SUMS").read_text() == manifest


@pytest.mark.parametrize("damage", ["not a zip", "flipped byte"])
def test_a_corrupt_archive_is_an_error_and_leaves_nothing(tmp_path, server, tnews_files, damage):
    body = bytearray(zip_bytes(tnews_files))
    if damage == "not a zip":
        body = bytearray(b"<html>captive portal</html>")
    else:
        body[200] ^= 0xFF  # inside the first member's compressed data
    server.files[PATH] = bytes(body)
    with pytest.raises(
        UserError,
        match=rf"^{re.escape(server.url)}tnews_public\.zip: not a valid zip archive \(.+\); nothing "
        rf"was placed in {re.escape(str(tmp_path))}/clue/tnews_public/; run this again",
    ):
        fetch_task(config(tmp_path, server.url, checksums_file(tmp_path, tnews_files)))
    assert listing(tmp_path / "clue") == []


def test_404_names_the_url_the_folder_and_the_alternative(tmp_path, server, tnews_files):
    with pytest.raises(UserError) as err:
        fetch_task(config(tmp_path, server.url + "mirror", checksums_file(tmp_path, tnews_files)))
    dest = tmp_path / "clue" / "tnews_public"
    assert str(err.value) == (
        f"cannot download {server.url}mirror/tnews_public.zip (HTTP 404 Not Found) to fill {dest}/: download it "
        f"elsewhere and unpack it into {dest}/, or set paths.clue_dir to a folder that already holds tnews_public/"
    )
    assert server.log == [("/mirror/tnews_public.zip", None)]
    assert listing(tmp_path / "clue") == []


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there any more


def test_no_server_fails_at_once_with_the_url_and_the_folder(tmp_path, tnews_files):
    url = closed_port_url()
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        fetch_task(config(tmp_path, url, checksums_file(tmp_path, tnews_files)))
    assert time.monotonic() - start < 5
    dest = tmp_path / "clue" / "tnews_public"
    assert str(err.value).startswith(
        f"cannot download {url}tnews_public.zip (connection refused: no server at "
        f"that address) to fill {dest}/: download it elsewhere"
    )
    assert listing(tmp_path / "clue") == []


def test_parallel_runs_download_once(tmp_path, server, tnews_files):
    server.files[PATH] = zip_bytes(tnews_files)
    cfg = config(tmp_path, server.url, checksums_file(tmp_path, tnews_files))
    target = fetch.task_target(cfg.paths.clue_dir, cfg.task, cfg.download)
    errors = []

    def install():
        try:
            fetch.install(target, cfg.download)
        except Exception as err:  # surfaced by the assert below
            errors.append(err)

    threads = [threading.Thread(target=install) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and server.log == [(PATH, None)]
    assert_installed(tmp_path / "clue", tnews_files)


def test_fetch_missing_puts_the_checkpoint_where_the_model_config_points(tmp_path, server, tnews_files):
    names = [
        "bert_config.json",
        "vocab.txt",
        "bert_model.ckpt.index",
        "bert_model.ckpt.data-00000-of-00001",
        "bert_model.ckpt.meta",
    ]  # Google's release
    ckpt = {name: f"{name} bytes".encode() for name in names}
    server.files[PATH] = zip_bytes(tnews_files)
    server.files["/bert.zip"] = zip_bytes(ckpt, "chinese_L-12_H-768_A-12")
    cfg = config(
        tmp_path,
        server.url,
        checksums_file(tmp_path, tnews_files),
        **{"model": "bert_base", "model.url": server.url + "bert.zip"},
    )
    fetch.fetch_missing(cfg.task, cfg.model, cfg.paths, cfg.download)
    assert Path(cfg.model.checkpoint_dir) == tmp_path / "models" / "chinese_L-12_H-768_A-12"
    assert {p.name: p.read_bytes() for p in Path(cfg.model.checkpoint_dir).iterdir()} == ckpt
    assert listing(tmp_path / "models") == ["SHA256SUMS", "chinese_L-12_H-768_A-12"]
    assert_installed(tmp_path / "clue", tnews_files)
    fetch.fetch_missing(cfg.task, cfg.model, cfg.paths, cfg.download)  # both present: no request at all
    assert server.log == [(PATH, None), ("/bert.zip", None)]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.commands.download", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_command_line_downloads_and_fails_in_one_line(tmp_path, server, tnews_files):
    server.files[PATH] = zip_bytes(tnews_files, "tnews_public")
    common = [f"paths.clue_dir={tmp_path / 'clue'}", f"download.checksums={checksums_file(tmp_path, tnews_files)}"]
    done = cli("data", "--tasks", "tnews", *common, f"download.clue_base_url={server.url}")
    assert done.returncode == 0, done.stderr
    assert_installed(tmp_path / "clue", tnews_files)

    url = closed_port_url()
    failed = cli("data", "--tasks", "iflytek", *common, f"download.clue_base_url={url}")
    dest = tmp_path / "clue" / "iflytek_public"
    assert failed.returncode == 2
    assert failed.stderr.startswith(f"error: cannot download {url}iflytek_public.zip (connection refused")
    assert failed.stderr.count("\n") == 1 and f"to fill {dest}/: " in failed.stderr  # one line, no traceback

    unknown = cli("data", "--tasks", "tnews,wnli", *common)
    assert (unknown.returncode, unknown.stderr) == (
        2,
        "error: unknown task 'wnli' in TASKS; choose from afqmc, cluewsc2020, cmnli, csl, iflytek, ocnli, tnews\n",
    )


def test_a_new_tasks_zip_is_checked_for_the_files_its_config_names(tmp_path, server):
    """OCNLI has no labels.json and trains on train.50k.json: the config says what must be there;
    its files' sums are recorded on first download and checked on the next `make data`."""
    from tests.helpers.clue_tasks import make_clue_tasks

    folder = make_clue_tasks(tmp_path / "fixture", 20, 10, 5) / "ocnli_public"
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    cfg = config(tmp_path, server.url, tmp_path / "checksums.yaml", task="ocnli")
    (tmp_path / "checksums.yaml").write_text("clue: {}\n", encoding="utf-8")
    server.files["/ocnli_public.zip"] = zip_bytes({k: v for k, v in files.items() if k != "train.50k.json"})
    with pytest.raises(
        UserError,
        match=rf"^{re.escape(server.url)}ocnli_public\.zip: ocnli_public/train\.50k\.json: "
        "missing; the download is corrupt",
    ):
        fetch_task(cfg)
    server.files["/ocnli_public.zip"] = zip_bytes(files, "ocnli_public")
    fetch_task(cfg)
    clue = tmp_path / "clue"
    assert {p.name: p.read_bytes() for p in (clue / "ocnli_public").iterdir()} == files
    assert (clue / "SHA256SUMS").read_text() == "".join(f"{sha(files[n])}  ocnli_public/{n}\n" for n in sorted(files))
    (clue / "ocnli_public" / "dev.json").write_bytes(b"changed\n")
    with pytest.raises(UserError, match=r"ocnli_public/dev\.json: sha256 .* as recorded in .*SHA256SUMS"):
        fetch_task(cfg)


@requires_shared(SHARED_CLUE / "tnews_public")
def test_real_tnews_zip_passes_the_shipped_checksums(tmp_path, server):
    files = {p.name: p.read_bytes() for p in sorted((SHARED_CLUE / "tnews_public").iterdir())}
    server.files[PATH] = zip_bytes(files, "tnews_public")
    cfg = compose(
        [
            "task=tnews",
            "model=tiny",
            f"paths.clue_dir={tmp_path / 'clue'}",
            f"download.clue_base_url={server.url}",
            "download.progress=false",
        ]
    )
    fetch_task(cfg)
    assert {p.name: p.read_bytes() for p in (tmp_path / "clue" / "tnews_public").iterdir()} == files


@requires_shared(SHARED_CLUE)
def test_shipped_checksums_match_the_reference_copies():
    known = fetch._known_sums(compose().download, "clue", "iflytek")
    assert sorted(known) == ["dev.json", "labels.json", "test.json"]
    for folder, task in (
        (SHARED_CLUE / "tnews_public", "tnews"),
        (SHARED_CLUE / "iflytek_public", "iflytek"),
        (SHARED_BERT, "bert_base"),
    ):
        section = "models" if task == "bert_base" else "clue"
        for name, want in fetch._known_sums(compose().download, section, task).items():
            assert fetch.digest(folder / name) == (want["sha256"], want["lines"]), folder / name


def tar_gz_bytes(files: dict[str, bytes], folder: str = "", extra: list | None = None) -> bytes:
    """A .tar.gz of ``files`` (inside ``folder``), plus ``extra`` raw TarInfo members (name, type, link)."""
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}" if folder else name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, kind, link in extra or []:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            archive.addfile(info)
    return buf.getvalue()


# Google's albert_base_zh.tar.gz unpacks to albert_base/ (users load albert_base/albert_config.json,
# model.ckpt-best, vocab_chinese.txt); brightmart's albert_tiny_zh_google.zip holds albert_config_tiny_g.json,
# albert_model.ckpt.*, vocab.txt.
ALBERT_BASE = {
    name: f"{name} bytes".encode()
    for name in [
        "albert_config.json",
        "vocab_chinese.txt",
        "model.ckpt-best.index",
        "model.ckpt-best.data-00000-of-00001",
        "model.ckpt-best.meta",
    ]
}


def model_config(tmp_path, model, url, **extra):
    return config(
        tmp_path,
        "http://127.0.0.1:9/",
        tmp_path / "none.yaml",
        **{
            "model": model,
            "model.url": url,
            "download.checksums": PROJECT_ROOT / "experiments" / "data" / "checksums.yaml",
            **extra,
        },
    )


def fetch_model(cfg):
    fetch.fetch_or_verify(fetch.model_target(cfg.model, cfg.download), cfg.download)


def test_a_tar_gz_release_unpacks_into_the_model_folder(tmp_path, server):
    server.files["/albert_base_zh.tar.gz"] = tar_gz_bytes(ALBERT_BASE, "albert_base")
    cfg = model_config(tmp_path, "albert_base_zh", server.url + "albert_base_zh.tar.gz")
    fetch_model(cfg)
    models = tmp_path / "models"
    assert listing(models) == ["SHA256SUMS", "albert_base_zh"]  # no .tar.gz.part, no .unpack left
    assert {p.name: p.read_bytes() for p in (models / "albert_base_zh").iterdir()} == ALBERT_BASE
    assert (models / "SHA256SUMS").read_text() == "".join(
        f"{sha(ALBERT_BASE[n])}  albert_base_zh/{n}\n" for n in sorted(ALBERT_BASE)
    )
    fetch_model(cfg)  # in place: verified, no request
    assert server.log == [("/albert_base_zh.tar.gz", None)]


@pytest.mark.parametrize(
    "member",
    [
        ("../escaped.txt", b"0", ""),
        ("albert_base/link", b"2", "/etc/passwd"),
        ("albert_base/up", b"2", "../../escaped.txt"),
    ],
)
def test_a_tar_member_outside_the_folder_is_refused(tmp_path, server, member):
    server.files["/a.tar.gz"] = tar_gz_bytes(ALBERT_BASE, "albert_base", extra=[member])
    cfg = model_config(tmp_path, "albert_base_zh", server.url + "a.tar.gz")
    with pytest.raises(
        UserError,
        match=rf"^{re.escape(server.url)}a\.tar\.gz: refused to unpack member "
        rf"'{re.escape(member[0])}' \(.+\); nothing was placed in ",
    ):
        fetch_model(cfg)
    assert listing(tmp_path / "models") == []
    assert not (tmp_path / "escaped.txt").exists()


def test_a_corrupt_tar_gz_is_an_error_and_leaves_nothing(tmp_path, server):
    body = tar_gz_bytes(ALBERT_BASE, "albert_base")
    server.files["/a.tar.gz"] = body[: len(body) // 2]  # complete as served, cut as made
    cfg = model_config(tmp_path, "albert_base_zh", server.url + "a.tar.gz")
    with pytest.raises(
        UserError,
        match=rf"^{re.escape(server.url)}a\.tar\.gz: not a valid tar\.gz archive \(.+\); "
        "nothing was placed in",
    ):
        fetch_model(cfg)
    assert listing(tmp_path / "models") == []


def test_brightmart_albert_tiny_zip_installs_where_its_config_points(tmp_path, server):
    files = {
        name: f"{name} bytes".encode()
        for name in [
            "albert_config_tiny_g.json",
            "vocab.txt",
            "albert_model.ckpt.index",
            "albert_model.ckpt.data-00000-of-00001",
            "albert_model.ckpt.meta",
            "checkpoint",
        ]
    }
    server.files["/albert_tiny_zh_google.zip"] = zip_bytes(files)
    cfg = model_config(tmp_path, "albert_tiny_zh", server.url + "albert_tiny_zh_google.zip")
    fetch_model(cfg)
    assert Path(cfg.model.checkpoint_dir) == tmp_path / "models" / "albert_tiny_zh_google"
    assert {p.name: p.read_bytes() for p in Path(cfg.model.checkpoint_dir).iterdir()} == files
    # A release without the file the config names is refused before anything is placed.
    server.files["/bad.zip"] = zip_bytes({n: d for n, d in files.items() if n != "albert_config_tiny_g.json"})
    cfg = model_config(tmp_path / "b", "albert_tiny_zh", server.url + "bad.zip")
    with pytest.raises(UserError, match=r"bad\.zip: albert_tiny_zh_google/albert_config_tiny_g\.json: missing; "):
        fetch_model(cfg)
