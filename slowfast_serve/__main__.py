"""``python -m slowfast_serve``: the same command line as ``slowfast-serve``."""

import sys

from slowfast_serve.cli import main

sys.exit(main())
