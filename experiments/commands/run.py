"""Fine-tune one model on one CLUE task with one method and write its run record.

    python -m experiments.commands.run task=iflytek method=fgm model=bert_base seed=0 trainer.epochs=3

``run`` reads as the steps of a run: prepare (checks that need no TensorFlow, so that a mistake
is one line within seconds), build (data, model, method, trainer), train (resuming where an
interrupted run stopped), attack (accuracy under attack of the best weights, when
``eval.attack.epsilons`` asks for it; the text attack when ``eval.text_attack.enabled``), write the record.
Each step is a function below it.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from experiments import CONFIG_DIR, config, records
from experiments.errors import reported
from experiments.machine import devices, environment, slurm

if TYPE_CHECKING:  # imported where used: TensorFlow loads only after the checks of ``prepare``
    from bert4keras.tokenizers import Tokenizer

    from experiments.data.batching import Dataset
    from experiments.train.loop import Trainer
    from experiments.train.run_state import RunState

log = logging.getLogger("experiments.commands.run")


def run(cfg: DictConfig) -> dict:
    """Train as ``cfg`` says and return the run record (also written under results_dir/runs/)."""
    resolved = records.with_pretraining(OmegaConf.to_container(cfg, resolve=True))  # model.pretrained
    record_file = records.record_path(cfg.paths.results_dir, resolved)
    if cfg.trainer.skip_completed and (done := records.read_record(record_file, records.DONE)) is not None:
        log.info("%s record exists, skipping: %s", done["status"], record_file)
        return done
    prepare(cfg)
    started = time.time()
    job = build(cfg, record_file)
    train(cfg, job)
    robustness = {**(attack(cfg, job) or {}), **text_attack(cfg, job, record_file)} or None
    return write_record(cfg, resolved, record_file, job, time.time() - started, robustness)


def prepare(cfg: DictConfig) -> None:
    """Everything that can fail before TensorFlow's slow, noisy import: the settings, the device
    (a GPU TensorFlow cannot use, or days on a CPU), and the data and checkpoint on disk (fetched
    first on a fresh machine, so that offline it fails in a second)."""
    from experiments.data import fetch, hub, loaders
    from experiments.model import release

    config.validate(cfg)
    devices.check_device(cfg.trainer.device, cfg.model, eta=lambda: devices.cpu_estimate(cfg))
    if OmegaConf.select(cfg, "download.auto", default=False):
        fetch.fetch_missing(cfg.task, cfg.model, cfg.paths, cfg.download)
    loaders.task_dir(cfg.paths.clue_dir, cfg.task)
    hub.resolve(cfg.model)  # a model from the Hub: checkpoint_dir -> its cached snapshot
    if cfg.model.checkpoint_dir is not None:
        release.check_checkpoint(cfg.model)


@dataclass
class Job:
    """What ``build`` made: the trainer (with its model, method and optimizer), the run state
    that saves and resumes it, the tokenized splits, and facts and timings for the record."""

    trainer: Trainer
    state: RunState
    train: Dataset
    dev: Dataset
    facts: dict
    timings: dict
    tokenizer: Tokenizer


def build(cfg: DictConfig, record_file: Path) -> Job:
    """Seed, load the task and the model, tokenize (through the token cache), and put together
    the optimizer, the method, the trainer and its run state (restored if resuming)."""
    from experiments.data import batching, cache, hub, loaders
    from experiments.model import encoder, head, release, rewrites
    from experiments.train import methods, monitor, optim, run_state, schedule
    from experiments.train.loop import Trainer

    environment.seed_everything(cfg.seed, deterministic=cfg.trainer.deterministic)
    environment.set_tf32(cfg.trainer.tf32)
    label_ids, train_split, dev_split = loaders.load_task(cfg.paths.clue_dir, cfg.task)
    optim.set_precision(cfg.trainer.precision)
    tokenizer, model = head.load_classifier(
        cfg.model, train_split.all_texts(), len(label_ids), cfg.task.max_length, cfg.seed
    )
    rewrites.prepare_model(model, cfg.trainer.precision)
    log.info(
        "%s: %d train / %d dev examples, %d classes",
        cfg.task.name,
        len(train_split.texts),
        len(dev_split.texts),
        len(label_ids),
    )
    # Tokenized splits come from data/cache/ when these texts, vocab and max length were seen before.
    tokenize_start = time.perf_counter()
    (train, train_hit), (dev, dev_hit) = [
        cache.dataset(tokenizer, split, file, cfg.task, cfg.paths, cfg.trainer.progress)
        for split, file in ((train_split, cfg.task.train_file), (dev_split, cfg.task.dev_file))
    ]
    tokenize_seconds = time.perf_counter() - tokenize_start
    folder = loaders.task_dir(cfg.paths.clue_dir, cfg.task)
    for split, file in ((train, cfg.task.train_file), (dev, cfg.task.dev_file)):  # on a GPU a bad id embeds as 0s
        encoder.check_token_ids(model, split.token_ids, folder / file, release.vocab_source(cfg.model))

    # The rate per step (constant, or BERT's warm-up and decay) follows the optimizer's step count.
    steps_per_epoch = batching.num_batches(len(train), cfg.trainer.batch_size)
    optimizer = optim.make_optimizer(
        schedule.learning_rate(cfg.trainer, steps_per_epoch), cfg.trainer.precision, cfg.trainer.jit_compile
    )
    method = methods.build(OmegaConf.to_container(cfg.method, resolve=True), model, optimizer)
    t = cfg.trainer
    trainer = Trainer(
        model,
        method,
        optimizer,
        t.batch_size,
        eval_batch_size=t.eval_batch_size,
        jit_compile=t.jit_compile,
        progress=t.progress,
        bucket_by_length=t.bucket_by_length,
        pad_to_multiple_of=t.pad_to_multiple_of,
        patience=t.patience,
    )
    state = run_state.RunState(checkpoint_dir(cfg.paths.results_dir, record_file), model, optimizer)
    if cfg.trainer.resume and (history := state.restore()):
        trainer.history = history
        log.info("resuming after epoch %d of %d from %s", len(history), cfg.trainer.epochs, state.state_dir)
    if cfg.trainer.tensorboard:  # per-step loss, learning rate, the method's quantities; dev accuracy
        trainer.board = monitor.TensorBoard(
            tensorboard_dir(cfg.paths.results_dir, record_file), resume_step=len(trainer.history) * steps_per_epoch
        )
    facts = {
        "num_labels": len(label_ids),
        "train_samples": len(train),
        "dev_samples": len(dev),
        "skipped_lines": {"train": train_split.skipped, "dev": dev_split.skipped},  # task.skip_labels
        "dev_majority_share": records.majority_share(dev_split.labels),  # records.collapsed
        **({"checkpoint": c} if (c := hub.checkpoint_record(cfg.model)) else {}),
    }  # weight file, sha256, hub
    cache_dir = OmegaConf.select(cfg, "paths.cache_dir")
    timings = {
        "tokenize_seconds": tokenize_seconds,
        "token_cache": "off" if cache_dir is None else "hit" if train_hit and dev_hit else "miss",
    }
    return Job(trainer, state, train, dev, facts, timings, tokenizer)


def train(cfg: DictConfig, job: Job) -> None:
    """Fit, saving every finished epoch (and the best weights) so that an interrupted run resumes;
    running out of device memory is one line saying what to lower."""
    from experiments.train import optim

    def on_epoch_end(history, improved):
        if improved and cfg.trainer.save_best:
            job.state.save_best()
        job.state.save_epoch(history)

    log.info(
        "training %s / %s / %s, seed %d, %d epochs",
        cfg.task.name,
        cfg.model.name,
        cfg.method.name,
        cfg.seed,
        cfg.trainer.epochs,
    )
    try:
        with optim.out_of_memory_advice(cfg.trainer, cfg.task.max_length):
            job.trainer.fit(job.train, job.dev, cfg.trainer.epochs, cfg.seed, on_epoch_end)
    finally:
        if job.trainer.board is not None:
            job.trainer.board.close()


def attack(cfg: DictConfig, job: Job) -> dict | None:
    """Accuracy under attack (experiments/train/embedding_attack.py) on the dev examples the run was scored on,
    from its best weights (restored from the run state; the final ones under trainer.save_best=false),
    when ``eval.attack.epsilons`` lists any; None otherwise, and for a run that diverged."""
    from experiments.train import embedding_attack

    attack_cfg = OmegaConf.select(cfg, "eval.attack")
    if attack_cfg is None or not attack_cfg.epsilons or not job.trainer.history or "diverged_at" in job.trainer.ending:
        return None
    weights = "final"
    if cfg.trainer.save_best and job.state.best_weights.is_file():
        job.trainer.model.load_weights(str(job.state.best_weights))
        weights = "best"
    t = cfg.trainer
    return embedding_attack.record_fields(
        job.trainer.model,
        job.tokenizer,
        job.dev,
        attack_cfg,
        weights,
        batch_size=t.eval_batch_size,
        pad_to_multiple_of=t.pad_to_multiple_of,
        jit_compile=t.jit_compile,
        seed=cfg.seed,
        progress=t.progress,
    )


def text_attack(cfg: DictConfig, job: Job, record_file: Path) -> dict:
    """The character-level attack (experiments/train/text_attack.py) of the best weights, its adversarial
    texts beside the record, when ``eval.text_attack.enabled`` (or ``from``) asks for it; {} otherwise."""
    from experiments.data import loaders
    from experiments.train import text_attack

    text_cfg = OmegaConf.select(cfg, "eval.text_attack")
    if text_cfg is None or not job.trainer.history or "diverged_at" in job.trainer.ending:
        return {}
    if not text_cfg.enabled and not text_cfg.get("from"):
        return {}
    weights = "final"
    if cfg.trainer.save_best and job.state.best_weights.is_file():
        job.trainer.model.load_weights(str(job.state.best_weights))
        weights = "best"
    label_ids, _, dev_split = loaders.load_task(cfg.paths.clue_dir, cfg.task)
    return text_attack.run_fields(
        cfg, text_cfg, job.trainer.model, job.tokenizer, label_ids, dev_split, weights, record_file
    )


def write_record(
    cfg: DictConfig, resolved: dict, record_file: Path, job: Job, seconds: float, robustness: dict | None
) -> dict:
    """Write the run record (atomically) and drop the resume state, which the record replaces."""
    record = records.run_record(
        resolved,
        job.trainer.history,
        job.trainer.ending,
        job.facts,
        timings={"total_seconds": seconds, **job.timings},
        best_weights=str(job.state.best_weights) if cfg.trainer.save_best else None,
        environment=environment.describe(cfg.trainer),
        hydra_dir=_hydra_output_dir(),
        robustness=robustness,
    )
    records.write_json_atomic(record_file, record)
    job.state.discard_state()
    log.info("%s; record: %s", records.outcome(record), record_file)
    return record


def checkpoint_dir(results_dir, record_file: Path) -> Path:
    return Path(results_dir) / "checkpoints" / record_file.stem


def tensorboard_dir(results_dir, record_file: Path) -> Path:
    return Path(results_dir) / "tensorboard" / record_file.stem


def _hydra_output_dir() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    devices.pin_job()  # hydra/launcher=joblib: this process's GPU and threads, before TensorFlow starts
    slurm.exit_at_once_when_requeued()  # hydra/launcher=slurm: a time-limit requeue ends the job cleanly
    # An expected mistake, or Ctrl-C: one line naming the file/key and the fix, no traceback.
    with reported(
        interrupted="no record written; epochs already finished are kept, "
        "rerun the same command with trainer.resume=true to continue"
    ):
        return run(cfg)["best_dev_acc"]


if __name__ == "__main__":
    with reported():
        config.check_choices(sys.argv[1:])
    slurm.fold_sacct_errors()  # hydra/launcher=slurm on a cluster without accounting: one line, not hundreds
    main()
