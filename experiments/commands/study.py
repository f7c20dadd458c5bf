"""make evidence's last step: a preregistered study's tuning choice (tuning.md) or its paired tests
with Holm's correction (analysis.md, clean or, for the text-attack addendum, under the text attack),
from the records of a folder.

    python -m experiments.commands.study tuning|main|text-attack <folder>
"""

from __future__ import annotations

import sys
from pathlib import Path

from experiments import records
from experiments.commands import cli
from experiments.errors import UserError
from experiments.report.preregistered import frame, main_markdown, text_attack_markdown, tuning_markdown

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


def main(argv=None) -> int:
    p = cli.parser("experiments.commands.study", __doc__)
    p.add_argument(
        "step",
        choices=list(STEPS),
        help="tuning: tuning.md (the rule's choice); main: analysis.md; text-attack: the addendum's analysis.md",
    )
    p.add_argument("folder", type=Path, help="the folder whose runs/ holds the step's records")
    return cli.main(p, lambda args: print(write(args.step, args.folder)), argv)


if __name__ == "__main__":
    sys.exit(main())
