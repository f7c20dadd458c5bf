"""Hydra/OmegaConf glue shared by the entry points: the ``project_root`` resolver, composing a
config and its group options through Hydra, and config checks that run before any model is built."""

from __future__ import annotations

import contextlib

from omegaconf import DictConfig, OmegaConf

from experiments import CONFIG_DIR, PROJECT_ROOT
from experiments.errors import UserError

OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
SCHEDULES = ("constant", "linear")  # experiments/train/schedule.py


@contextlib.contextmanager
def _hydra():
    """Hydra's config loader on configs/, also inside a running ``@hydra.main`` (whose global
    state is put back after: Hydra allows one initialisation at a time)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    running = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            yield GlobalHydra.instance().config_loader()
    finally:
        GlobalHydra.instance().hydra = running


def compose(overrides: list[str] | None = None, config_name: str | None = "train") -> DictConfig:
    """The config ``python -m experiments.commands.run`` would get for ``overrides`` (for tests and tools);
    ``config_name=None``: only the groups the overrides add (``+task=tnews``)."""
    from hydra import compose as hydra_compose

    with _hydra():
        return hydra_compose(config_name=config_name, overrides=overrides or [], return_hydra_config=False)


def group_options(group: str) -> list[str]:
    """The options of config group ``group`` (task, model, method, ...), sorted, as Hydra finds them."""
    with _hydra() as loader:
        return sorted(loader.get_group_options(group))


def check_option(group: str, name: str, where: str = "") -> None:
    """A UserError naming the choices unless ``name`` is an option of ``group`` (``where``: the
    override or setting it came from)."""
    options = group_options(group)
    if name not in options:
        raise UserError(f"unknown {group} {name!r}{f' in {where}' if where else ''}; choose from {', '.join(options)}")


def load_group_option(group: str, name: str) -> DictConfig:
    """Option ``name`` of config group ``group`` (configs/<group>/<name>.yaml) as Hydra composes it,
    interpolations unresolved; a UserError naming the choices if there is no such option."""
    check_option(group, name)
    return compose([f"+{group}={name}"], config_name=None)[group]


def check_choices(overrides: list[str]) -> None:
    """Name an unknown config-group option (task=, method=, model=, ... also in comma lists)
    in one line; Hydra's own message ends with a hint about stack traces instead."""
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or "." in key or "/" in key or not (CONFIG_DIR / key).is_dir():
            continue
        for choice in value.split(","):
            if choice:
                check_option(key, choice, repr(override))


def validate(cfg: DictConfig) -> None:
    """Reject settings that would fail late or silently, naming the key and the fix."""
    checks = [
        (cfg.trainer.batch_size > 0, "trainer.batch_size", "a positive integer"),
        (cfg.trainer.eval_batch_size > 0, "trainer.eval_batch_size", "a positive integer"),
        (cfg.trainer.learning_rate > 0, "trainer.learning_rate", "a positive number"),
        (cfg.trainer.epochs > 0, "trainer.epochs", "a positive integer"),
        (cfg.trainer.pad_to_multiple_of > 0, "trainer.pad_to_multiple_of", "a positive integer (1: no rounding)"),
        (cfg.task.max_length > 2, "task.max_length", "at least 3 ([CLS], one token, [SEP])"),
        (cfg.trainer.precision in PRECISIONS, "trainer.precision", " or ".join(PRECISIONS)),
        ((cfg.method.get("epsilon") or 0) >= 0, "method.epsilon", "zero or positive"),
        (cfg.trainer.schedule in SCHEDULES, "trainer.schedule", " or ".join(SCHEDULES)),
        (
            0 <= cfg.trainer.warmup_ratio < 1,
            "trainer.warmup_ratio",
            "in [0, 1): the share of all steps spent warming up",
        ),
        (
            cfg.trainer.patience is None or cfg.trainer.patience > 0,
            "trainer.patience",
            "null (no early stopping) or a positive number of epochs",
        ),
    ]
    for key in ("max_train_samples", "max_dev_samples"):
        value = cfg.task[key]
        checks.append((value is None or value > 0, f"task.{key}", "null or a positive integer"))
    _first_failure(cfg, checks)
    validate_attack(cfg)
    validate_text_attack(cfg)


