"""The paper's claims as data, checked against a table with its seed statistics.

A claims file (``reference/claims.yaml``) is a YAML list, one claim a line, each a flow mapping:

    - {id: asd-defends, text: "ASD ASR <= 5 on every attack", defense: asd, metric: asr, op: "<=", value: 5}
    - {id: asd-keeps-acc, text: "...", defense: asd, metric: acc, op: ">=", ref: none, offset: -2, stat: mean}
    - {id: asd-best, text: "...", kind: best_average, defense: asd, metric: acc, among: {metric: asr, op: "<=", value: 5}}

``kind: every_attack`` (the default) must hold on every attack of every dataset that has the cell (``attacks:``
narrows it); ``kind: best_average`` says the defense has the best average of ``metric`` over the attacks among the
defenses whose average of ``among.metric`` passes ``among.op among.value`` (each defense's per-attack centre:
ACC mean, ASR median). ``stat`` says which seed statistic a cell is judged by:
- ``worst`` (default for ASR): the seed least favourable to the claim, i.e. the claim holds in every seed;
- ``mean`` (default for ACC), ``median``, ``best``.
A relative claim (``ref``) compares with the same statistic of the ``ref`` defense's cell, plus ``offset``. A cell
with a collapsed seed (ACC near chance) or a missing value fails every claim on it: a broken or missing model is
never a defense's success. ``kind: undominated`` says no other defense has both a higher average ACC and a lower
average ASR than ``defense`` (it says something even when ``defense`` is the only one that defends); a
``best_average`` claim with a single eligible defense is vacuous and fails, saying so.

**Expected failures** (like pytest's strict xfail): ``xfail: {profiles: [mini], attacks: [iab, clb], reason: ...}``
declares that at those profiles' scale the claim fails on those attacks' cells (all of the claim's cells when
``attacks`` is left out), for the reason given. The claim must then hold on every other cell and fail on every
declared one: a declared cell that starts to hold is an unexpected pass, and fails the gate until the declaration
is removed, so expectations stay current. At other profiles the declaration does nothing.
"""

from __future__ import annotations

import argparse
import math
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from asd_repro.core.errors import UserError
from asd_repro.report.stats import Noise

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
FIELDS = {"id", "text", "kind", "defense", "metric", "op", "value", "ref", "offset", "stat", "attacks", "among",
          "xfail"}
KINDS = ("every_attack", "best_average", "undominated")
XFAIL_FIELDS = {"profiles", "attacks", "reason"}
STATS = ("worst", "best", "mean", "median")


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# The claims file's schema: each field's expected shape, checked before any meaning (one line naming the field).
SCHEMA: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "id": ("a name (text)", lambda v: isinstance(v, (str, int)) and not isinstance(v, bool)),
    "text": ("text", lambda v: isinstance(v, str)),
    "kind": (f"one of {', '.join(KINDS)}", lambda v: isinstance(v, str)),
    "defense": ("a defense's name", lambda v: isinstance(v, str)),
    "metric": ("acc or asr", lambda v: isinstance(v, str)),
    "op": (f"one of {', '.join(OPS)}", lambda v: isinstance(v, str)),
    "value": ("a finite number", _finite_number),
    "ref": ("a defense's name", lambda v: isinstance(v, str)),
    "offset": ("a finite number", _finite_number),
    "stat": (f"one of {', '.join(STATS)}", lambda v: v is None or isinstance(v, str)),
    "attacks": ("a list of attack names", lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v)),
    "among": ("a mapping {metric: asr, op: '<=', value: 5}", lambda v: isinstance(v, dict)),
    "xfail": ("a mapping {profiles: [mini], reason: \"why\"}", lambda v: isinstance(v, dict)),
}


@dataclass
class Claim:
    id: str
    text: str
    defense: str
    metric: str
    op: str
    kind: str = "every_attack"
    value: float | None = None
    ref: str | None = None
    offset: float = 0.0
    stat: str | None = None
    attacks: list[str] | None = None
    among: dict[str, Any] | None = None
    xfail: dict[str, Any] | None = None

    def expected_failures(self, profile: str | None) -> tuple[set[str] | None, str] | None:
        """At ``profile``: the attacks whose cells are expected to fail (None: every cell), and why; or None."""
        if not self.xfail or profile not in self.xfail["profiles"]:
            return None
        attacks = self.xfail.get("attacks")
        return (set(attacks) if attacks else None), self.xfail["reason"]

    @property
    def statistic(self) -> str:
        return self.stat or ("worst" if self.metric == "asr" else "mean")


