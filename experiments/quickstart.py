"""The quickstart recipe, runnable as a script: same as `datarater quickstart [key=value ...]`.

The recipe itself lives in datarater/experiments/quickstart.py so the installed command finds it.
"""

import sys

from datarater.cli import main

if __name__ == "__main__":
    sys.exit(main(["quickstart", *sys.argv[1:]]))
