"""Tokenizers: the one loader every command uses (``make run``, ``make pretrain``, predict, attack).

A model with a checkpoint folder reads that folder's vocabulary; a model without one (``tiny``,
``bert_mini`` from scratch) gets a character vocabulary built from the texts it trains on, or a
vocab file given explicitly (``pretrain.vocab``). bert4keras's ``Tokenizer`` lower-cases and splits
CJK characters, as Google's BERT tokenizer does.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from experiments.model import release

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def char_vocab(texts: list[str]) -> dict[str, int]:
    """A vocabulary of every character of ``texts``, most frequent first.

    Non-CJK characters also get a ``##`` continuation entry, so that bert4keras's
    word-piece step splits any Latin word or number into characters instead of [UNK].
    """
    counts = Counter(ch for text in texts for ch in text.lower() if not ch.isspace())
    tokens = list(SPECIAL_TOKENS)
    for ch, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        tokens.append(ch)
        if ord(ch) < 0x2E80:  # below the CJK blocks: can be part of a multi-character word
            tokens.append("##" + ch)
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}


def load_tokenizer(model_cfg, texts: list[str], vocab_file: str | Path | None = None):
    """The tokenizer and its vocabulary (token -> id) for ``model_cfg``: the checkpoint folder's
    vocab; without a checkpoint, ``vocab_file`` if given, else a character vocab of ``texts``."""
    from bert4keras.tokenizers import Tokenizer, load_vocab

    if model_cfg.checkpoint_dir is not None:
        release.check_checkpoint(model_cfg)
        vocab = load_vocab(str(release.vocab_path(model_cfg)))
    elif vocab_file is not None:
        vocab = load_vocab(str(vocab_file))
    else:
        vocab = char_vocab(texts)
    return Tokenizer(vocab, do_lower_case=True), vocab
