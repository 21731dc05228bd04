"""The experiment matrix of params.yaml: profile, seeds, datasets, attacks and defenses (by family), validated
before any stage runs (the pipeline's ``check`` stage) and read by the stages that span a row or the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from asd_repro.core.errors import SEED_LIMIT, UserError
from asd_repro.core.io import write_text_atomic

FAMILIES = {
    "scratch": "trained from scratch on the poisoned set (stage train)",
    "repair": "repair the same cell's No-defense model (stage repair; needs 'none' in defenses.scratch)",
    "selfsup": "start from a backbone pre-trained on the poisoned images without labels (stages pretrain, finetune)",
}


def defense_names(defenses: Any, source: str = "params.yaml") -> list[str]:
    """The flat list of defenses of params.yaml's ``defenses`` mapping (family -> list of names)."""
    if not isinstance(defenses, dict) or set(defenses) - set(FAMILIES):
        raise UserError(f"{source}: 'defenses' must map the families {', '.join(FAMILIES)} to lists of names")
    names = []
    for family in FAMILIES:
        listed = defenses.get(family) or []
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise UserError(f"{source}: 'defenses.{family}' must be a list of names (or [])")
        names += listed
    return names


def seed_folder(parent: Path, seed: int) -> Path:
    """Where one seed's output of a stage lives inside the cell's folder: ``<parent>/s<seed>``."""
    return Path(parent) / f"s{seed}"


def seeds_of(params: dict[str, Any], source: str = "params.yaml") -> list[int]:
    """params.yaml's ``seeds``: a non-empty list of distinct non-negative integers, each a full replicate."""
    seeds = params.get("seeds")
    if "seed" in params and seeds is None:
        raise UserError(f"{source}: 'seed' is now 'seeds', a list (e.g. seeds: [100, 101, 102]); rename it")
    if (not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                            and 0 <= s < SEED_LIMIT for s in seeds)):
        raise UserError(f"{source}: 'seeds' must be a non-empty list of integers from 0 to {SEED_LIMIT - 1}, "
                        f"got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{source}: 'seeds' lists a seed twice ({seeds}); list each once")
    return seeds


def read_params(params_file: str | Path) -> Any:
    """``params.yaml`` parsed: the one reader of the file (the CLI, the gin bindings lists, the report commands)."""
    import yaml

    path = Path(params_file)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run from the project root") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: malformed YAML ({str(e).splitlines()[0]}); fix the syntax") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror}); fix the file or its permissions") from None


def check_params(params_file: Path, out: Path, family_of: Callable[[str], str],
                 gin_root: Path = Path("params")) -> None:
    """Validate params.yaml before any stage runs: every name needs a plug-in and its gin files, every defense sits
    in its family (``family_of(name)``, the family the plug-in registered)."""
    from asd_repro.core.registry import module_names

    p = read_params(params_file)
    if not isinstance(p, dict):
        raise UserError(f"{params_file}: expected a mapping with profile, seeds, datasets, attacks, defenses")
    lists = {"datasets": p.get("datasets"), "attacks": p.get("attacks"),
             "defenses": defense_names(p.get("defenses"), str(params_file))}
    for key, kind, package in (("datasets", "dataset", "asd_repro.data"), ("attacks", "attack", "asd_repro.attacks"),
                               ("defenses", "defense", "asd_repro.defenses")):
        names = lists[key]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise UserError(f"{params_file}: '{key}' must be a non-empty list of names")
        known = [n for n in module_names(package) if (gin_root / key / f"{n}.gin").is_file()]
        for n in names:
            if n not in known:
                raise UserError(f"{params_file}: unknown {kind} {n!r} in '{key}'; known: {', '.join(known)}")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UserError(f"{params_file}: '{key}' lists {', '.join(twice)} twice; list each {kind} once")
    profile = p.get("profile")
    folder = gin_root / "profiles" / str(profile)
    if not isinstance(profile, str) or not (folder / "common.gin").is_file():
        known = sorted(f.parent.name for f in (gin_root / "profiles").glob("*/common.gin"))
        raise UserError(f"{params_file}: unknown profile {profile!r}; known: {', '.join(known)}")
    repair, selfsup = p["defenses"].get("repair") or [], p["defenses"].get("selfsup") or []
    if repair and "none" not in (p["defenses"].get("scratch") or []):
        raise UserError(f"{params_file}: defenses.repair ({', '.join(repair)}) repairs the No-defense model: "
                        "add 'none' to defenses.scratch")
    for family, names in p["defenses"].items():
        for name in names or []:
            expected = family_of(name)
            if family != expected:
                raise UserError(f"{params_file}: defense {name!r} belongs in defenses.{expected}, not "
                                f"defenses.{family} ({FAMILIES[expected]})")
    for name in selfsup:
        for f in (gin_root / "defenses" / f"{name}_pretrain.gin", folder / f"{name}_pretrain.gin"):
            if not f.is_file():
                raise UserError(f"{f}: missing; the pretrain stage of {name!r} reads it (it may hold only a comment)")
    for part in ["attacks"] + lists["defenses"]:
        if not (folder / f"{part}.gin").is_file():
            raise UserError(f"{folder / (part + '.gin')}: missing; profile {profile!r} needs a file for every "
                            "defense in params.yaml (and attacks.gin), even one with only a comment")
    seeds_of(p, str(params_file))
    write_text_atomic(out, "params.yaml is valid\n")
