"""`python -m experiments.doctor` (make doctor). The code lives in ``experiments.machine.doctor``;
this module keeps the command's name."""

import sys

from experiments.machine.doctor import main

if __name__ == "__main__":
    sys.exit(main())
