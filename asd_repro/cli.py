"""Command line: ``asd-repro <stage> ...``, the one command each DVC stage runs.

Heavy imports (torch, timm) happen inside the stage functions, so ``--help`` and ``check`` are quick.
Any ``UserError`` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _gin_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gin", nargs="+", default=[], metavar="FILE",
                   help="gin files in composition order: base, dataset, attack, defense, profile")
    p.add_argument("--bind", action="append", default=[], metavar="BINDING", help="extra gin binding (repeatable)")
    p.add_argument("--bindings-from", action="append", default=[], metavar="FILE:KEY",
                   help="read a list of gin bindings from a YAML key, e.g. params.yaml:bindings.train (repeatable; "
                        "applied in order, then --bind)")
    p.add_argument("--seed", type=int, help="binds the SEED macro")


RUNNER_HELP = "dvc repro with independent stages side by side (-j N at a time); see asd_repro/runner.py"

REPORT_COMMANDS = {
    "table": "assemble results/<profile>/ (tables with seed statistics, claims, figures) from the metrics",
    "compare": "compare two tables (files, metrics folders or git revisions) cell by cell; exit 1 on a change",
    "claims": "check the paper's claims (a claims file) against a table; exit 1 when one fails",
    "config": "print the gin config of one cell's stages (the files and bindings dvc.yaml gives them), composed",
}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="asd-repro", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate params.yaml (names of datasets, attacks, defenses, profile)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--out", type=Path, required=True)

    p = sub.add_parser("prepare", help="materialise a dataset as uint8 arrays")
    p.add_argument("dataset")
    p.add_argument("--raw-root", type=Path, required=True, help="downloads / local raw copies live here")
    p.add_argument("--out", type=Path, required=True)
    _gin_args(p)

    p = sub.add_parser("assets", help="build one attack's trigger assets (patterns, trained generators, ...)")
    p.add_argument("attack")
    p.add_argument("--clean", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    _gin_args(p)

    p = sub.add_parser("poison", help="build the fixed poisoned train/test sets of one attack")
    p.add_argument("attack")
    p.add_argument("--clean", type=Path, required=True)
    p.add_argument("--assets", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    _gin_args(p)

    p = sub.add_parser("train", help="train one cell with a defense (resumable)")
    p.add_argument("defense")
    p.add_argument("--clean", type=Path, required=True)
    p.add_argument("--poisoned", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--curves", type=Path, required=True)
    p.add_argument("--checkpoints", type=Path, help="per-epoch checkpoints for resuming (not a DVC output)")
    p.add_argument("--upstream", type=Path, help="run folder whose model a post-training defense starts from")
    _gin_args(p)

    p = sub.add_parser("pretrain", help="a self-supervised defense's pre-training on the poisoned images (DBD)")
    p.add_argument("defense")
    p.add_argument("--clean", type=Path, required=True)
    p.add_argument("--poisoned", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--checkpoints", type=Path, help="per-epoch checkpoints for resuming (not a DVC output)")
    _gin_args(p)

    p = sub.add_parser("evaluate", help="ACC / ASR of every defense's model and seed of one (dataset, attack) row")
    p.add_argument("--clean", type=Path, required=True)
    p.add_argument("--poisoned", type=Path, required=True, help="folder holding one poisoned set per seed (s<seed>)")
    p.add_argument("--runs", type=Path, required=True,
                   help="folder holding one folder per defense, each with one run folder per seed (s<seed>)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="the defenses and seeds to evaluate")
    p.add_argument("--out", type=Path, required=True)
    _gin_args(p)

    # The report commands parse their own arguments (asd_repro/report/cli.py): they evolve with the report,
    # and the training stages, which depend on this file, do not re-run when they do.
    for name, text in REPORT_COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False).add_argument("rest", nargs=argparse.REMAINDER)

    sub.add_parser("repro", help=RUNNER_HELP, add_help=False).add_argument("rest", nargs=argparse.REMAINDER)
    sub.add_parser("configurables", help="list every gin configurable and its parameters")
    return ap


def _configure(args: argparse.Namespace) -> str:
    """Register every configurable, parse the gin files and bindings; return the asked config text."""
    from asd_repro import config
    from asd_repro.plugins import load_all

    load_all()
    bindings, sources = [], []
    for source in args.bindings_from:
        file, _, key = source.partition(":")
        read = config.bindings_from_params(file, key)
        bindings += read
        sources += [source] * len(read)
    bindings += args.bind
    sources += ["--bind"] * len(args.bind)
    if args.seed is not None:
        bindings.append(f"SEED = {args.seed}")
        sources.append("--seed")
    config.parse(args.gin, bindings, bindings_source=sources)
    return config.asked_config(args.gin, bindings)


def _params(path: Path) -> dict:
    import yaml

    from asd_repro.errors import UserError

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{path}: cannot read ({str(e).splitlines()[0]}); fix the file") from None


def run(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "check":
        from asd_repro.matrix import check_params

        return check_params(args.params, args.out)
    if args.command == "configurables":
        from asd_repro.plugins import describe_configurables, load_all

        load_all()
        return print(describe_configurables())

    from asd_repro import config, matrix, stages

    asked = _configure(args)
    config.call_with_config(stages.torch_threads)
    if args.command == "prepare":
        config.call_with_config(stages.prepare, args.dataset, args.raw_root, args.out, asked_config=asked)
    elif args.command == "assets":
        config.call_with_config(stages.assets, args.attack, args.clean, args.out, asked_config=asked)
    elif args.command == "poison":
        config.call_with_config(stages.poison, args.attack, args.clean, args.assets, args.out, asked_config=asked)
    elif args.command == "train":
        config.call_with_config(stages.train, args.defense, args.clean, args.poisoned, args.out, args.curves,
                                args.checkpoints, asked_config=asked, upstream=args.upstream)
    elif args.command == "pretrain":
        config.call_with_config(stages.pretrain, args.defense, args.clean, args.poisoned, args.out, args.checkpoints,
                                asked_config=asked)
    elif args.command == "evaluate":
        p = _params(args.params)
        defenses = matrix.defense_names(p.get("defenses"), str(args.params))
        config.call_with_config(stages.evaluate, args.clean, args.poisoned, args.runs, defenses,
                                matrix.seeds_of(p, str(args.params)), args.out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if argv and argv[0] != "repro":  # under `asd-repro repro`, a process with the libraries imported runs it
        from asd_repro.forkserver import delegate

        status = delegate(argv)
        if status is not None:
            return status
    from asd_repro.errors import UserError

    try:
        if argv and argv[0] in REPORT_COMMANDS:  # the report commands' exit status is theirs (gates)
            from asd_repro.report.cli import run as report_run

            return report_run(argv[0], argv[1:])
        if argv and argv[0] == "repro":
            from asd_repro.runner import main as repro

            return repro(argv[1:])
        run(argv)
    except UserError as e:
        # gin appends "In call to configurable ..." lines to exceptions raised inside configurables
        print(f"asd-repro: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    except OSError as e:
        from asd_repro.io import NO_SPACE, no_space_error

        if e.errno not in NO_SPACE:
            raise
        print(f"asd-repro: error: {no_space_error(e.filename or 'an output', e.strerror)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("asd-repro: interrupted; re-run the same command (or dvc repro) to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