@dataclass
class Result:
    claim: Claim
    holds: bool
    detail: str
    failures: list[str] = field(default_factory=list)
    expected: str = ""  # "xfail": failed where declared; "xpass": a declared failure held; "": nothing declared

    @property
    def ok(self) -> bool:
        """What the gate reads: held, or failed exactly where a failure was declared."""
        return self.holds or self.expected == "xfail"


def load_claims(path: Path) -> list[Claim]:
    """Parse and validate a claims file; a one-line error naming the file, the claim and the fix."""
    import yaml

    try:
        items = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: claims file not found; pass an existing file (e.g. reference/claims.yaml)") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: malformed YAML ({str(e).splitlines()[0]}); one claim a line, as a flow "
                        "mapping {id: ..., ...}") from None
    if not isinstance(items, list):
        raise UserError(f"{path}: expected a list of claims (one '- {{id: ...}}' a line)")
    claims, seen = [], set()
    for i, item in enumerate(items, 1):
        where = f"{path}: claim {i}"
        if not isinstance(item, dict):
            raise UserError(f"{where}: expected a mapping {{id: ..., defense: ..., metric: ..., op: ...}}")
        unknown = set(item) - FIELDS
        if unknown:
            raise UserError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(FIELDS))}")
        for key in ("id", "defense", "metric", "op"):
            if key not in item:
                raise UserError(f"{where}: missing '{key}'")
        for key, value in item.items():
            expected, ok = SCHEMA[key]
            if not ok(value):
                raise UserError(f"{where}: {key} must be {expected}, got {value!r}")
        item["id"] = str(item["id"])
        where = f"{path}: claim {item['id']!r}"
        if item["id"] in seen:
            raise UserError(f"{where}: the id is used twice; make ids unique")
        seen.add(item["id"])
        if item["metric"] not in ("acc", "asr"):
            raise UserError(f"{where}: metric must be acc or asr, got {item['metric']!r}")
        if item["op"] not in OPS:
            raise UserError(f"{where}: op must be one of {', '.join(OPS)}, got {item['op']!r}")
        if item.get("stat") is not None and item["stat"] not in STATS:
            raise UserError(f"{where}: stat must be one of {', '.join(STATS)}, got {item['stat']!r}")
        kind = item.get("kind", "every_attack")
        xfail = item.get("xfail")
        if xfail is not None:
            if (not isinstance(xfail, dict) or set(xfail) - XFAIL_FIELDS or not {"profiles", "reason"} <= set(xfail)
                    or not isinstance(xfail["profiles"], list) or not str(xfail["reason"]).strip()
                    or not isinstance(xfail.get("attacks", []), list)):
                raise UserError(f"{where}: xfail needs {{profiles: [mini], reason: \"why\"}} and may name attacks: "
                                "[iab, clb]")
            if kind != "every_attack" and xfail.get("attacks"):
                raise UserError(f"{where}: xfail attacks apply to every_attack claims only; leave them out")
        if kind == "every_attack":
            if ("value" in item) == ("ref" in item):
                raise UserError(f"{where}: give exactly one of 'value' (a number) or 'ref' (a defense, with 'offset')")
        elif kind == "best_average":
            among = item.get("among")
            if (not isinstance(among, dict) or set(among) != {"metric", "op", "value"}
                    or not isinstance(among["op"], str) or among["op"] not in OPS
                    or not isinstance(among["metric"], str) or among["metric"] not in ("acc", "asr")
                    or not _finite_number(among["value"])):
                raise UserError(f"{where}: best_average needs among: {{metric: asr, op: '<=', value: 5}}")
        elif kind == "undominated":
            if "value" in item or "ref" in item:
                raise UserError(f"{where}: undominated compares average ACC and ASR; leave out value and ref")
        else:
            raise UserError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        claims.append(Claim(**{"text": item.get("text", item["id"]), **item}))
    return claims


def _stat(values: np.ndarray, statistic: str, op: str) -> float:
    if statistic == "mean":
        return float(values.mean())
    if statistic == "median":
        return float(np.median(values))
    low_is_bad = op in (">=", ">")  # the claim wants large values: the worst seed is the smallest
    worst = values.min() if low_is_bad else values.max()
    best = values.max() if low_is_bad else values.min()
    return float(worst if statistic == "worst" else best)


def _collapsed(g: pd.DataFrame, noise: Noise) -> int:
    """Seeds whose model is collapsed, or cannot be ruled out as collapsed (no class count recorded)."""
    unknown = int(g["num_classes"].isna().sum()) if "num_classes" in g else len(g)
    return int(sum(noise.collapsed_rows(g))) + unknown