def validate_attack(cfg: DictConfig) -> None:
    """``eval.attack`` (accuracy under attack, docs/attack.md), if the config has it."""
    attack = OmegaConf.select(cfg, "eval.attack")
    if attack is None:
        return
    epsilons = attack.epsilons
    _first_failure(
        cfg,
        [
            (
                OmegaConf.is_list(epsilons)
                and all(isinstance(e, (int, float)) and not isinstance(e, bool) and e >= 0 for e in epsilons),
                "eval.attack.epsilons",
                "a list of eps >= 0, e.g. [0.05,0.1,0.2] ([]: no attack)",
            ),
            (attack.steps >= 1, "eval.attack.steps", "a positive integer"),
            (attack.step_size_ratio > 0, "eval.attack.step_size_ratio", "a positive number"),
            (
                attack.max_samples is None or attack.max_samples > 0,
                "eval.attack.max_samples",
                "null or a positive integer",
            ),
        ],
    )


def validate_text_attack(cfg: DictConfig) -> None:
    """``eval.text_attack`` (the character-level attack, docs/attack.md), if the config has it."""
    text = OmegaConf.select(cfg, "eval.text_attack")
    if text is None:
        return
    sources = ("homophone", "visual", "traditional")  # experiments.data.char_candidates.SOURCES
    _first_failure(
        cfg,
        [
            (isinstance(text.enabled, bool), "eval.text_attack.enabled", "true or false"),
            (
                isinstance(text.budget, (int, float)) and 0 <= text.budget <= 1,
                "eval.text_attack.budget",
                "a share of the characters in [0, 1], e.g. 0.1",
            ),
            (
                isinstance(text.max_queries, int) and text.max_queries >= 1,
                "eval.text_attack.max_queries",
                "a positive integer",
            ),
            (
                text.max_samples is None or text.max_samples > 0,
                "eval.text_attack.max_samples",
                "null or a positive integer",
            ),
            (
                OmegaConf.is_list(text.sources)
                and len(text.sources) == len(set(text.sources)) >= 1
                and all(s in sources for s in text.sources),
                "eval.text_attack.sources",
                f"a list of distinct sources among {list(sources)}",
            ),
            (
                isinstance(text.batch_size, int) and text.batch_size >= 1,
                "eval.text_attack.batch_size",
                "a positive integer",
            ),
        ],
    )


def _first_failure(cfg: DictConfig, checks) -> None:
    for ok, key, want in checks:
        if not ok:
            raise UserError(f"{key}={OmegaConf.select(cfg, key)} is invalid: it must be {want}")


def validate_pretrain(cfg: DictConfig) -> None:
    """``validate`` for a pretraining config (configs/pretraining.yaml, the ``pretrain`` group)."""
    p = cfg.pretrain
    splits = list(p.corpus.splits or [])
    checks = [
        (p.batch_size > 0, "pretrain.batch_size", "a positive integer"),
        (p.eval_batch_size > 0, "pretrain.eval_batch_size", "a positive integer"),
        (p.max_steps is None or p.max_steps > 0, "pretrain.max_steps", "null (train by epochs) or a positive integer"),
        (p.epochs > 0, "pretrain.epochs", "a positive integer"),
        (p.eval_every > 0, "pretrain.eval_every", "a positive integer (steps)"),
        (p.max_length > 2, "pretrain.max_length", "at least 3 ([CLS], one token, [SEP])"),
        (0 < p.masked_share < 1, "pretrain.masked_share", "in (0, 1): BERT's is 0.15"),
        (0 < p.held_out_share < 1, "pretrain.held_out_share", "in (0, 1), e.g. 0.02"),
        (p.held_out_max is None or p.held_out_max > 0, "pretrain.held_out_max", "null or a positive integer"),
        (p.learning_rate is None or p.learning_rate > 0, "pretrain.learning_rate", "null (the default) or positive"),
        (p.weight_decay >= 0, "pretrain.weight_decay", "zero or positive"),
        (0 <= p.warmup_ratio < 1, "pretrain.warmup_ratio", "in [0, 1): the share of all steps spent warming up"),
        (p.corpus.max_texts is None or p.corpus.max_texts > 0, "pretrain.corpus.max_texts", "null or positive"),
        (
            bool(splits) and set(splits) <= {"train", "dev", "test"},
            "pretrain.corpus.splits",
            "a list of train, dev, test, e.g. [train]",
        ),
    ]
    for ok, key, want in checks:
        if not ok:
            raise UserError(f"{key}={OmegaConf.select(cfg, key)} is invalid: it must be {want}")
