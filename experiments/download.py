"""`python -m experiments.download` (make data, make model). The code lives in ``experiments.data.download``;
this module keeps the command's name."""

import sys

from experiments.data.download import main

if __name__ == "__main__":
    sys.exit(main())