def _every_attack(claim: Claim, long: pd.DataFrame, noise: Noise) -> Result:
    cells = long[long["defense"] == claim.defense]
    if claim.attacks:
        cells = cells[cells["attack"].isin(claim.attacks)]
    failures, checked = [], 0
    for (d, a), g in cells.groupby(["dataset", "attack"], sort=False):
        checked += 1
        if g[claim.metric].isna().any() or g["acc"].isna().any():
            failures.append(f"{d}/{a}: a seed has no {claim.metric.upper() if g[claim.metric].isna().any() else 'ACC'}"
                            " value (a missing or diverged model)")
            continue
        ours = _stat(g[claim.metric].to_numpy(float), claim.statistic, claim.op)
        if claim.ref is not None:
            r = long[(long["defense"] == claim.ref) & (long["dataset"] == d) & (long["attack"] == a)]
            if r.empty:
                failures.append(f"{d}/{a}: no {claim.ref} cell to compare with")
                continue
            if r[claim.metric].isna().any():
                failures.append(f"{d}/{a}: the {claim.ref} cell has a seed with no {claim.metric.upper()} value")
                continue
            bound = _stat(r[claim.metric].to_numpy(float), claim.statistic, claim.op) + claim.offset
        else:
            bound = float(claim.value)
        collapsed = _collapsed(g, noise) + (_collapsed(r, noise) if claim.ref is not None else 0)
        if collapsed:
            failures.append(f"{d}/{a}: {collapsed} collapsed model(s), or models whose class count is unrecorded")
        elif not OPS[claim.op](ours, bound):
            failures.append(f"{d}/{a}: {ours:.1f} (needs {claim.op} {bound:.1f})")
    if not checked:
        return Result(claim, False, f"no {claim.defense} cell in the table", ["no cell"])
    detail = f"{checked - len(failures)}/{checked} cells hold ({claim.statistic} over seeds)"
    return Result(claim, not failures, detail, failures)


def _averages(part: pd.DataFrame, noise: Noise) -> tuple[pd.DataFrame, set[str]]:
    """Each defense's average over attacks of its per-cell centres (ACC mean, ASR median); and the broken ones."""
    per_cell = part.groupby(["defense", "attack"]).agg(acc=("acc", "mean"), asr=("asr", "median"))
    broken = {f for f, g in part.groupby("defense") if _collapsed(g, noise) or g[["acc", "asr"]].isna().any().any()}
    return per_cell.groupby("defense").mean(), broken


def _best_average(claim: Claim, long: pd.DataFrame, noise: Noise) -> Result:
    among = claim.among or {}
    failures, details = [], []
    for d, part in long.groupby("dataset", sort=False):
        avg, broken = _averages(part, noise)
        eligible = avg[[OPS[among["op"]](v, among["value"]) and f not in broken
                        for f, v in zip(avg.index, avg[among["metric"]])]]
        if claim.defense not in eligible.index:
            why = "has a collapsed model" if claim.defense in broken else (
                f"average {among['metric'].upper()} {avg[among['metric']].get(claim.defense, float('nan')):.1f} "
                f"is not {among['op']} {among['value']}")
            failures.append(f"{d}: {claim.defense} is not eligible ({why})")
            continue
        if len(eligible) == 1:
            failures.append(f"{d}: vacuous, {claim.defense} is the only eligible defense (the claim says nothing; "
                            "use kind: undominated)")
            continue
        pick = max if claim.op in (">=", ">") else min
        best = pick(eligible.index, key=lambda f: eligible.loc[f, claim.metric])
        details.append(f"{d}: best {best} ({eligible.loc[best, claim.metric]:.1f}) among "
                       f"{', '.join(eligible.index)}")
        if best != claim.defense and eligible.loc[best, claim.metric] != eligible.loc[claim.defense, claim.metric]:
            failures.append(f"{d}: {best} {eligible.loc[best, claim.metric]:.1f} beats {claim.defense} "
                            f"{eligible.loc[claim.defense, claim.metric]:.1f}")
    return Result(claim, not failures and bool(details), "; ".join(details) or "no eligible cell", failures)


def _undominated(claim: Claim, long: pd.DataFrame, noise: Noise) -> Result:
    failures, details = [], []
    for d, part in long.groupby("dataset", sort=False):
        avg, broken = _averages(part, noise)
        if claim.defense not in avg.index or claim.defense in broken:
            failures.append(f"{d}: {claim.defense} " + ("has a collapsed or missing model" if claim.defense in broken
                                                          else "is not in the table"))
            continue
        ours = avg.loc[claim.defense]
        better = [f for f in avg.index if f != claim.defense and f not in broken
                  and avg.loc[f, "acc"] > ours["acc"] and avg.loc[f, "asr"] < ours["asr"]]
        details.append(f"{d}: {claim.defense} ACC {ours['acc']:.1f}, ASR {ours['asr']:.1f} against "
                       f"{len(avg) - 1} other defenses")
        failures += [f"{d}: {f} has both more ACC ({avg.loc[f, 'acc']:.1f}) and less ASR ({avg.loc[f, 'asr']:.1f})"
                     for f in better]
    return Result(claim, not failures and bool(details), "; ".join(details) or "no cell", failures)


