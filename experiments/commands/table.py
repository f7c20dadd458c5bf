"""make table: the comparison table, its CSVs and pictures from the run records of a results folder.

    python -m experiments.commands.table [results_dir]

Reads records only (``experiments.report``): no TensorFlow is imported.
"""

from __future__ import annotations

import sys

from experiments import PROJECT_ROOT
from experiments.commands import cli
from experiments.report.summary import write_all


def main(argv: list[str] | None = None) -> int:
    p = cli.parser("experiments.commands.table", __doc__)
    p.add_argument(
        "results_dir",
        nargs="?",
        default=str(PROJECT_ROOT / "results"),
        help="the folder holding runs/ (paths.results_dir); default: results/",
    )
    return cli.main(p, lambda args: print(*write_all(args.results_dir), sep="\n"), argv)


if __name__ == "__main__":
    sys.exit(main())
