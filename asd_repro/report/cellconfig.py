"""``asd-repro config DATASET ATTACK DEFENSE``: the gin configuration of one cell, as its stages get it.

For each stage of the cell (the attack's ``assets`` and ``poison``, the defense's training stages) it reads
the command that ``dvc.yaml`` gives that stage, takes the gin files and bindings lists in it, and prints:
- the composed config: every file's statements in composition order, then the bindings, which is the text
  the stage hashes into its checkpoint key and writes to ``config.gin``;
- with ``--values``, every value gin holds once the files and bindings are parsed (``gin.config_str()``);
- with ``--operative``, the ``operative_config.gin`` a finished run wrote (the values training really used).

``--profile`` picks another profile than params.yaml's; ``--bind`` adds a binding, as an ablation would.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from asd_repro.core.errors import UserError

FAMILY_STAGES = {"scratch": ("train",), "repair": ("repair",), "selfsup": ("pretrain", "finetune")}


def _family(defense: str, defenses: dict[str, list[str]], source: str) -> str:
    for family, names in defenses.items():
        if defense in (names or []):
            return family
    listed = ", ".join(n for names in defenses.values() for n in names or [])
    raise UserError(f"{source}: defense {defense!r} is not in 'defenses' ({listed}); add it or pick one of those")


def _resolve(template: str, values: dict[str, Any]) -> str:
    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key not in values:
            raise UserError(f"dvc.yaml: cannot resolve ${{{key}}} for this cell; fix the stage's command")
        return str(values[key])

    return re.sub(r"\$\{([^}]+)\}", sub, template)


def stage_commands(dvc_yaml: Path, params: dict[str, Any], dataset: str, attack: str, defense: str, seed: int,
                   profile: str) -> dict[str, list[str]]:
    """``{stage name: argv}`` of the cell's stages, from ``dvc.yaml``'s command templates."""
    try:
        stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise UserError(f"{dvc_yaml}: cannot read the pipeline ({str(e).splitlines()[0]}); run from the project "
                        "root") from None
    family = _family(defense, params.get("defenses") or {}, "params.yaml")
    values = {"item.dataset": dataset, "item.attack": attack, "item.defense": defense, "item.seed": seed,
              "profile": profile}
    out = {}
    for name in ("assets", "poison", *FAMILY_STAGES[family]):
        out[f"{name}@{dataset}-{attack}" + (f"-{defense}" if name not in ("assets", "poison") else "") + f"-{seed}"] = \
            shlex.split(_resolve(stages[name]["cmd"], values))
    return out


def _gin_inputs(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(gin files, bindings, where each binding came from) of one stage command."""
    from asd_repro.core import config

    files, bindings, sources, i = [], [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--gin":
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                files.append(argv[i])
                i += 1
            continue
        if arg == "--bindings-from":
            file, _, key = argv[i + 1].partition(":")
            read = config.bindings_from_params(file, key)
            bindings += read
            sources += [argv[i + 1]] * len(read)
        elif arg == "--seed":
            bindings.append(f"SEED = {argv[i + 1]}")
            sources.append("--seed")
        i += 1 if arg not in ("--bindings-from", "--seed") else 2
    return files, bindings, sources


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="asd-repro config", description=__doc__.splitlines()[0])
    ap.add_argument("dataset", help="a dataset of params.yaml, e.g. mnist5k")
    ap.add_argument("attack", help="an attack of params.yaml, e.g. badnets")
    ap.add_argument("defense", help="a defense of params.yaml, e.g. asd")
    ap.add_argument("--seed", type=int, help="one of params.yaml's seeds (default: the first)")
    ap.add_argument("--profile", help="default: params.yaml's profile")
    ap.add_argument("--bind", action="append", default=[], metavar="BINDING", help="an extra binding, as --bind")
    ap.add_argument("--values", action="store_true", help="also print every value gin holds after parsing")
    ap.add_argument("--operative", action="store_true", help="also print a finished run's operative_config.gin")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), help="the experiment matrix (default %(default)s)")
    ap.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"),
                    help="the pipeline whose stage commands give the files and bindings (default %(default)s)")
    args = ap.parse_args(argv)

    import gin

    from asd_repro.core import config
    from asd_repro.core.matrix import read_params
    from asd_repro.cli.plugins import load_all
    from asd_repro.core.matrix import seeds_of

    params = read_params(args.params)
    seed = args.seed if args.seed is not None else seeds_of(params, str(args.params))[0]
    profile = args.profile or params["profile"]
    load_all()
    for stage, cmd in stage_commands(args.dvc_yaml, params, args.dataset, args.attack, args.defense, seed,
                                     profile).items():
        files, bindings, sources = _gin_inputs(cmd)
        bindings, sources = bindings + args.bind, sources + ["--bind"] * len(args.bind)
        config.parse(files, bindings, bindings_source=sources)
        print(f"######## {stage}: {' '.join(cmd[:2])} (profile {profile}, seed {seed})")
        print(config.asked_config(files, bindings))
        if args.values:
            print(f"#### {stage}: every value gin holds\n{gin.config_str()}")
        if args.operative and "--out" in cmd:
            path = Path(cmd[cmd.index("--out") + 1]) / "operative_config.gin"
            text = path.read_text() if path.is_file() else f"# {path}: not written yet (run the stage: dvc repro)\n"
            print(f"#### {stage}: {path}\n{text}")
    return 0