JUDGES = {"every_attack": _every_attack, "best_average": _best_average, "undominated": _undominated}


def _with_expectations(claim: Claim, long: pd.DataFrame, noise: Noise, profile: str | None) -> Result:
    expected = claim.expected_failures(profile)
    judge = JUDGES[claim.kind]
    if expected is None:
        return judge(claim, long, noise)
    attacks, reason = expected
    if attacks is None:  # the whole claim is expected to fail at this scale
        r = judge(claim, long, noise)
        r.expected = "xpass" if r.holds else "xfail"
        r.detail += f"; expected to fail at profile {profile}: {reason}"
        return r
    declared = long[long["attack"].isin(attacks)]
    rest = judge(claim, long[~long["attack"].isin(attacks)], noise)
    cells = declared[declared["defense"] == claim.defense].groupby(["dataset", "attack"], sort=False)
    xpass = [f"{d}/{a}" for (d, a), _ in cells
             if judge(claim, declared[(declared["dataset"] == d) & (declared["attack"] == a)], noise).holds]
    detail = f"{rest.detail}; {', '.join(sorted(attacks))} expected to fail at profile {profile}: {reason}"
    if xpass:
        failures = rest.failures + [f"{c}: holds, but is declared an expected failure (remove it from xfail)"
                                    for c in xpass]
        return Result(claim, False, detail, failures, "xpass")
    return Result(claim, rest.holds, detail, rest.failures, "xfail" if rest.holds else "")


def evaluate_claims(claims: list[Claim], long: pd.DataFrame, noise: Noise | None = None,
                    profile: str | None = None) -> list[Result]:
    """Every claim's verdict on a long per-seed table (``table.csv`` rows, no Average rows) made at ``profile``."""
    noise = noise or Noise()
    long = long[long["attack"] != "average"]
    return [_with_expectations(c, long, noise, profile) for c in claims]


def checklist(results: list[Result]) -> str:
    lines = []
    for r in results:
        mark = "x" if r.holds else ("~" if r.ok else " ")
        tag = {"xfail": " (fails where declared)", "xpass": " **unexpected pass**"}.get(r.expected, "")
        why = "" if r.holds and not r.failures else " — fails: " + "; ".join(r.failures[:8]) + (
            f"; and {len(r.failures) - 8} more" if len(r.failures) > 8 else "")
        lines.append(f"- [{mark}] **{r.claim.id}**{tag}: {r.claim.text} ({r.detail}){why}")
    held, declared = sum(r.holds for r in results), sum(r.expected == "xfail" for r in results)
    bad = sum(not r.ok for r in results)
    return "\n".join(lines + ["", f"{held} of {len(results)} claims hold" + (
        f"; {declared} with failures declared at this scale" if declared else "") + (
        f"; {bad} fail the gate" if bad else "; the gate passes") + "."])


def main(argv: list[str]) -> int:
    from asd_repro.report.compare import load_table

    ap = argparse.ArgumentParser(prog="asd-repro claims",
                                 description="check claims against a table; exit 1 when one fails, 2 on bad input")
    ap.add_argument("table", help="a table.csv, a metrics folder, or REV:path of either")
    ap.add_argument("--claims", type=Path, default=Path("reference/claims.yaml"), help="the claims file")
    ap.add_argument("--collapse-margin", type=float, default=Noise.collapse_margin,
                    help="ACC <= chance + this x (100 - chance) is a collapsed model (it fails every claim on its cell)")
    ap.add_argument("--profile", help="the profile whose expected failures apply (default: the table's profile "
                                      "column)")
    args = ap.parse_args(argv)
    long, _ = load_table(args.table)
    profile = args.profile or table_profile(args.table)
    results = evaluate_claims(load_claims(args.claims), long, Noise(collapse_margin=args.collapse_margin), profile)
    print(f"# Claims of {args.claims} on {args.table} (profile {profile or 'unknown'})\n\n{checklist(results)}")
    return 0 if all(r.ok for r in results) else 1


def table_profile(spec: str) -> str | None:
    """The ``profile`` column of a table.csv given as a file (one value), else None."""
    path = Path(spec)
    if not path.is_file():
        return None
    try:
        profiles = pd.read_csv(path, usecols=["profile"])["profile"].dropna().unique()
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    return str(profiles[0]) if len(profiles) == 1 else None
