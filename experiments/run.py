"""Fine-tune one model on one CLUE task with one method and write its run record.

    python -m experiments.run task=iflytek method=fgm model=bert_base seed=0 trainer.epochs=3
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from experiments import CONFIG_DIR, config, devices, records, slurm
from experiments.errors import reported

log = logging.getLogger("experiments.run")


def run(cfg: DictConfig) -> dict:
    """Train as ``cfg`` says and return the run record (also written under results_dir/runs/)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    record_file = records.record_path(cfg.paths.results_dir, resolved)
    if cfg.trainer.skip_completed and (done := records.read_record(record_file, records.DONE)) is not None:
        log.info("%s record exists, skipping: %s", done["status"], record_file)
        return done
    config.validate(cfg)
    devices.check_device(cfg)  # a GPU TensorFlow cannot use, or days on a CPU: stop now, in one line
    # A fresh machine: fetch missing data / checkpoint first, before TensorFlow's slow import,
    # so that offline it fails in a second.
    if OmegaConf.select(cfg, "download.auto", default=False):
        from experiments import download

        download.fetch_missing(cfg)

    from experiments import cache, checkpoints, data, environment, methods, models, monitor, schedule, training

    started = time.time()
    environment.seed_everything(cfg.seed, deterministic=cfg.trainer.deterministic)
    environment.set_tf32(cfg.trainer.tf32)
    label_ids, train_split, dev_split = data.load_task(cfg.paths.clue_dir, cfg.task)
    training.set_precision(cfg.trainer.precision)
    tokenizer, model = models.load_classifier(cfg, train_split.all_texts(), len(label_ids))
    training.prepare_model(model, cfg.trainer.precision)
    log.info("%s: %d train / %d dev examples, %d classes", cfg.task.name,
             len(train_split.texts), len(dev_split.texts), len(label_ids))
    # Tokenized splits come from data/cache/ when these texts, vocab and max length were seen before.
    tokenize_start = time.perf_counter()
    (train, train_hit), (dev, dev_hit) = [cache.dataset(cfg, tokenizer, split, file) for split, file in
                                          ((train_split, cfg.task.train_file), (dev_split, cfg.task.dev_file))]
    tokenize_seconds = time.perf_counter() - tokenize_start
    cache_dir = OmegaConf.select(cfg, "paths.cache_dir")
    folder = data.task_dir(cfg.paths.clue_dir, cfg.task)
    for split, file in ((train, cfg.task.train_file), (dev, cfg.task.dev_file)):  # on a GPU a bad id embeds as 0s
        models.check_token_ids(model, split.token_ids, folder / file, models.vocab_source(cfg.model))

    # The rate per step (constant, or BERT's warm-up and decay) follows the optimizer's step count.
    steps_per_epoch = data.num_batches(len(train), cfg.trainer.batch_size)
    optimizer = training.make_optimizer(schedule.learning_rate(cfg.trainer, steps_per_epoch), cfg.trainer.precision,
                                         cfg.trainer.jit_compile)
    method = methods.build(OmegaConf.to_container(cfg.method, resolve=True), model, optimizer)
    trainer = training.Trainer(model, method, optimizer, cfg.trainer.batch_size, cfg.trainer.eval_batch_size,
                               cfg.trainer.jit_compile, cfg.trainer.progress,
                               bucket_by_length=cfg.trainer.bucket_by_length,
                               pad_to_multiple_of=cfg.trainer.pad_to_multiple_of, patience=cfg.trainer.patience)
    state = checkpoints.RunState(checkpoint_dir(cfg.paths.results_dir, record_file), model, optimizer)
    if cfg.trainer.resume and (history := state.restore()):
        trainer.history = history
        log.info("resuming after epoch %d of %d from %s", len(history), cfg.trainer.epochs, state.state_dir)
    if cfg.trainer.tensorboard:  # per-step loss, learning rate, the method's quantities; dev accuracy
        trainer.board = monitor.TensorBoard(tensorboard_dir(cfg.paths.results_dir, record_file),
                                            resume_step=len(trainer.history) * steps_per_epoch)

    def on_epoch_end(history, improved):
        if improved and cfg.trainer.save_best:
            state.save_best()
        state.save_epoch(history)

    log.info("training %s / %s / %s, seed %d, %d epochs", cfg.task.name, cfg.model.name, cfg.method.name,
             cfg.seed, cfg.trainer.epochs)
    try:
        with training.out_of_memory_advice(cfg):
            history = trainer.fit(train, dev, cfg.trainer.epochs, cfg.seed, on_epoch_end)
    finally:
        if trainer.board is not None:
            trainer.board.close()

    # Complete, or diverged (a non-finite loss stopped it: the history so far, diverged_at,
    # partial_epoch); early stopping adds stopped_at_epoch. Either way the run is done.
    best = max(history, key=lambda h: h["dev_acc"], default={"dev_acc": None, "epoch": None})
    record = {
        "status": records.DIVERGED if "diverged_at" in trainer.ending else records.COMPLETE,
        "task": cfg.task.name, "model": cfg.model.name, "method": cfg.method.name, "seed": cfg.seed,
        "settings_id": records.settings_id(resolved),
        "best_dev_acc": best["dev_acc"], "best_epoch": best["epoch"],
        "final_dev_acc": history[-1]["dev_acc"] if history else None,
        **trainer.ending,
        "history": history,
        "num_labels": len(label_ids), "train_samples": len(train), "dev_samples": len(dev),
        "skipped_lines": {"train": train_split.skipped, "dev": dev_split.skipped},  # task.skip_labels
        "timings": {
            "total_seconds": time.time() - started,
            **mean_over_epochs(history, "train_samples_per_second", "samples_per_second"),
            # real / padded tokens of the training batches (1.0: no padding); see trainer.bucket_by_length
            **mean_over_epochs(history, "padding_efficiency"),
            "tokenize_seconds": tokenize_seconds,
            "token_cache": "off" if cache_dir is None else "hit" if train_hit and dev_hit else "miss",
        },
        "best_weights": str(state.best_weights) if cfg.trainer.save_best else None,
        "settings": records.settings(resolved),
        "config": resolved,
        "environment": environment.describe(cfg.trainer),
        "hydra_dir": _hydra_output_dir(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    records.write_json_atomic(record_file, record)
    state.discard_state()
    if history:
        log.info("%sbest dev acc %.4f (epoch %d), final %.4f; record: %s", "diverged; " * (
            record["status"] == records.DIVERGED), record["best_dev_acc"], best["epoch"], record["final_dev_acc"],
            record_file)
    else:
        log.info("diverged in epoch 1; record: %s", record_file)
    return record


def mean_over_epochs(history: list[dict], name: str, key: str | None = None) -> dict:
    """{name: the mean of each epoch's ``key``} (None without a finished epoch)."""
    values = [h.get(key or name, float("nan")) for h in history]
    return {name: sum(values) / len(values) if values else None}


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
    try:
        with reported():  # an expected mistake: one line naming the file/key and the fix, no traceback
            return run(cfg)["best_dev_acc"]
    except KeyboardInterrupt:
        print("interrupted: no record written; epochs already finished are kept, "
              "rerun the same command with trainer.resume=true to continue", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    with reported():
        config.check_choices(sys.argv[1:])
    slurm.fold_sacct_errors()  # hydra/launcher=slurm on a cluster without accounting: one line, not hundreds
    main()
