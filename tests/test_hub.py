"""Models from the Hugging Face Hub, against a local server: the real huggingface_hub (through
``make model``'s command, in a subprocess with HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE set as a user
sets them) fetches a tiny repo at a pinned revision from 127.0.0.1, verifies it, and the suite
loads it; a second call offline is served from the cache; an uncached revision offline is one line
(naming the repo and revision) within 10 s of CPU time (wall time depends on the machine's load).
Nothing is downloaded from the internet."""

import hashlib
import json
import os
import resource
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from tests.helpers.google_checkpoint import CONFIGS, release_variables
from tests.helpers.hf_folders import write_hf_folder

REPO, REVISION = "suite-test/tiny-bert", "0123456789abcdef0123456789abcdef01234567"
ROOT = Path(__file__).resolve().parents[1]


class Hub(BaseHTTPRequestHandler):
    """What snapshot_download asks for a commit revision: the tree listing, then HEAD and GET of
    each file (huggingface.co's /api/models/<repo>/tree/<rev> and /<repo>/resolve/<rev>/<file>)."""

    files: ClassVar[dict[str, bytes]] = {}
    requests: ClassVar[list[str]] = []

    def log_message(self, *args):
        pass

    def _file(self):
        path = unquote(urlparse(self.path).path)
        prefix = f"/{REPO}/resolve/{REVISION}/"
        return self.files.get(path[len(prefix) :]) if path.startswith(prefix) else None, path[len(prefix) :]

    def _headers(self, body: bytes, name: str):
        lfs = name.endswith((".safetensors", ".h5", ".bin"))
        self.send_response(200)
        self.send_header("X-Repo-Commit", REVISION)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest() if lfs else git_oid(body)}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()

    def do_HEAD(self):
        self.requests.append("HEAD " + self.path)
        body, name = self._file()
        if body is None:
            self.send_error(404)
            return
        self._headers(body, name)

    def do_GET(self):
        self.requests.append("GET " + self.path)
        path = urlparse(self.path).path
        if path == f"/api/models/{REPO}/tree/{REVISION}":
            listing = [
                {
                    "type": "file",
                    "oid": git_oid(body),
                    "size": len(body),
                    "path": name,
                    **(
                        {"lfs": {"oid": hashlib.sha256(body).hexdigest(), "size": len(body), "pointerSize": 134}}
                        if name.endswith((".safetensors", ".h5", ".bin"))
                        else {}
                    ),
                }
                for name, body in sorted(self.files.items())
            ]
            data = json.dumps(listing).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        body, name = self._file()
        if body is None:
            self.send_error(404)
            return
        self._headers(body, name)
        self.wfile.write(body)


def git_oid(body: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A tiny bert repo (config.json, vocab.txt, model.safetensors, and a pytorch_model.bin that must
    not be fetched) served on 127.0.0.1."""
    folder = tmp_path_factory.mktemp("repo")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"体育财经科技娱乐"]
    config = {**CONFIGS["bert"], "vocab_size": len(vocab)}
    arrays = release_variables("bert", config, np.random.default_rng(5))
    write_hf_folder(folder, "bert", config, vocab, arrays)
    Hub.files = {p.name: p.read_bytes() for p in folder.iterdir()}
    Hub.files["pytorch_model.bin"] = b"not fetched: hub_weights names model.safetensors"
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", arrays
    server.shutdown()


def make_model(endpoint, home, tmp_path, offline=False, revision=REVISION):
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home),
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "HF_HUB_DISABLE_XET": "1",
    }
    overrides = [
        "model=macbert_base",
        f"model.hub_id={REPO}",
        f"model.hub_revision={revision}",
        "model.hub_weights=model.safetensors",
        f"model.checkpoint_dir={tmp_path / 'no-folder'}",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.commands.download", "model", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # CPU seconds: what the command costs, whatever the load
    return proc, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


@pytest.mark.slow
def test_fetch_verify_load_then_offline_from_the_cache(hub, tmp_path):
    endpoint, arrays = hub
    home = tmp_path / "hf-home"
    Hub.requests.clear()
    proc, _ = make_model(endpoint, home, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    snapshot = home / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / REVISION
    assert proc.stdout.strip().splitlines()[-1].startswith(f"{snapshot}: {REPO}@{REVISION}, 1 LFS file(s) match")
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    assert not any("pytorch_model.bin" in r for r in Hub.requests)  # only the files needed
    # the suite loads the snapshot: every encoder weight is the repo's
    from omegaconf import OmegaConf

    from experiments.model import encoder, head, tokenizer

    cfg = OmegaConf.create({"name": "macbert_base", "family": "bert", "checkpoint_dir": str(snapshot)})
    _, vocab = tokenizer.load_tokenizer(cfg, [])
    model = head.build_classifier(cfg, encoder.bert_config(cfg, len(vocab)), 2, seed=0)
    np.testing.assert_array_equal(encoder.embedding_matrix(model).numpy(), arrays["bert/embeddings/word_embeddings"])
    # offline, from the cache: no request reaches the server
    Hub.requests.clear()
    proc, _ = make_model(endpoint, home, tmp_path, offline=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Hub.requests == []


@pytest.mark.slow
def test_an_uncached_revision_offline_is_one_line_within_10_cpu_seconds(hub, tmp_path):
    endpoint, _ = hub
    other = "fedcba9876543210fedcba9876543210fedcba98"
    proc, seconds = make_model(endpoint, tmp_path / "empty-home", tmp_path, offline=True, revision=other)
    assert proc.returncode == 2 and seconds < 10
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{REPO}@{other}" in errors[0] and "HF_HUB_OFFLINE is set" in errors[0]
    assert "config.json, vocab.txt, model.safetensors" in errors[0] and "Traceback" not in proc.stderr
