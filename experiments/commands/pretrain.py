"""Masked-LM pretraining of one model on CLUE texts, saved as a model folder every command takes.

    python -m experiments.commands.pretrain task=tnews model=bert_mini pretrain.max_steps=2000

From scratch for a model config without a checkpoint (``tiny``, ``bert_mini``: a character
vocabulary from the corpus, or ``pretrain.vocab``), or continued from its checkpoint (TAPT:
``bert_base``, ``roberta_wwm_ext``, ``macbert_base``, ALBERT, NEZHA). The folder,
``<paths.models_dir>/pretrained/<id>/``, is in the family's release layout with
``pretrain_record.json`` beside it; the last line printed is its path. Fine-tune from it with
``make run MODEL=<the same model> ARGS="model.checkpoint_dir=<that folder>"``.

``pretrain`` reads as its steps: prepare (checks that need no TensorFlow: settings, the family,
the device guard with this pretraining's ETA, data and checkpoint on disk), build (corpus,
tokenizer, masked-LM model, optimizer, the loop and its state, restored when resuming), train,
save (the model folder), record. Each step is a function below it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from experiments import CONFIG_DIR, config, records
from experiments.errors import UserError, reported
from experiments.machine import devices, environment

if TYPE_CHECKING:  # imported where used: TensorFlow loads only after the checks of ``prepare``
    from experiments.data.corpus import MlmData
    from experiments.data.masking import MaskedBatch
    from experiments.model.mlm import MaskedLM
    from experiments.train.pretraining import Pretrainer
    from experiments.train.run_state import RunState

log = logging.getLogger("experiments.commands.pretrain")

# The peak learning rate when pretrain.learning_rate is null: Gururangan et al. (2020) continue
# RoBERTa at 1e-4 (TAPT); from scratch a small BERT takes a larger step on a small corpus.
RATE_FROM_CHECKPOINT, RATE_FROM_SCRATCH = 1e-4, 5e-4


def pretrain(cfg: DictConfig) -> dict:
    """Pretrain as ``cfg`` says; return the pretrain record (also written into the model folder)."""
    plan = prepare(cfg)
    started = time.time()
    job = build(cfg, plan)
    train(cfg, job)
    folder = save(cfg, job)
    record = write_record(cfg, job, folder, time.time() - started)
    log.info(
        "%s after %d steps: held-out masked-token accuracy %.4f (step 0: %.4f); model folder:",
        record["status"],
        record["steps"],
        job.trainer.history[-1]["accuracy"],
        job.trainer.history[0]["accuracy"],
    )
    print(folder, flush=True)  # the last line: the folder to fine-tune from
    return record


@dataclass
class Plan:
    """What ``prepare`` found: the corpus tasks' configs, where the weights start, the id."""

    tasks: list[DictConfig]  # the corpus's task configs
    checkpoint: str | None  # the source checkpoint prefix (TAPT), None from scratch
    init: str  # "random" (", vocab sha256:..." with pretrain.vocab) or "sha256:<the source .index's hash>"
    id: str
    folder: Path


