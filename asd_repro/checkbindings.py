"""The check stage's bindings half: ``python -m asd_repro.checkbindings params.yaml``.

Every gin bindings list of ``params.yaml`` that ``dvc.yaml`` reads must exist and parse against the registered
configurables before any other stage runs. DVC removes a stale stage's previous outputs right before it runs the
stage's command, so a typo found inside a training stage would already have cost that stage's committed outputs; the
check stage depends on ``bindings`` and runs first, so a typo stops ``dvc repro`` (and ``asd-repro repro``) there,
with one line naming the list and nothing removed.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The lists dvc.yaml's commands read (--bindings-from params.yaml:bindings.<key>), besides one per defense.
STAGE_LISTS = ("prepare", "poison", "pretrain", "train", "evaluate")


def check_bindings(params_file: Path) -> None:
    """Raise a one-line ``UserError`` for a missing, malformed or unparsable bindings list."""
    from asd_repro.core.errors import UserError
    from asd_repro.core.matrix import defense_names, read_params

    params = read_params(params_file)
    if not isinstance(params, dict):
        raise UserError(f"{params_file}: expected a mapping with profile, seeds, datasets, attacks, defenses, bindings")
    lists = params.get("bindings")
    if not isinstance(lists, dict):
        raise UserError(f"{params_file}: 'bindings' must map each stage family and defense to a list of gin bindings "
                        "([] for none)")
    needed = [*STAGE_LISTS, *defense_names(params.get("defenses"), str(params_file))]
    missing = [key for key in needed if key not in lists]
    if missing:
        raise UserError(f"{params_file}: bindings.{missing[0]} is missing; dvc.yaml reads it (add `{missing[0]}: []`)")
    parse_lists(params_file, list(lists))


def parse_lists(params_file: Path, keys: list[str]) -> None:
    """Parse each ``bindings.<key>`` list of ``params_file`` against every registered configurable."""
    import gin

    from asd_repro.core import config
    from asd_repro.cli.plugins import load_all

    load_all()
    try:
        for key in keys:
            source = f"{params_file}:bindings.{key}"
            config.parse([], config.bindings_from_params(params_file, f"bindings.{key}"), bindings_source=source)
    finally:
        gin.clear_config()


def main(argv: list[str] | None = None) -> int:
    from asd_repro.core.errors import UserError

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m asd_repro.checkbindings PARAMS_YAML", file=sys.stderr)
        return 2
    try:
        check_bindings(Path(argv[0]))
    except UserError as e:
        print(f"asd-repro: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
