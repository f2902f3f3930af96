"""``python -m workbench ...`` (and so ``torchrun ... -m workbench embed ...``): the CLI."""

import sys

from workbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
