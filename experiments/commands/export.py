"""Write a run's fine-tuned classifier, or a pretrained model folder, as a Hugging Face folder.

    python -m experiments.commands.export --run RUN [--out DIR]          # make export RUN=...
    python -m experiments.commands.export --model-dir DIR [--out DIR]    # make export MODEL_DIR=...

RUN is a run record (results/runs/*.json) or a run's Hydra folder: its best-dev weights become
``<Family>ForSequenceClassification`` with the task's labels (default out:
``<results_dir>/export/<run>/``). MODEL_DIR is a folder made by ``make pretrain`` (its
pretrain_record.json says the model config): ``<Family>ForMaskedLM`` (default out:
``<MODEL_DIR>-hf``). The folder holds model.safetensors, config.json, vocab.txt,
tokenizer_config.json and a README model card; experiments/model/hf_export.py says how the suite's
head is written. The last line printed is the folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from experiments import config as _config  # noqa: F401  (registers the project_root resolver)
from experiments import records
from experiments.commands import cli
from experiments.errors import UserError


def export_run(run: str | Path, out: str | Path | None = None) -> Path:
    from experiments.commands.predict import find_record, load_run
    from experiments.model import encoder, head, hf_export, release

    record_file, record = find_record(run)
    cfg, label_ids, tokenizer, trainer = load_run(record)
    model, model_cfg = trainer.model, cfg.model
    family = release.family(model_cfg)
    _, vocab = tokenizer_vocab(tokenizer)
    config = encoder.bert_config(model_cfg, len(vocab))
    transformer = encoder.build_encoder(OmegaConf.merge(model_cfg, {"checkpoint_dir": None}), config, seed=0)
    arrays = hf_export.encoder_arrays(model, transformer)
    dense = model.get_layer(head.HEAD_LAYER)
    tensors = hf_export.classifier_tensors(arrays, dense.kernel.numpy(), dense.bias.numpy(), family)
    hf_config = hf_export.hf_config(
        config, family, f"{hf_export.ARCH[family]}ForSequenceClassification", [str(label) for label in label_ids]
    )
    out = Path(out) if out else Path(cfg.paths.results_dir) / "export" / record_file.stem
    card = run_card(record, record_file, hf_export.ARCH[family])
    return hf_export.write_folder(out, tensors, hf_config, vocab, card, int(config["max_position_embeddings"]))


def export_pretrained(model_dir: str | Path, out: str | Path | None = None) -> Path:
    import tensorflow as tf

    from experiments.model import encoder, hf_export, release

    model_dir = Path(model_dir)
    record_path = model_dir / records.PRETRAIN_RECORD_FILE
    if not record_path.is_file():
        raise UserError(
            f"{model_dir}: no {records.PRETRAIN_RECORD_FILE}; MODEL_DIR takes a folder made by "
            "`make pretrain` (a released model is already on the Hub or at its URL)"
        )
    record = json.loads(record_path.read_text(encoding="utf-8"))
    model_cfg = OmegaConf.create({**record["config"]["model"], "checkpoint_dir": str(model_dir)})
    family = release.family(model_cfg)
    if family not in ("bert", "albert", "nezha"):
        raise UserError(f"{model_dir}: a {family} model; only masked-LM families (bert, albert, nezha) are pretrained")
    release.check_checkpoint(model_cfg)
    vocab_file = release.vocab_path(model_cfg)
    vocab_size = sum(1 for _ in vocab_file.open(encoding="utf-8"))
    config = encoder.bert_config(model_cfg, vocab_size)
    reader = tf.train.load_checkpoint(str(model_dir / release.files(model_cfg)["checkpoint"]))
    arrays = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    tensors = hf_export.pt_tensors(arrays, family)
    hf_config = hf_export.hf_config(config, family, f"{hf_export.ARCH[family]}ForMaskedLM", None)
    out = Path(out) if out else model_dir.with_name(model_dir.name + "-hf")
    return hf_export.write_folder(
        out,
        tensors,
        hf_config,
        vocab_file,
        pretrained_card(record, model_dir, hf_export.ARCH[family]),
        int(config["max_position_embeddings"]),
    )


def tokenizer_vocab(tokenizer) -> tuple[object, list[str]]:
    """The run's vocabulary in id order (bert4keras's Tokenizer keeps it as ``_token_dict``)."""
    from experiments.model import export

    return tokenizer, export.vocab_tokens(tokenizer._token_dict)


def run_card(record: dict, record_file: Path, arch: str) -> str:
    acc = record.get("best_dev_acc")
    return "\n".join(
        [
            f"# {record['task']} / {record['method']} / {record['model']} (seed {record['seed']})",
            "",
            f"Fine-tuned by the CLUE adversarial-training suite (`make run`); "
            f"exported with `make export RUN={record_file}`.",
            "",
            "| | |",
            "|---|---|",
            f"| task | {record['task']} |",
            f"| method | {record['method']} |",
            f"| model config | {record['model']} |",
            f"| seed | {record['seed']} |",
            f"| settings id | {record['settings_id']} |",
            f"| best dev accuracy | {acc:.4f} (epoch {record.get('best_epoch')}) |"
            if acc is not None
            else "| best dev accuracy | - |",
            f"| record | {record_file.name} |",
            "",
            (
                f"Head: `{arch}ForSequenceClassification`. The suite's classifier reads the last layer's [CLS] "
                "vector directly (no pooler); here the pooler is made linear (weight 1e-6 x identity, bias 0) and the "
                "classifier's weight scaled by 1e6, so that the logits equal the suite's to float32 precision. To "
                "fine-tune further in transformers, re-initialise `pooler` and `classifier` first."
            ),
            "",
        ]
    )


def pretrained_card(record: dict, model_dir: Path, arch: str) -> str:
    history = record.get("history") or [{}]
    return "\n".join(
        [
            f"# {record['config']['model']['name']} pretrained on {', '.join(record.get('tasks', []))}",
            "",
            (
                f"Masked-LM pretraining by the CLUE adversarial-training suite (`make pretrain`), "
                f"id {record.get('id')}, "
                f"exported from {model_dir.name} as `{arch}ForMaskedLM`."
            ),
            "",
            f"Steps: {record.get('steps')}; held-out masked-token accuracy {history[-1].get('accuracy')}.",
            "",
        ]
    )


def main(argv=None) -> int:
    p = cli.parser("experiments.commands.export", __doc__)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a run record (results/runs/*.json) or a run's Hydra folder")
    source.add_argument("--model-dir", help="a folder made by make pretrain")
    p.add_argument("--out", default=None, help="the HF folder to write")

    def export(args) -> None:
        folder = export_run(args.run, args.out) if args.run else export_pretrained(args.model_dir, args.out)
        print(folder, flush=True)

    return cli.main(p, export, argv)


if __name__ == "__main__":
    sys.exit(main())
