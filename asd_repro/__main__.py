"""``python -m asd_repro ...`` is ``asd-repro ...``; ``python -m asd_repro --forkserver PATH`` starts the runner's
fork server (``asd_repro/forkserver.py``) with the command line's entry point, so the server imports nothing above
itself."""

from __future__ import annotations

import sys


def _preload() -> None:
    import numpy  # noqa: F401
    import timm  # noqa: F401
    import torch  # noqa: F401

    from asd_repro import stages  # noqa: F401
    from asd_repro.core import config  # noqa: F401
    from asd_repro.cli.plugins import load_all

    load_all()


def main() -> int:
    from asd_repro.cli import main as entry

    if len(sys.argv) == 3 and sys.argv[1] == "--forkserver":
        from asd_repro.forkserver import serve

        serve(sys.argv[2], entry, _preload)
        return 0
    return entry(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
