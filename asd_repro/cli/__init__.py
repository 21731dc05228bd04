"""Command line: ``asd-repro <command> ...``: the runner, the report commands and the command each DVC stage runs.

Heavy imports (torch, timm) happen inside the stage functions, so ``--help`` and ``check`` are quick.
Any ``UserError`` becomes one line on stderr and exit status 2; a reader that stops early (``| head``) ends the
output quietly (see ``main``).
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
GATES = ("compare", "claims")  # commands whose exit status is a verdict
DESCRIPTION = ("Reproduce the table of \"Backdoor Defense via Adaptively Splitting Poisoned Dataset\" (ASD, CVPR 2023) "
               "as a DVC pipeline: run it, compare tables, check the paper's claims.")

STAGE_HELP = {
    "check": "validate params.yaml (names of datasets, attacks, defenses, profile)",
    "prepare": "materialise a dataset as uint8 arrays",
    "assets": "build one attack's trigger assets (patterns, trained generators, ...)",
    "poison": "build the fixed poisoned train/test sets of one attack",
    "train": "train one cell with a defense (resumable); also the repair and fine-tuning stages",
    "pretrain": "a self-supervised defense's pre-training on the poisoned images (DBD)",
    "evaluate": "ACC / ASR of every defense's model and seed of one (dataset, attack) row",
}
GROUPS = {  # what `asd-repro --help` lists, by what a user does
    "run the pipeline": {"repro": RUNNER_HELP},
    "read, compare and check results": {k: REPORT_COMMANDS[k] for k in ("table", "compare", "claims")},
    "inspect the configuration": {"config": REPORT_COMMANDS["config"],
                                  "configurables": "list every gin configurable and its parameters"},
    "one pipeline stage (dvc.yaml runs these)": STAGE_HELP,
}


def _grouped_commands() -> str:
    width = max(len(name) for group in GROUPS.values() for name in group) + 2
    lines = []
    for title, commands in GROUPS.items():
        lines.append(f"{title}:")
        lines += [f"  {name:<{width}}{text}" for name, text in commands.items()]
    return "\n".join(lines) + "\n\nasd-repro COMMAND --help describes one command's arguments."


def _version() -> str:
    from asd_repro import __version__

    return f"asd-repro {__version__}"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="asd-repro", description=DESCRIPTION, epilog=_grouped_commands(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=_version(), help="print the version and exit")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of the commands below")
    clean = "the prepare stage's folder of the clean dataset (data/prepared/<dataset>)"
    out = "the output folder, written atomically (replaced whole)"

    p = sub.add_parser("check", description=STAGE_HELP["check"])
    p.add_argument("--params", type=Path, default=Path("params.yaml"),
                   help="the experiment matrix to validate (default %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="marker file written when params.yaml is valid")

    p = sub.add_parser("prepare", description=STAGE_HELP["prepare"])
    p.add_argument("dataset", help="a dataset plug-in's name (asd_repro/data/<name>.py), e.g. mnist5k")
    p.add_argument("--raw-root", type=Path, required=True, help="downloads / local raw copies live here")
    p.add_argument("--out", type=Path, required=True, help=out)
    _gin_args(p)

    p = sub.add_parser("assets", description=STAGE_HELP["assets"])
    p.add_argument("attack", help="an attack plug-in's name (asd_repro/attacks/<name>.py), e.g. badnets")
    p.add_argument("--clean", type=Path, required=True, help=clean)
    p.add_argument("--out", type=Path, required=True, help=out)
    _gin_args(p)

    p = sub.add_parser("poison", description=STAGE_HELP["poison"])
    p.add_argument("attack", help="an attack plug-in's name (asd_repro/attacks/<name>.py), e.g. badnets")
    p.add_argument("--clean", type=Path, required=True, help=clean)
    p.add_argument("--assets", type=Path, required=True, help="the assets stage's folder of this attack and seed")
    p.add_argument("--out", type=Path, required=True, help=out)
    _gin_args(p)

    defense = "a defense plug-in's name (asd_repro/defenses/<name>.py), e.g. asd"
    poisoned = "the poison stage's folder of this attack and seed"
    checkpoints = "per-epoch checkpoints for resuming (not a DVC output; removed when the stage finishes)"
    p = sub.add_parser("train", description=STAGE_HELP["train"])
    p.add_argument("defense", help=defense)
    p.add_argument("--clean", type=Path, required=True, help=clean)
    p.add_argument("--poisoned", type=Path, required=True, help=poisoned)
    p.add_argument("--out", type=Path, required=True, help=out + ": model.pt, run.json and the gin configs")
    p.add_argument("--curves", type=Path, required=True, help="the per-epoch test ACC/ASR file (JSON) to write")
    p.add_argument("--checkpoints", type=Path, help=checkpoints)
    p.add_argument("--upstream", type=Path, help="run folder whose model a post-training defense starts from")
    _gin_args(p)

    p = sub.add_parser("pretrain", description=STAGE_HELP["pretrain"])
    p.add_argument("defense", help=defense)
    p.add_argument("--clean", type=Path, required=True, help=clean)
    p.add_argument("--poisoned", type=Path, required=True, help=poisoned)
    p.add_argument("--out", type=Path, required=True, help=out + ": the backbone's model.pt and pretrain.json")
    p.add_argument("--checkpoints", type=Path, help=checkpoints)
    _gin_args(p)

    p = sub.add_parser("evaluate", description=STAGE_HELP["evaluate"])
    p.add_argument("--clean", type=Path, required=True, help=clean)
    p.add_argument("--poisoned", type=Path, required=True, help="folder holding one poisoned set per seed (s<seed>)")
    p.add_argument("--runs", type=Path, required=True,
                   help="folder holding one folder per defense, each with one run folder per seed (s<seed>)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="the defenses and seeds to evaluate")
    p.add_argument("--out", type=Path, required=True, help=out + ": one <defense>.json a defense")
    _gin_args(p)

    # The report commands parse their own arguments (asd_repro/report/cli.py): they evolve with the report,
    # and the training stages, which depend on this file, do not re-run when they do.
    for name, text in REPORT_COMMANDS.items():
        sub.add_parser(name, description=text, add_help=False).add_argument(
            "rest", nargs=argparse.REMAINDER, help="the command's own arguments (see its --help)")
    sub.add_parser("repro", description=RUNNER_HELP, add_help=False).add_argument(
        "rest", nargs=argparse.REMAINDER, help="the runner's own arguments (see its --help)")
    sub.add_parser("configurables", description=GROUPS["inspect the configuration"]["configurables"])
    return ap


def _configure(args: argparse.Namespace) -> str:
    """Register every configurable, parse the gin files and bindings; return the asked config text."""
    from asd_repro.core import config
    from asd_repro.cli.plugins import load_all

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


def run(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "check":
        from asd_repro.core.matrix import check_params
        from asd_repro.defenses import DEFENSES

        return check_params(args.params, args.out, lambda name: DEFENSES.meta(name)["family"])
    if args.command == "configurables":
        from asd_repro.cli.plugins import describe_configurables, load_all

        load_all()
        return print(describe_configurables())

    from asd_repro import stages
    from asd_repro.core import config, matrix

    asked = _configure(args)
    config.call_with_config(stages.torch_threads)
    config.call_with_config(stages.deterministic)
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
        p = matrix.read_params(args.params)
        defenses = matrix.defense_names(p.get("defenses"), str(args.params))
        config.call_with_config(stages.evaluate, args.clean, args.poisoned, args.runs, defenses,
                                matrix.seeds_of(p, str(args.params)), args.out)


def main(argv: list[str] | None = None) -> int:
    """The entry point. A reader that stops early (``asd-repro config ... | head``) ends the output quietly, with
    no traceback: exit 0 for the informational commands, and 141 (128 + SIGPIPE, as a C tool gets) for the gates,
    whose verdict was not all read, and for the runner (its stages are stopped), so that neither passes under
    ``set -o pipefail``.
    """
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        status = _main(argv)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit must not fail
        return 141 if argv and argv[0] in (*GATES, "repro") else 0  # a runner cut short did not finish its work


def _main(argv: list[str]) -> int:
    if argv and argv[0] != "repro":  # under `asd-repro repro`, a process with the libraries imported runs it
        from asd_repro.forkserver import delegate

        status = delegate(argv)
        if status is not None:
            return status
    from asd_repro.core.errors import UserError

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
        from asd_repro.core.io import write_error

        error = write_error(e)
        if error is None:
            raise
        print(f"asd-repro: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("asd-repro: interrupted; re-run the same command (or dvc repro) to resume", file=sys.stderr)
        return 130
    return 0

