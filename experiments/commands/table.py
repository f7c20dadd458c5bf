"""make table: the comparison table, its CSVs and pictures from the run records of a results folder.

    python -m experiments.commands.table [results_dir]

Reads records only (``experiments.report``): no TensorFlow is imported.
"""

from __future__ import annotations

import argparse

from experiments import PROJECT_ROOT
from experiments.errors import reported
from experiments.report.summary import write_all


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.commands.table", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", nargs="?", default=str(PROJECT_ROOT / "results"),
                        help="the folder holding runs/ (paths.results_dir); default: results/")
    args = parser.parse_args(argv)
    with reported():
        for path in write_all(args.results_dir):
            print(path)


if __name__ == "__main__":
    main()