def prepare(cfg: DictConfig) -> Plan:
    """Everything that can fail before TensorFlow's import: settings, the family (ELECTRA has no
    MLM head), the device (BERT-base on a CPU: the guard's one line with this pretraining's ETA),
    the data and the checkpoint (fetched first where download.auto says so)."""
    from experiments.data import fetch, hub, loaders
    from experiments.model import mlm, release

    config.validate_pretrain(cfg)
    mlm.check_family(cfg.model)
    tasks = corpus_tasks(cfg)
    devices.check_device(
        cfg.pretrain.device,
        cfg.model,
        key="pretrain.device",
        eta=lambda: devices.pretrain_cpu_estimate(cfg.model, cfg.pretrain, cfg.task.name, planned_steps(cfg, tasks)),
    )
    if OmegaConf.select(cfg, "download.auto", default=False):
        fetch.fetch_missing(cfg.task, cfg.model, cfg.paths, cfg.download)
        for task_cfg in tasks[1:]:
            fetch.ensure(fetch.task_target(cfg.paths.clue_dir, task_cfg, cfg.download), cfg.download)
    for task_cfg in tasks:
        loaders.task_dir(cfg.paths.clue_dir, task_cfg)
    checkpoint, init = None, "random"
    hub.resolve(cfg.model)  # a model from the Hub: checkpoint_dir -> its cached snapshot
    if cfg.model.checkpoint_dir is not None:
        release.check_checkpoint(cfg.model)
        checkpoint, init = release.source(cfg.model)
    elif cfg.pretrain.vocab is not None:  # the file's content is a setting, not its path
        if not Path(cfg.pretrain.vocab).is_file():
            raise UserError(
                f"pretrain.vocab={cfg.pretrain.vocab}: file not found; give a vocab.txt or null (a "
                "character vocabulary from the corpus)"
            )
        init = "random, vocab sha256:" + hashlib.sha256(Path(cfg.pretrain.vocab).read_bytes()).hexdigest()
    if cfg.pretrain.learning_rate is None:
        cfg.pretrain.learning_rate = RATE_FROM_SCRATCH if checkpoint is None else RATE_FROM_CHECKPOINT
    resolved = OmegaConf.to_container(cfg, resolve=True)
    task_dicts = [OmegaConf.to_container(t, resolve=True) for t in tasks]
    pid = records.pretrain_id(resolved, task_dicts, init)
    folder = Path(cfg.paths.models_dir) / "pretrained" / (cfg.pretrain.name or pid)
    return Plan(tasks, checkpoint, init, pid, folder)


def corpus_tasks(cfg: DictConfig) -> list:
    """The task configs of ``pretrain.corpus.tasks`` (null: the command's task=, with its overrides)."""
    names = list(cfg.pretrain.corpus.tasks or [cfg.task.name])
    out = []
    for name in names:
        if name == cfg.task.name:
            out.append(cfg.task)
            continue
        config.check_option("task", name, "pretrain.corpus.tasks")
        out.append(config.load_group_option("task", name))
    return out


def planned_steps(cfg: DictConfig, tasks: list) -> int | None:
    """The pretraining's steps as the device guard counts them, before reading the corpus: the
    lines of its files (the official sizes where not downloaded yet), None if unknown."""
    from experiments.data import corpus
    from experiments.machine import estimate

    if cfg.pretrain.max_steps is not None:
        return int(cfg.pretrain.max_steps)
    n = 0
    for task_cfg in tasks:
        folder = Path(cfg.paths.clue_dir) / task_cfg.dir
        for split in cfg.pretrain.corpus.splits:
            for name, required in corpus.split_files(task_cfg, split):
                path = folder / name
                if path.is_file():
                    with path.open("rb") as f:
                        lines = sum(1 for line in f if line.strip())
                elif split == "train" and task_cfg.name in estimate.TRAIN_EXAMPLES:
                    lines = estimate.TRAIN_EXAMPLES[task_cfg.name]
                elif required:
                    return None
                else:
                    continue
                n += min(lines, cfg.pretrain.corpus.max_texts or lines)
    return int(cfg.pretrain.epochs) * math.ceil(n * (1 - cfg.pretrain.held_out_share) / cfg.pretrain.batch_size)


@dataclass
class Job:
    """What ``build`` made: the masked-LM model, the loop, its state, the data and facts."""

    plan: Plan
    mlm: MaskedLM
    trainer: Pretrainer
    state: RunState
    train: MlmData
    held_out: list[MaskedBatch]
    total_steps: int
    vocab: dict
    bert_config: dict
    corpus: dict
    timings: dict


