"""make evidence's last step: a preregistered study's tuning choice (tuning.md) or its paired tests
with Holm's correction (analysis.md, clean or, for the text-attack addendum, under the text attack),
from the records of a folder.

    python -m experiments.commands.study tuning|main|text-attack <folder>
    python -m experiments.commands.study sample <folder> --texts <runs folder> [--labels <labels.json>] [--with-texts]

sample: the addendum's 50 adversarial texts to read (examples.md, with judgements.json's verdicts), drawn
from the ``.text_attack.jsonl`` beside the pretrained baseline's records (``--texts``: where they are,
since they are not committed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from experiments import records
from experiments.commands import cli
from experiments.errors import UserError
from experiments.report.preregistered import (
    frame,
    main_markdown,
    reading_markdown,
    reading_sample,
    text_attack_markdown,
    tuning_markdown,
)

STEPS = {  # step: (the file it writes in the folder, what writes it)
    "tuning": ("tuning.md", tuning_markdown),
    "main": ("analysis.md", main_markdown),
    "text-attack": ("analysis.md", text_attack_markdown),
}


def write(step: str, folder: Path) -> Path:
    """``folder``/tuning.md (step "tuning") or ``folder``/analysis.md (steps "main" and "text-attack": the
    addendum's, in its own folder) from ``folder``/runs/."""
    everyone = frame(records.load_records(folder, records.DONE))
    if not (everyone.status == records.COMPLETE).any():
        raise UserError(f"{folder / 'runs'}: no complete run records; run the study's sweep first (make evidence)")
    name, markdown = STEPS[step]
    out = folder / name
    records.write_text_atomic(out, markdown(everyone))
    return out


def sample(folder: Path, texts: Path, labels: Path | None = None, with_texts: bool = False) -> Path:
    """``folder``/examples.md: the texts to read, from the pretrained baseline's JSONLs in ``texts`` (their
    edits, labels and judgements; ``with_texts``: also the titles, to the git-ignored examples-with-texts.md)."""
    everyone = records.load_records(folder, records.DONE)
    baselines = [
        r for r in everyone if r["method"] == "baseline" and r.get("settings", {}).get("model", {}).get("pretrained")
    ]
    rows = {}
    for r in baselines:
        jsonl = texts / r["text_attack"]["adversarial_file"] if r.get("text_attack") else None
        if jsonl is None or not jsonl.is_file():
            raise UserError(
                f"{jsonl or r['method']}: no adversarial texts of the pretrained baseline's seed {r['seed']}; "
                'attack it (make attack RUN=... ARGS="eval.text_attack.enabled=true ...") or give --texts'
            )
        rows[int(r["seed"])] = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    names = {}
    if labels:
        for line in labels.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            names[entry["label"]] = entry["label_desc"]
    judged = folder / "judgements.json"
    judgements = json.loads(judged.read_text(encoding="utf-8")) if judged.is_file() else {}
    out = folder / ("examples-with-texts.md" if with_texts else "examples.md")
    records.write_text_atomic(out, reading_markdown(reading_sample(rows), names, judgements, with_texts))
    return out


def main(argv=None) -> int:
    p = cli.parser("experiments.commands.study", __doc__)
    p.add_argument(
        "step",
        choices=[*STEPS, "sample"],
        help="tuning: tuning.md (the rule's choice); main: analysis.md; text-attack: the addendum's analysis.md; "
        "sample: the addendum's texts to read (examples.md)",
    )
    p.add_argument("folder", type=Path, help="the folder whose runs/ holds the step's records")
    p.add_argument("--texts", type=Path, help="sample: the folder of the .text_attack.jsonl files (default: runs/)")
    p.add_argument("--labels", type=Path, help="sample: the task's labels.json, for the labels' names")
    p.add_argument(
        "--with-texts",
        action="store_true",
        help="sample: write the titles too, to examples-with-texts.md (git-ignored: the CLUE data is not committed)",
    )

    def step(args) -> None:
        if args.step == "sample":
            print(sample(args.folder, args.texts or args.folder / "runs", args.labels, args.with_texts))
        else:
            print(write(args.step, args.folder))

    return cli.main(p, step, argv)


if __name__ == "__main__":
    sys.exit(main())
