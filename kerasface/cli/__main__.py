"""``python -m kerasface.cli ...`` = ``kerasface ...``."""

import sys

from kerasface.cli import main

if __name__ == "__main__":
    sys.exit(main())
