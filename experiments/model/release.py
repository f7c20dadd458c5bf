"""A model folder as configs and files: its bert4keras family and its layout, either a TF1 release
(``model.files``: JSON config, checkpoint prefix, vocab) or a Hugging Face folder (``config.json``,
``vocab.txt``, one of hf_format.WEIGHT_FILES). A folder holding the release files of ``model.files``
is read as the release; otherwise one with ``config.json`` and a weight file as an HF folder. No
TensorFlow: downloads and the checks that run before TensorFlow's import read this."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from experiments import records
from experiments.errors import UserError
from experiments.model import hf_format

FAMILIES = ("bert", "albert", "nezha", "electra")  # bert4keras's `model=` names this project tests
# Google's BERT release, the default of model.files
GOOGLE_FILES = {"config": "bert_config.json", "checkpoint": "bert_model.ckpt", "vocab": "vocab.txt"}


def family(model_cfg) -> str:
    name = OmegaConf.select(model_cfg, "family", default="bert")
    if name not in FAMILIES:
        raise UserError(f"model.family={name} is not one of {', '.join(FAMILIES)} (bert4keras's model= names)")
    return name


def files(model_cfg) -> dict[str, str]:
    """The release's file names in ``checkpoint_dir``: config, checkpoint (prefix), vocab."""
    return {**GOOGLE_FILES, **(OmegaConf.to_container(model_cfg.files) if model_cfg.get("files") else {})}


def checkpoint_files(model_cfg) -> list[str]:
    """The files a run reads from ``checkpoint_dir`` (the TF1 checkpoint as its index and data)."""
    f = files(model_cfg)
    return [f["config"], f["vocab"], f"{f['checkpoint']}.index", f"{f['checkpoint']}.data-00000-of-00001"]


def is_hf(model_cfg) -> bool:
    """Whether ``checkpoint_dir`` is read as a Hugging Face folder (not a TF1 release of ``model.files``)."""
    folder = Path(model_cfg.checkpoint_dir)
    if all((folder / name).is_file() for name in checkpoint_files(model_cfg)):
        return False
    return hf_format.is_hf_folder(folder)


def check_checkpoint(model_cfg) -> None:
    folder = Path(model_cfg.checkpoint_dir)
    if not folder.is_dir():
        raise UserError(
            f"{folder}: checkpoint folder of model={model_cfg.name} not found; run "
            f"`make model MODEL={model_cfg.name}` or set model.checkpoint_dir"
        )
    if is_hf(model_cfg):
        if not (folder / hf_format.VOCAB).is_file():
            raise UserError(
                f"{folder / hf_format.VOCAB}: missing from the HF model folder of model={model_cfg.name}; "
                "the suite tokenizes with BERT's WordPiece vocab: copy the model's vocab.txt there"
            )
        return
    for name in checkpoint_files(model_cfg):
        if not (folder / name).is_file():
            raise UserError(
                f"{folder / name}: missing from the checkpoint folder of model={model_cfg.name} (nor is it "
                f"an HF folder: config.json, vocab.txt and one of {', '.join(hf_format.WEIGHT_FILES)}); "
                f"run `make model MODEL={model_cfg.name}` to check the folder, or fetch it again"
            )


def config_path(model_cfg) -> Path:
    """The checkpoint folder's JSON config."""
    name = hf_format.CONFIG if is_hf(model_cfg) else files(model_cfg)["config"]
    return Path(model_cfg.checkpoint_dir) / name


def vocab_path(model_cfg) -> Path:
    """The checkpoint folder's vocabulary."""
    name = hf_format.VOCAB if is_hf(model_cfg) else files(model_cfg)["vocab"]
    return Path(model_cfg.checkpoint_dir) / name


def source(model_cfg) -> tuple[str, str]:
    """(the checkpoint read, "sha256:<hash>") of ``checkpoint_dir``: a TF1 release's prefix and its
    .index's hash (as the pretrain ids always had it), an HF folder's weight file and its hash."""
    folder = Path(model_cfg.checkpoint_dir)
    if is_hf(model_cfg):
        path = hf_format.weight_file(folder)
        return str(path), "sha256:" + records.file_sha256(path)
    prefix = str(folder / files(model_cfg)["checkpoint"])
    return prefix, "sha256:" + records.file_sha256(Path(prefix + ".index"))


def vocab_source(model_cfg) -> str:
    """Where a run's vocabulary comes from, for messages."""
    if model_cfg.checkpoint_dir is None:
        return "the tiny model's character vocabulary"
    return str(vocab_path(model_cfg))
