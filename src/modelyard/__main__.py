"""``python -m modelyard``: the command line, as the ``modelyard`` script runs it."""

from __future__ import annotations

import sys

from modelyard.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
