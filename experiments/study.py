"""`python -m experiments.study tuning|main <folder>` (part of make evidence): a preregistered study's
tuning choice and paired tests with Holm's correction. The code lives in ``experiments.results.study``;
this module keeps the command's name."""

from experiments.results.study import main

if __name__ == "__main__":
    main()
