"""``python -m vidseek.server.cli``: the ``vidseek`` command."""

import sys

from vidseek.server.cli.parser import main

if __name__ == "__main__":
    sys.exit(main())
