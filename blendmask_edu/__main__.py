"""`python -m blendmask_edu ...` is the `blendmask-edu` command."""

import sys

from .cli import main

sys.exit(main())
