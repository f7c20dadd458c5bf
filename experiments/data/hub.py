"""Model folders from the Hugging Face Hub: a model config's ``hub_id`` at ``hub_revision`` (a commit sha).

Which source a model config's folder comes from (docs/models.md):

1. a folder already at ``model.checkpoint_dir`` (a TF1 release or an HF folder you put there) wins;
2. else, with ``model.url``, the TF1 release archive is downloaded there (data/fetch.py), as the
   released configs always did, so that earlier runs are reproduced from the same files;
3. else, with ``model.hub_id``, the Hub snapshot at ``model.hub_revision`` is used from the Hub's
   standard cache (``HF_HOME``/``HF_HUB_CACHE``) or downloaded into it, and ``model.checkpoint_dir``
   is pointed at the snapshot folder. ``model.url=null`` chooses the Hub for a model that has both.

``huggingface_hub.snapshot_download`` fetches only ``config.json``, ``vocab.txt`` and the weight file
``model.hub_weights`` names (shards too for a safetensors index); it honours ``HF_ENDPOINT`` (a
mirror) and ``HF_HUB_OFFLINE``. After a download each LFS file's sha256 is checked against the
Hub's tree listing. Offline with nothing cached: one line naming the repo, revision and files and
how to bring them from another machine.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import OmegaConf

from experiments import records
from experiments.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = "model.safetensors"


def hub_id(model_cfg) -> str | None:
    return OmegaConf.select(model_cfg, "hub_id", default=None)


def uses_hub(model_cfg) -> bool:
    """Whether ``model_cfg``'s folder comes from the Hub: a hub id, no TF1 URL, no folder at checkpoint_dir."""
    if hub_id(model_cfg) is None or OmegaConf.select(model_cfg, "url", default=None) is not None:
        return False
    return model_cfg.checkpoint_dir is None or not Path(model_cfg.checkpoint_dir).exists()


def revision(model_cfg) -> str:
    return str(OmegaConf.select(model_cfg, "hub_revision", default=None) or "main")


def files(model_cfg) -> list[str]:
    """The files fetched: the config, the vocabulary and the weights (a safetensors index: its shards too)."""
    weights = OmegaConf.select(model_cfg, "hub_weights", default=None) or DEFAULT_WEIGHTS
    out = ["config.json", "vocab.txt", weights]
    if weights.endswith(".index.json"):
        out.append(weights.removesuffix(".index.json").removesuffix(".safetensors") + "-*.safetensors")
    return out


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def snapshot(model_cfg, download: bool = True) -> Path:
    """The snapshot folder of ``model_cfg``'s hub id at its revision, from the cache or downloaded
    (``download``; never when HF_HUB_OFFLINE is set)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo, rev, wanted = hub_id(model_cfg), revision(model_cfg), files(model_cfg)
    try:
        folder = Path(snapshot_download(repo, revision=rev, allow_patterns=wanted, local_files_only=not download))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        raise UserError(unavailable(model_cfg, err)) from None
    missing = [name for name in wanted if "*" not in name and not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"{repo}@{rev}: the snapshot in {folder} lacks {', '.join(missing)}; that revision does not "
            "hold them (pick another hub_revision or model.hub_weights), or the download was cut: "
            "delete the folder and fetch again"
        )
    return folder


def unavailable(model_cfg, err: Exception) -> str:
    """One line: the repo, the revision, the files, and how to bring them here."""
    repo, rev, wanted = hub_id(model_cfg), revision(model_cfg), files(model_cfg)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why = "HF_HUB_OFFLINE is set" if offline else " ".join(str(err).split())[:160]
    from huggingface_hub import constants

    return (
        f"{repo}@{rev}: {', '.join(wanted)} not in the Hugging Face cache {cache_dir()} and not downloadable "
        f"({why}; endpoint {constants.ENDPOINT}); on a machine that reaches the Hub (or a mirror: HF_ENDPOINT) run "
        f"`make model MODEL={model_cfg.name}` and copy its {cache_dir()}/models--{repo.replace('/', '--')} folder "
        "here (HF_HOME says where), or put those files in a folder and set model.checkpoint_dir to it"
    )


def verify(model_cfg, folder: Path) -> int:
    """Check each LFS file of the snapshot against the sha256 the Hub announced for it: the cache
    stores it as ``blobs/<that sha256>`` (the snapshot holds links to the blobs). Returns the number
    checked; a mismatch is one line naming the file."""
    checked = 0
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        blob = path.resolve()
        if blob.parent.name != "blobs" or len(blob.name) != 64 or any(c not in "0123456789abcdef" for c in blob.name):
            continue  # a git file (its blob is named by its git id), or a copy put there by hand
        digest = records.file_sha256(blob)
        if digest != blob.name:
            raise UserError(
                f"{path}: sha256 {digest}, but the Hub announced {blob.name} for "
                f"{hub_id(model_cfg)}@{revision(model_cfg)}; delete it and fetch again"
            )
        checked += 1
    return checked


def resolve(model_cfg, download: bool = False) -> None:
    """Point ``model_cfg.checkpoint_dir`` at the Hub snapshot when the Hub is its source (see above)."""
    if uses_hub(model_cfg):
        folder = snapshot(model_cfg, download)
        log.info("model=%s: %s@%s from %s", model_cfg.name, hub_id(model_cfg), revision(model_cfg), folder)
        model_cfg.checkpoint_dir = str(folder)


def origin(model_cfg) -> dict:
    """The hub id and revision of a checkpoint folder inside the Hub cache (for the run record), else {}."""
    repo = hub_id(model_cfg)
    if repo is None or model_cfg.checkpoint_dir is None:
        return {}
    folder = Path(model_cfg.checkpoint_dir)
    if folder.parent.name == "snapshots" and folder.parent.parent.name == f"models--{repo.replace('/', '--')}":
        return {"hub_id": repo, "hub_revision": folder.name}
    return {}


def checkpoint_record(model_cfg) -> dict | None:
    """The run record's ``checkpoint``: the layout, weight file and sha256 (model.encoder), the hub
    id and revision when the folder is a Hub snapshot, and the tensors the encoder did not use."""
    from experiments.model import encoder

    facts = encoder.checkpoint_facts(model_cfg)
    return None if facts is None else {**facts, **origin(model_cfg)}
