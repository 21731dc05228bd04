"""The report commands: ``asd-repro table``, ``asd-repro compare`` and ``asd-repro claims``.

Each parses its own arguments here, so the report can grow options without touching the training stages'
command line (``asd_repro/cli.py``, a dependency of every training stage).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _table(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="asd-repro table", description="assemble results/<profile>/ from the metrics")
    ap.add_argument("--metrics", type=Path, required=True, help="the evaluate stage's per-seed metrics folder")
    ap.add_argument("--curves", type=Path, help="the per-epoch curves, for the figures")
    ap.add_argument("--paper", type=Path, required=True, help="the paper's table (reference/paper_table.csv)")
    ap.add_argument("--claims", type=Path, help="a claims file (reference/claims.yaml) to check in table.md")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), help="the experiment matrix (default %(default)s)")
    ap.add_argument("--out", type=Path, required=True, help="the folder to write (results/<profile>), replaced whole")
    ap.add_argument("--gin", nargs="+", default=[], metavar="FILE", help="gin files (the profile's common.gin)")
    ap.add_argument("--bind", action="append", default=[], metavar="BINDING", help="extra gin binding (repeatable)")
    args = ap.parse_args(argv)

    from asd_repro.core import config
    from asd_repro.core.matrix import read_params
    from asd_repro.cli.plugins import load_all
    from asd_repro.report.stage import table
    from asd_repro.core.matrix import defense_names, seeds_of

    load_all()
    config.parse(args.gin, args.bind, bindings_source="--bind")
    p = read_params(args.params)
    config.call_with_config(table, args.metrics, args.curves, args.paper, args.claims, args.out, p["profile"],
                            p["datasets"], p["attacks"], defense_names(p.get("defenses"), str(args.params)),
                            seeds_of(p, str(args.params)))
    return 0


def run(command: str, argv: list[str]) -> int:
    """Run one report command; its exit status (compare and claims are gates: 1 means a change or a failure).
    A reader that stops early is handled at the entry point (``asd_repro.cli.main``)."""
    if command == "table":
        return _table(argv)
    if command == "compare":
        from asd_repro.report.compare import main

        return main(argv)
    if command == "claims":
        from asd_repro.report.claims import main

        return main(argv)
    if command == "config":
        from asd_repro.report.cellconfig import main

        return main(argv)
    raise SystemExit(f"unknown report command {command!r}")
