"""Candidate substitutes for a Chinese character: the edits a reader slides past (docs/attack.md).

Three sources, each switchable, all read at run time from installed packages (never copied here):

    homophone    characters with the same toned reading, from pypinyin's character table
                 (``pypinyin.pinyin_dict``). A character with several readings is read as pypinyin's
                 first (its default, what ``lazy_pinyin`` says of the character alone), on both sides:
                 行 (xíng, háng, ...) has the homophones of xíng only.
    visual       look-alike characters: the same-stroke confusion set of the spelling corrector
                 pycorrector (``pycorrector/data/same_stroke.txt``, one group of look-alikes a line);
                 the package is installed without its neural correctors' dependencies and is never
                 imported, the file is read where pip put it.
    traditional  the traditional form, OpenCC's ``s2t`` conversion of the character alone.

A candidate is kept only if the model's tokenizer reads it as one known token (``in_vocab``: never
[UNK]) and it is a common character: one of the 3,500 of the 现代汉语常用字表 that pycorrector ships
(``pycorrector/data/common_char_set.txt``). A traditional form is judged by the character it is the
form of (the list holds simplified characters only, so it would drop every traditional form). Only
CJK ideographs are attacked; digits, Latin letters and punctuation keep their place.

No TensorFlow: the search that uses these tables is ``experiments.train.text_attack``.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from experiments.errors import UserError

SOURCES = ("homophone", "visual", "traditional")
PACKAGES = {"homophone": "pypinyin", "visual": "pycorrector", "traditional": "opencc", "common": "pycorrector"}


def is_cjk(ch: str) -> bool:
    """A CJK unified ideograph (the basic block and extension A): the characters the attack may change."""
    return len(ch) == 1 and ("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf")


def package_file(package: str, relative: str) -> Path:
    """A data file of an installed distribution, found without importing the package."""
    try:
        path = Path(importlib.metadata.distribution(package).locate_file(relative))
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            f"the package {package} is not installed, and the text attack reads {relative} from it: "
            "run `uv sync --frozen` (make does) to install the locked environment"
        ) from None
    if not path.is_file():
        raise UserError(
            f"{path}: not in the installed {package} "
            f"{importlib.metadata.version(package)}; the text attack needs it (docs/attack.md)"
        )
    return path


@functools.cache
def common_characters() -> frozenset[str]:
    """The 3,500 common characters pycorrector ships (现代汉语常用字表, one a line)."""
    lines = package_file("pycorrector", "pycorrector/data/common_char_set.txt").read_text("utf-8").split()
    return frozenset(ch for ch in lines if is_cjk(ch))


@functools.cache
def look_alike_groups() -> tuple[tuple[str, ...], ...]:
    """pycorrector's same-stroke confusion set: each line a group of characters that look alike."""
    text = package_file("pycorrector", "pycorrector/data/same_stroke.txt").read_text("utf-8")
    groups = []
    for line in text.splitlines():
        chars = tuple(dict.fromkeys(ch for ch in line.split() if is_cjk(ch)))
        if len(chars) > 1:
            groups.append(chars)
    return tuple(groups)


def reading(ch: str) -> str | None:
    """The toned pinyin of ``ch`` as pypinyin reads the character alone (its first reading), or None."""
    from pypinyin import pinyin_dict

    readings = pinyin_dict.pinyin_dict.get(ord(ch))
    return readings.split(",")[0] if readings else None


@functools.cache
def _readers() -> dict[str, tuple[str, ...]]:
    """Toned reading -> the common characters with that first reading (in code-point order)."""
    out: dict[str, list[str]] = {}
    for ch in sorted(common_characters()):
        if (r := reading(ch)) is not None:
            out.setdefault(r, []).append(ch)
    return {r: tuple(chars) for r, chars in out.items()}


@functools.cache
def _converter():
    import opencc

    return opencc.OpenCC("s2t")


def traditional(ch: str) -> str | None:
    """OpenCC's traditional form of ``ch`` (s2t on the character alone), or None if it has none of its own."""
    out = _converter().convert(ch)
    return out if len(out) == 1 and out != ch and is_cjk(out) else None


def raw_candidates(ch: str, source: str) -> list[str]:
    """``source``'s candidates for ``ch`` before the vocabulary filter (common characters only)."""
    common = common_characters()
    if source == "homophone":
        r = reading(ch)
        return [] if r is None else [c for c in _readers().get(r, ()) if c != ch]
    if source == "visual":
        seen = dict.fromkeys(c for g in look_alike_groups() if ch in g for c in g if c != ch)
        return [c for c in seen if c in common]
    if source == "traditional":
        t = traditional(ch)
        return [t] if t is not None and ch in common else []
    raise UserError(f"eval.text_attack.sources: {source!r} is not a source; use some of {list(SOURCES)}")


def check_sources(sources: Iterable[str]) -> tuple[str, ...]:
    sources = tuple(sources)
    bad = [s for s in sources if s not in SOURCES]
    if bad or len(set(sources)) != len(sources):
        raise UserError(f"eval.text_attack.sources={list(sources)}: a list of distinct sources among {list(SOURCES)}")
    return sources


@dataclass
class CandidateTable:
    """Per character, its kept candidates with the source each came from (the first source that gave it)."""

    sources: tuple[str, ...]
    in_vocab: Callable[[str], bool]
    _cache: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.sources = check_sources(self.sources)

    def __call__(self, ch: str) -> tuple[tuple[str, str], ...]:
        """((candidate, source), ...) for ``ch``: in the vocabulary, common, never ``ch`` itself."""
        if ch not in self._cache:
            out: dict[str, str] = {}
            if is_cjk(ch):
                for source in self.sources:
                    for c in raw_candidates(ch, source):
                        if c not in out and c != ch and self.in_vocab(c):
                            out[c] = source
            self._cache[ch] = tuple(out.items())
        return self._cache[ch]

    def describe(self) -> dict:
        """The sources and the versions of the packages they were read from (for the record)."""
        used = {PACKAGES[s] for s in self.sources} | {PACKAGES["common"]}
        return {"sources": list(self.sources), "packages": {p: importlib.metadata.version(p) for p in sorted(used)}}
