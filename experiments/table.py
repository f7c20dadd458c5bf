"""`python -m experiments.table` (make table). The code lives in ``experiments.results.table``;
this module keeps the command's name."""

from experiments.results.table import main

if __name__ == "__main__":
    main()