def build(cfg: DictConfig, plan: Plan) -> Job:
    """Seed; read and tokenise the corpus; the vocabulary, the masked-LM model (from the
    checkpoint, or random), AdamW on BERT's schedule, the loop and its state (restored if resuming)."""
    from experiments.data import batching, corpus, masking
    from experiments.model import encoder, mlm, rewrites
    from experiments.model import tokenizer as tokenizers
    from experiments.train import monitor, optim, run_state, schedule
    from experiments.train.pretraining import Pretrainer, held_out_batches

    p = cfg.pretrain
    environment.seed_everything(cfg.seed, deterministic=p.deterministic)
    texts = corpus.read_texts(cfg.paths.clue_dir, plan.tasks, list(p.corpus.splits), p.corpus.max_texts)
    tokenizer, vocab = tokenizers.load_tokenizer(cfg.model, texts.texts + [b for b in texts.texts_b if b], p.vocab)
    bert_config = encoder.bert_config(cfg.model, len(vocab))
    if p.max_length > bert_config["max_position_embeddings"]:
        raise UserError(
            f"pretrain.max_length={p.max_length} is above the model's max_position_embeddings="
            f"{bert_config['max_position_embeddings']}; lower it"
        )
    spec = masking.MaskSpec.from_vocab(vocab, masked_share=p.masked_share)
    special = {vocab[t] for t in ("[PAD]", "[CLS]", "[SEP]") if t in vocab}
    tokenize_start = time.perf_counter()
    data = corpus.tokenize(
        tokenizer, texts.texts, texts.texts_b, p.max_length, special, p.whole_word_masking, bool(p.progress)
    )
    tokenize_seconds = time.perf_counter() - tokenize_start
    held = corpus.held_out_indices(len(data), p.held_out_share, p.held_out_max)
    train_data = corpus.subset(data, sorted(set(range(len(data))) - set(held.tolist())))
    held_data = corpus.subset(data, held)
    log.info(
        "corpus: %d texts (%d tokens) of %s, %d held out; vocabulary %d",
        len(texts),
        data.tokens,
        ", ".join(f"{f['task']} {f['split']}" for f in texts.files),
        len(held_data),
        len(vocab),
    )

    masked_lm = mlm.build_mlm(cfg.model, bert_config, cfg.seed, encoder.checkpoint_weights(cfg.model))
    rewrites.prepare_model(masked_lm.model)  # keyed dropout, cheaper GELU / LayerNorm / attention
    steps_per_epoch = batching.num_batches(len(train_data), p.batch_size)
    total = int(p.max_steps) if p.max_steps is not None else int(p.epochs) * steps_per_epoch
    rate = schedule.LinearWarmupDecay(p.learning_rate, total, int(total * p.warmup_ratio))
    optimizer = optim.make_adamw(rate, masked_lm.model, p.weight_decay, p.adam_epsilon, p.clip_norm)
    trainer = Pretrainer(masked_lm.model, optimizer, spec, p.batch_size, p.bucket_by_length, p.progress)
    state = run_state.RunState(
        Path(cfg.paths.results_dir) / "checkpoints" / f"pretrain_{plan.id}", masked_lm.model, optimizer
    )
    if p.resume and (history := state.restore()):
        trainer.history = history
        log.info("resuming after step %d of %d from %s", trainer.step, total, state.state_dir)
    if p.tensorboard:  # train/loss, train/accuracy, train/learning_rate per step; held_out/* per evaluation
        trainer.board = monitor.TensorBoard(
            Path(cfg.paths.results_dir) / "tensorboard" / f"pretrain_{plan.id}", resume_step=trainer.step
        )
    held_out = held_out_batches(held_data, p.eval_batch_size, spec)
    facts = corpus.describe(texts, train_data, held_data)
    facts["whole_word_masking"] = bool(p.whole_word_masking)
    facts["vocab_size"] = len(vocab)
    return Job(
        plan,
        masked_lm,
        trainer,
        state,
        train_data,
        held_out,
        total,
        vocab,
        bert_config,
        facts,
        {"tokenize_seconds": tokenize_seconds},
    )


