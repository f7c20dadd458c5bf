"""A model release as configs and files: its bert4keras family and the names of its files in
``checkpoint_dir`` (``model.files``). No TensorFlow: downloads and the checks that run before
TensorFlow's import read this."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from experiments.errors import UserError

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


def check_checkpoint(model_cfg) -> None:
    folder = Path(model_cfg.checkpoint_dir)
    if not folder.is_dir():
        raise UserError(f"{folder}: checkpoint folder of model={model_cfg.name} not found; run "
                        f"`make model MODEL={model_cfg.name}` or set model.checkpoint_dir")
    for name in checkpoint_files(model_cfg):
        if not (folder / name).is_file():
            raise UserError(f"{folder / name}: missing from the checkpoint folder of model={model_cfg.name}; "
                            f"run `make model MODEL={model_cfg.name}` to check the folder, or fetch it again")


def config_path(model_cfg) -> Path:
    """The checkpoint folder's JSON config."""
    return Path(model_cfg.checkpoint_dir) / files(model_cfg)["config"]


def vocab_path(model_cfg) -> Path:
    """The checkpoint folder's vocabulary."""
    return Path(model_cfg.checkpoint_dir) / files(model_cfg)["vocab"]


def vocab_source(model_cfg) -> str:
    """Where a run's vocabulary comes from, for messages."""
    if model_cfg.checkpoint_dir is None:
        return "the tiny model's character vocabulary"
    return str(vocab_path(model_cfg))
