"""``python -m asd_repro.cli``: the command line without the fork server."""

import sys

from asd_repro.cli import main

sys.exit(main())
