"""`python -m experiments.bench` (make bench). The code lives in ``experiments.machine.bench``;
this module keeps the command's name."""

from experiments.machine.bench import main

if __name__ == "__main__":
    main()
