"""Accuracy under real text edits: a greedy character-substitution attack for Chinese (docs/attack.md).

Per dev example (the first ``max_samples`` of the split, the same ones for every model):

1. Score the clean text. An example the model gets wrong is not attacked (it counts as wrong).
2. The characters the model sees are those of its tokens after truncation to ``task.max_length``;
   at most ``max_changes = max(1, floor(budget x seen))`` of them may change (0 when budget = 0).
   A position can change if it is one CJK character read as one token and has candidates
   (``experiments.data.char_candidates``: homophones, look-alikes, traditional forms; in the
   vocabulary and common).
3. Importance: the drop of the true label's probability when the position's token is replaced
   by [MASK] (one batch, one query per position). Masking asks the question the attack asks
   (what does this character contribute?) for any model, without a gradient.
4. Greedy, most important position first: score every candidate of the position in one batch, take
   the one that flips the label (the lowest true-label probability among those that do), else the
   one that lowers the true label's probability most, if it lowers it; stop at the first flip, when
   ``max_changes`` positions have changed, or when the next batch would pass ``max_queries``.

A query is one text scored by the model (a batch of k candidates is k queries); the clean score is
the first. Each candidate is one in-vocabulary character in place of one, so the edited text
tokenizes to exactly the ids that were scored. The random baseline changes ``max_changes`` random
attackable positions (not more than there are) to random candidates, drawn from
``numpy.random.default_rng([seed, example index])``, and scores the result once. The weights are
only read; the model runs with dropout off.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from experiments.data.char_candidates import CandidateTable, is_cjk
from experiments.errors import UserError

log = logging.getLogger(__name__)

KIND = "greedy_char_substitution"
IMPORTANCE = "mask_drop"  # the drop of the true label's probability with the position's token as [MASK]
EPS = 1e-9  # budget x seen characters is floored; this keeps 0.1 x 30 = 3.0000000000000004 at 3


def max_changes(budget: float, seen: int) -> int:
    """How many of ``seen`` characters may change: floor(budget x seen), at least 1 (none when budget = 0)."""
    if budget <= 0 or seen == 0:
        return 0
    return max(1, math.floor(budget * seen + EPS))


@dataclass
class Example:
    """One example as the model sees it: its token ids and, per token, the text characters it covers."""

    index: int
    text: str
    label: int
    token_ids: np.ndarray
    positions: list[int]  # token positions the attack may change (one CJK character, with candidates)
    char_of: dict[int, int]  # token position -> its character's index in ``text``
    seen: int  # characters the model sees (covered by its tokens, [CLS]/[SEP] aside)


@dataclass
class Outcome:
    """What happened to one example under an attack."""

    status: str  # misclassified (not attacked), success, failed, no_candidates
    token_ids: np.ndarray
    prediction: int  # the model's answer on the final (edited) text
    clean_prediction: int
    queries: int
    substitutions: list[dict] = field(default_factory=list)  # {"position", "from", "to", "source"}

    @property
    def right(self) -> bool:
        """Right on the text it ends with (the clean text when not attacked)."""
        return self.status in ("failed", "no_candidates")


class Scorer:
    """The model's class probabilities for padded batches of token ids, ``batch_size`` at a time."""

    def __init__(self, model, batch_size: int = 64):
        self.model, self.batch_size = model, batch_size
        spec = tf.TensorSpec([None, None], tf.int32)
        self._probs = tf.function(
            lambda ids, segments: tf.nn.softmax(tf.cast(self.model([ids, segments], training=False), tf.float32)),
            input_signature=(spec, spec),
        )

    def __call__(self, rows: list[np.ndarray]) -> np.ndarray:
        out = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            ids = np.zeros((len(chunk), max(len(r) for r in chunk)), np.int32)
            for row, r in zip(ids, chunk):
                row[: len(r)] = r
            out.append(self._probs(tf.constant(ids), tf.zeros_like(ids)).numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class TextAttack:
    """The greedy search and the random baseline (see the module's docstring)."""

    def __init__(
        self,
        model,
        tokenizer,
        table: CandidateTable,
        max_length: int,
        budget: float = 0.1,
        max_queries: int = 500,
        batch_size: int = 64,
        seed: int = 0,
    ):
        if not 0 <= budget <= 1:
            raise UserError(f"eval.text_attack.budget={budget}: a share of the characters, between 0 and 1")
        if max_queries < 1:
            raise UserError(f"eval.text_attack.max_queries={max_queries}: a positive integer")
        self.tokenizer, self.table, self.max_length = tokenizer, table, max_length
        self.budget, self.max_queries, self.seed = budget, max_queries, seed
        self.score = Scorer(model, batch_size)
        self.mask_id = tokenizer._token_mask_id if tokenizer._token_mask_id is not None else tokenizer._token_unk_id
        self._ids: dict[str, int] = {}

    def token_id(self, ch: str) -> int:
        if ch not in self._ids:
            self._ids[ch] = self.tokenizer.token_to_id(ch)
        return self._ids[ch]

    def example(self, index: int, text: str, label: int) -> Example:
        tokens = self.tokenizer.tokenize(text, maxlen=self.max_length)
        ids = np.asarray(self.tokenizer.tokens_to_ids(tokens), np.int32)
        mapping = self.tokenizer.rematch(text, tokens)
        char_of, positions = {}, []
        for j in range(1, len(tokens) - 1):
            if len(mapping[j]) == 1 and is_cjk(ch := text[mapping[j][0]]) and tokens[j] == ch:
                char_of[j] = mapping[j][0]
                if self.table(ch):
                    positions.append(j)
        seen = sum(len(m) for m in mapping[1:-1])
        return Example(index, text, label, ids, positions, char_of, seen)

    def candidates(self, ex: Example, j: int) -> list[tuple[str, str]]:
        return list(self.table(ex.text[ex.char_of[j]]))

    def attack(self, ex: Example) -> Outcome:
        """The greedy search on one example."""
        probs = self.score([ex.token_ids])[0]
        clean = int(probs.argmax())
        queries = 1
        if clean != ex.label:
            return Outcome("misclassified", ex.token_ids, clean, clean, queries)
        k = max_changes(self.budget, ex.seen)
        if k == 0 or not ex.positions:
            return Outcome("no_candidates", ex.token_ids, clean, clean, queries)
        # Importance: the true label's probability with each position masked (as many as the cap allows).
        ranked = ex.positions[: max(0, self.max_queries - queries)]
        masked = []
        for j in ranked:
            row = ex.token_ids.copy()
            row[j] = self.mask_id
            masked.append(row)
        drop = probs[ex.label] - self.score(masked)[:, ex.label] if masked else np.zeros(0)
        queries += len(masked)
        order = [ranked[i] for i in np.argsort(-drop, kind="stable")] + ex.positions[len(ranked) :]

        current, p_true, subs = ex.token_ids.copy(), float(probs[ex.label]), []
        prediction = clean
        for j in order:
            if len(subs) >= k or queries >= self.max_queries:
                break
            cands = self.candidates(ex, j)[: self.max_queries - queries]
            rows = []
            for ch, _ in cands:
                row = current.copy()
                row[j] = self.token_id(ch)
                rows.append(row)
            p = self.score(rows)
            queries += len(rows)
            flipped = np.flatnonzero(p.argmax(1) != ex.label)
            pick = flipped[np.argmin(p[flipped, ex.label])] if len(flipped) else int(np.argmin(p[:, ex.label]))
            if not len(flipped) and p[pick, ex.label] >= p_true:
                continue  # no candidate here helps: the position keeps its character
            current, p_true = rows[pick], float(p[pick, ex.label])
            subs.append(
                {
                    "position": ex.char_of[j],
                    "from": ex.text[ex.char_of[j]],
                    "to": cands[pick][0],
                    "source": cands[pick][1],
                }
            )
            prediction = int(p[pick].argmax())
            if len(flipped):
                return Outcome("success", current, prediction, clean, queries, subs)
        return Outcome("failed", current, prediction, clean, queries, subs)

    def random(self, ex: Example, clean: int) -> Outcome:
        """The random baseline on an example the model classifies right (``clean`` its answer)."""
        k = min(max_changes(self.budget, ex.seen), len(ex.positions))
        if k == 0:
            return Outcome("no_candidates", ex.token_ids, clean, clean, 1)
        rng = np.random.default_rng([self.seed, ex.index])
        row, subs = ex.token_ids.copy(), []
        for j in sorted(rng.choice(ex.positions, size=k, replace=False).tolist()):
            cands = self.candidates(ex, j)
            ch, source = cands[int(rng.integers(len(cands)))]
            row[j] = self.token_id(ch)
            subs.append({"position": ex.char_of[j], "from": ex.text[ex.char_of[j]], "to": ch, "source": source})
        prediction = int(self.score([row])[0].argmax())
        return Outcome("success" if prediction != ex.label else "failed", row, prediction, clean, 2, subs)


def edited(text: str, substitutions: list[dict]) -> str:
    chars = list(text)
    for s in substitutions:
        assert chars[s["position"]] == s["from"], (text, s)
        chars[s["position"]] = s["to"]
    return "".join(chars)


@dataclass
class Result:
    rows: list[dict]  # one per example, for the JSONL
    summary: dict  # the record's numbers
    seconds: float


def summarise(outcomes: list[Outcome], examples: list[Example]) -> dict:
    """Clean accuracy on all N, accuracy under attack on all N, success rate among the attacked (the
    correctly classified), mean share of the seen characters changed and mean queries (attacked only)."""
    n = len(outcomes)
    attacked = [(o, e) for o, e in zip(outcomes, examples) if o.status != "misclassified"]
    success = [o for o, _ in attacked if o.status == "success"]
    share = [len(o.substitutions) / e.seen if e.seen else 0.0 for o, e in attacked]
    return {
        "examples": n,
        "clean_acc": len(attacked) / n if n else 0.0,
        "acc": sum(o.right for o in outcomes) / n if n else 0.0,
        "attacked": len(attacked),
        "success_rate": len(success) / len(attacked) if attacked else 0.0,
        "changed_share_mean": float(np.mean(share)) if share else 0.0,
        "changes_mean": float(np.mean([len(o.substitutions) for o, _ in attacked])) if attacked else 0.0,
        "queries_mean": float(np.mean([o.queries for o, _ in attacked])) if attacked else 0.0,
        "no_candidates": sum(o.status == "no_candidates" for o, _ in attacked),
    }


def run(
    attack: TextAttack,
    texts: list[str],
    labels: np.ndarray,
    label_names: list[str] | None = None,
    random_baseline: bool = True,
    progress: bool | None = None,
) -> Result:
    """The attack (and the random baseline) on every example; the JSONL rows and the summary."""
    start = time.perf_counter()
    names = label_names or []
    disable = None if progress is None else not progress
    examples, outcomes, randoms = [], [], []
    for i, (text, label) in enumerate(
        tqdm(list(zip(texts, labels)), desc="text attack", unit="example", disable=disable, leave=False)
    ):
        ex = attack.example(i, text, int(label))
        out = attack.attack(ex)
        examples.append(ex)
        outcomes.append(out)
        if random_baseline:
            randoms.append(None if out.status == "misclassified" else attack.random(ex, out.clean_prediction))
    seconds = time.perf_counter() - start
    summary = summarise(outcomes, examples)
    if random_baseline:  # the misclassified count as they are: wrong, not attacked
        rand = [r or o for r, o in zip(randoms, outcomes)]
        summary["random"] = {
            k: v
            for k, v in summarise(rand, examples).items()
            if k in ("acc", "success_rate", "changed_share_mean", "changes_mean")
        }

    def label_name(c):
        return names[c] if c < len(names) else str(c)

    rows = []
    for ex, out, rnd in zip(examples, outcomes, randoms or [None] * len(examples)):
        row = {
            "index": ex.index,
            "text": ex.text,
            "adversarial_text": edited(ex.text, out.substitutions),
            "status": out.status,
            "label": label_name(ex.label),
            "clean_prediction": label_name(out.clean_prediction),
            "prediction": label_name(out.prediction),
            "positions": [s["position"] for s in out.substitutions],
            "substitutions": out.substitutions,
            "characters_seen": ex.seen,
            "max_changes": max_changes(attack.budget, ex.seen),
            "queries": out.queries,
        }
        if rnd is not None:
            row["random"] = {
                "text": edited(ex.text, rnd.substitutions),
                "prediction": label_name(rnd.prediction),
                "status": rnd.status,
                "positions": [s["position"] for s in rnd.substitutions],
            }
        rows.append(row)
    summary["seconds"] = seconds
    summary["examples_per_second"] = len(texts) / seconds if seconds else 0.0
    return Result(rows, summary, seconds)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    from experiments.records import write_text_atomic

    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    if not Path(path).is_file():
        raise UserError(
            f"{path}: no adversarial examples there (eval.text_attack.from names a record whose "
            "text attack wrote them beside it)"
        )
    return [json.loads(line) for line in Path(path).read_text("utf-8").splitlines() if line.strip()]


def adversarial_file(record_file: Path) -> Path:
    """Where a record's adversarial examples go: beside it, ``<record>.text_attack.jsonl``."""
    return Path(record_file).with_suffix(".text_attack.jsonl")


def settings(cfg) -> dict:
    """The attack's settings as the record keeps them."""
    return {
        "kind": KIND,
        "importance": IMPORTANCE,
        "sources": list(cfg.sources),
        "budget": float(cfg.budget),
        "max_queries": int(cfg.max_queries),
        "max_samples": cfg.max_samples,
        "seed": int(cfg.seed),
        "random_baseline": bool(cfg.random_baseline),
    }


def first(texts: list[str], labels: np.ndarray, max_samples) -> tuple[list[str], np.ndarray]:
    if max_samples is None:
        return texts, labels
    return texts[: int(max_samples)], labels[: int(max_samples)]


def vocabulary_filter(tokenizer):
    """Whether the tokenizer reads a character as itself, one known token (bert4keras's word-piece step keeps an
    unknown character as its own token and gives it [UNK]'s id, so both are checked)."""

    def in_vocab(ch: str) -> bool:
        return tokenizer.tokenize(ch)[1:-1] == [ch] and tokenizer.token_to_id(ch) != tokenizer._token_unk_id

    return in_vocab


def record_fields(
    model,
    tokenizer,
    texts: list[str],
    labels: np.ndarray,
    label_names: list[str],
    text_cfg,
    max_length: int,
    weights: str,
    out_file: Path,
    batch_size: int = 64,
    progress=None,
) -> dict:
    """``text_attack`` for a run record, and the adversarial examples written to ``out_file``."""
    texts, labels = first(texts, labels, text_cfg.max_samples)
    table = CandidateTable(tuple(text_cfg.sources), vocabulary_filter(tokenizer))
    attack = TextAttack(
        model, tokenizer, table, max_length, text_cfg.budget, text_cfg.max_queries, batch_size, text_cfg.seed
    )
    result = run(attack, texts, labels, label_names, text_cfg.random_baseline, progress)
    write_jsonl(out_file, result.rows)
    s = result.summary
    log.info(
        "text attack (%d examples, %s weights): clean %.4f, under attack %.4f, success %.4f, %.1f queries, "
        "%.1f examples/s; random baseline %.4f",
        s["examples"],
        weights,
        s["clean_acc"],
        s["acc"],
        s["success_rate"],
        s["queries_mean"],
        s["examples_per_second"],
        s.get("random", {}).get("acc", np.nan),
    )
    return {
        "text_attack": {
            **settings(text_cfg),
            "weights": weights,
            **table.describe(),
            **s,
            "adversarial_file": out_file.name,
        }
    }


def transfer_fields(
    model,
    tokenizer,
    source_record: Path,
    max_length: int,
    texts: list[str],
    label_names: list[str],
    batch_size: int = 64,
) -> dict:
    """This model scored on the adversarial texts made against another run (``source_record``'s JSONL):
    accuracy on them, on their originals, and the share of the source's successful attacks that also fool
    this model among those it classifies right on the original."""
    rows = read_jsonl(adversarial_file(source_record))
    for r in rows:
        if r["index"] >= len(texts) or texts[r["index"]] != r["text"]:
            raise UserError(
                f"{adversarial_file(source_record)}: example {r['index']} is not this run's dev example "
                f"{r['index']}; transfer needs the same task and dev file"
            )
    index = {name: i for i, name in enumerate(label_names)}
    labels = np.array([index[r["label"]] for r in rows])
    clean = predict(model, tokenizer, [r["text"] for r in rows], max_length, batch_size)
    adv = predict(model, tokenizer, [r["adversarial_text"] for r in rows], max_length, batch_size)
    moved = [i for i, r in enumerate(rows) if r["status"] == "success" and clean[i] == labels[i]]
    return {
        "from": Path(source_record).stem,
        "examples": len(rows),
        "clean_acc": float(np.mean(clean == labels)),
        "acc": float(np.mean(adv == labels)),
        "source_successes": sum(r["status"] == "success" for r in rows),
        "transfer_rate": float(np.mean(adv[moved] != labels[moved])) if moved else 0.0,
    }


def predict(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    """The class of each text, as the attack's scorer gives it (dropout off)."""
    scorer = Scorer(model, batch_size)
    rows = [np.asarray(tokenizer.encode(t, maxlen=max_length)[0], np.int32) for t in texts]
    return scorer(rows).argmax(1) if rows else np.zeros(0, np.int64)


TRANSFER = "text_attack_transfer"  # the record's key: {source record: transfer_fields(...)}


def run_fields(
    cfg,
    text_cfg,
    model,
    tokenizer,
    label_ids: list[str],
    dev_split,
    weights: str,
    record_file: Path,
    earlier_transfer: dict | None = None,
) -> dict:
    """What ``eval.text_attack`` asks of a run (the attack when ``enabled``, transfer scoring when ``from`` names
    a record), as record fields; {} when it asks for nothing. ``dev_split`` is the run's dev split."""
    out = {}
    if not text_cfg.enabled and not text_cfg.get("from"):
        return out
    if dev_split.texts_b is not None:
        raise UserError(
            f"eval.text_attack: {cfg.task.name} pairs two texts; the text attack takes single-text tasks "
            "(TNEWS, IFLYTEK)"
        )
    if text_cfg.enabled:
        out.update(
            record_fields(
                model,
                tokenizer,
                dev_split.texts,
                dev_split.labels,
                label_ids,
                text_cfg,
                cfg.task.max_length,
                weights,
                adversarial_file(record_file),
                text_cfg.batch_size,
                cfg.trainer.progress,
            )
        )
    if text_cfg.get("from"):
        source = Path(text_cfg["from"])
        if not source.is_file():
            raise UserError(f"eval.text_attack.from={source}: not a run record")
        fields = transfer_fields(
            model, tokenizer, source, cfg.task.max_length, dev_split.texts, label_ids, text_cfg.batch_size
        )
        out[TRANSFER] = {**(earlier_transfer or {}), fields["from"]: fields}
    return out


def describe(key: str, value: dict) -> str:
    """One line for the terminal about a record field ``run_fields`` made."""
    if key == TRANSFER:
        return "; ".join(
            f"on the adversarial texts of {k}: accuracy {v['acc']:.4f} (clean {v['clean_acc']:.4f}), "
            f"{v['transfer_rate']:.4f} of the source's successes transfer"
            for k, v in value.items()
        )
    rnd = value.get("random", {})
    return (
        f"text attack ({value['examples']} dev examples, budget {value['budget']}, sources "
        f"{','.join(value['sources'])}): clean {value['clean_acc']:.4f}, under attack {value['acc']:.4f}, "
        f"success {value['success_rate']:.4f}, {value['changed_share_mean']:.3f} of the characters changed, "
        f"{value['queries_mean']:.1f} queries/example, {value['examples_per_second']:.2f} examples/s"
        + (f"; random substitutions: {rnd['acc']:.4f}" if rnd else "")
        + f"; the texts: {value['adversarial_file']}"
    )