def train(cfg: DictConfig, job: Job) -> None:
    """Fit to the planned steps, saving at every held-out evaluation so that an interruption resumes."""
    from experiments.train import optim

    log.info(
        "pretraining %s on %s, seed %d, %d steps (batch %d), head %s",
        cfg.model.name,
        "+".join(t.name for t in job.plan.tasks),
        cfg.seed,
        job.total_steps,
        cfg.pretrain.batch_size,
        job.mlm.head_source,
    )
    start = time.perf_counter()
    try:
        with optim.out_of_memory_advice(cfg.pretrain, cfg.pretrain.max_length, "pretrain", "pretrain.max_length"):
            job.trainer.fit(
                job.train, job.held_out, job.total_steps, cfg.seed, cfg.pretrain.eval_every, on_save=job.state.save_step
            )
    finally:
        if job.trainer.board is not None:
            job.trainer.board.close()
    job.timings["fit_seconds"] = time.perf_counter() - start


def save(cfg: DictConfig, job: Job) -> Path:
    """The model folder in the family's release layout (a diverged pretraining saves no weights)."""
    from experiments.model import encoder, export, release

    folder = job.plan.folder
    if "diverged_at" in job.trainer.ending:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    files = release.files(cfg.model)
    arrays = export.release_arrays(job.mlm.encoder)
    copied = {}
    if job.plan.checkpoint is not None:  # the release's pooler / NSP head: not trained here, kept as released
        source = encoder.checkpoint_weights(cfg.model)
        copied = {k: v for k, v in export.untrained_arrays(source).items() if k not in arrays}
        export.write_model_folder(folder, files, job.bert_config, release.vocab_path(cfg.model), {**arrays, **copied})
    else:
        bert_config = {**job.bert_config, "initializer_range": 0.02}
        export.write_model_folder(folder, files, bert_config, export.vocab_tokens(job.vocab), arrays)
    job.timings["saved_variables"] = len(arrays) + len(copied)
    job.timings["copied_unchanged"] = sorted(copied)
    return folder


def write_record(cfg: DictConfig, job: Job, folder: Path, seconds: float) -> dict:
    history = job.trainer.history
    trained = [h for h in history if h.get("train_seconds")]
    train_seconds = sum(h["train_seconds"] for h in trained)
    tokens = sum(h["train_tokens"] for h in trained)
    timings = {
        "total_seconds": seconds,
        "train_seconds": train_seconds,
        "tokens_per_second": tokens / train_seconds if train_seconds else None,
        **{k: v for k, v in job.timings.items() if k != "copied_unchanged"},
    }
    model = {
        "family": OmegaConf.select(cfg, "model.family", default="bert"),
        "checkpoint": job.plan.checkpoint,
        "mlm_head": job.mlm.head_source,
        "copied_unchanged": job.timings.get("copied_unchanged", []),
    }
    status = records.DIVERGED if "diverged_at" in job.trainer.ending else records.COMPLETE
    record = records.pretrain_record(
        OmegaConf.to_container(cfg, resolve=True),
        [OmegaConf.to_container(t, resolve=True) for t in job.plan.tasks],
        job.plan.init,
        status,
        history,
        job.trainer.ending,
        job.corpus,
        model,
        timings,
        environment.describe(),
    )
    records.write_json_atomic(folder / records.PRETRAIN_RECORD_FILE, record)
    job.state.discard_state()
    return record


@hydra.main(config_path=str(CONFIG_DIR), config_name="pretraining", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with reported(
        interrupted="no model folder written; the steps up to the last held-out evaluation are kept, "
        "rerun the same command with pretrain.resume=true to continue"
    ):
        pretrain(cfg)


if __name__ == "__main__":
    with reported():
        config.check_choices(sys.argv[1:])
    main()
