"""Small folders in the exact formats of CLUE's pair and WSC tasks (AFQMC, CMNLI, OCNLI, CSL,
CLUEWSC2020), written by the tests: field names, "-" labels, CSL's keyword lists, WSC's
targets and unlabelled test files with ids, as the official zips hold them."""

from __future__ import annotations

import random
from pathlib import Path

from tests.helpers.clue import CLASS_WORDS, FILLER, write_jsonl

NLI = ["contradiction", "entailment", "neutral"]
NEW_TASKS = ["afqmc", "cmnli", "ocnli", "csl", "cluewsc2020"]
# Per task: the number of train / dev lines labelled "-" (skipped) in a fixture of the default size.
DASHES = {"cmnli": (10, 4), "ocnli": (10, 4)}
NOUNS = ["小明", "妈妈", "桌子", "小猫", "老师"]


def make_clue_tasks(root: Path, n_train: int = 100, n_dev: int = 40, n_test: int = 20, seed: int = 0) -> Path:
    """Write ``<task>_public/`` for each of ``NEW_TASKS`` under ``root``. Every 10th line of the
    CMNLI and OCNLI train and dev files is labelled "-"; test files have ids and no label."""
    rnd = random.Random(seed)

    def sentence(k):
        a, b = sorted(rnd.sample(range(len(FILLER)), 2))
        return FILLER[:a] + CLASS_WORDS[k] + FILLER[a:b]

    def pair(same: bool):
        k = rnd.randrange(len(CLASS_WORDS))
        j = k if same else (k + 1 + rnd.randrange(len(CLASS_WORDS) - 1)) % len(CLASS_WORDS)
        return sentence(k), sentence(j)

    def afqmc(i, labelled):
        label = rnd.choice("01")
        a, b = pair(label == "1")
        return {"sentence1": a, "sentence2": b, **({"label": label} if labelled else {"id": i})}

    def nli(i, labelled, ocnli):
        label = "-" if labelled and i % 10 == 9 else rnd.choice(NLI)
        a, b = pair(label == "entailment")
        if not labelled:
            return {"id": i, "sentence1": a, "sentence2": b}
        row = {"sentence1": a, "sentence2": b, "label": label}
        if ocnli:  # OCNLI's lines also carry the five annotators' labels and where they come from
            row = {
                "level": "medium",
                **row,
                **{f"label{n}": label if label != "-" else NLI[n % 3] for n in range(5)},
                "genre": "news",
                "prem_id": f"news_{i}",
                "id": i,
            }
        return row

    def csl(i, labelled):
        label = rnd.choice("01")
        k = rnd.randrange(len(CLASS_WORDS))
        keywords = [CLASS_WORDS[k], CLASS_WORDS[(k + 1) % len(CLASS_WORDS)] if label == "1" else "无关"]
        return {
            "id": i,
            "abst": sentence(k) + "。" + FILLER,
            "keyword": keywords,
            **({"label": label} if labelled else {}),
        }

    def wsc(i, labelled):
        label = rnd.choice(["true", "false"])
        noun, other = rnd.sample(NOUNS, 2)
        text = f"{noun}看见了{other}，{'它' if label == 'true' else '他'}很高兴。"
        target = {
            "span2_index": text.index("，") + 1,
            "span1_index": 0,
            "span1_text": noun,
            "span2_text": text[text.index("，") + 1],
        }
        return {"target": target, "idx": i, **({"label": label} if labelled else {}), "text": text}

    writers = {
        "afqmc": afqmc,
        "cmnli": lambda i, lab: nli(i, lab, False),
        "ocnli": lambda i, lab: nli(i, lab, True),
        "csl": csl,
        "cluewsc2020": wsc,
    }
    train_files = {"ocnli": "train.50k.json"}
    for task, write in writers.items():
        folder = root / f"{task}_public"
        write_jsonl(folder / train_files.get(task, "train.json"), [write(i, True) for i in range(n_train)])
        write_jsonl(folder / "dev.json", [write(i, True) for i in range(n_dev)])
        for name in ["test.json", "test1.0.json"] if task == "cluewsc2020" else ["test.json"]:
            write_jsonl(folder / name, [write(i, False) for i in range(n_test)])
    return root
