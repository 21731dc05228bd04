"""The paper's claims as data: each claim of reference/claims.yaml passes and fails on hand-made tables."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from asd_repro.cli import main
from asd_repro.core.errors import UserError
from asd_repro.report.claims import Claim, evaluate_claims, load_claims
from test_compare import long_table

REPO = Path(__file__).resolve().parents[1]
ATTACKS = ("badnets", "blend")


def table(none=(97.0, 99.0), asd=(96.0, 1.0), fp=(96.5, 40.0), asd_seeds=None):
    """Two attacks, three seeds; every seed of a defense alike unless ``asd_seeds`` overrides ASD's."""
    cells = {}
    for a in ATTACKS:
        cells[(a, "none")] = {s: none for s in (1, 2, 3)}
        cells[(a, "fp")] = {s: fp for s in (1, 2, 3)}
        cells[(a, "asd")] = asd_seeds or {s: asd for s in (1, 2, 3)}
    return long_table(cells)


@pytest.fixture(scope="module")
def claims():
    return {c.id: c for c in load_claims(REPO / "reference" / "claims.yaml")}


def verdict(claims, claim_id: str, long) -> bool:
    return evaluate_claims([claims[claim_id]], long)[0].holds


def test_the_paper_claims_hold_on_a_table_that_shows_them(claims):
    long = table()
    assert set(claims) == {"attacks-implant", "asd-defends", "asd-keeps-acc", "asd-undominated"}
    assert all(r.holds for r in evaluate_claims(list(claims.values()), long))


def test_attacks_implant_fails_when_one_seed_does_not(claims):
    long = table()
    long.loc[(long.defense == "none") & (long.seed == 2) & (long.attack == "blend"), "asr"] = 58.9
    result = evaluate_claims([claims["attacks-implant"]], long)[0]
    assert not result.holds and result.failures == ["cifar10/blend: 58.9 (needs >= 90.0)"]  # the worst seed


def test_asd_defends_is_judged_by_the_worst_seed(claims):
    assert not verdict(claims, "asd-defends", table(asd_seeds={1: (96.0, 0.1), 2: (96.0, 0.2), 3: (96.0, 12.0)}))
    assert verdict(claims, "asd-defends", table(asd_seeds={1: (96.0, 0.1), 2: (96.0, 0.2), 3: (96.0, 4.9)}))


def test_a_collapsed_model_is_never_a_defense_success(claims):
    long = table(asd_seeds={1: (96.0, 0.1), 2: (96.0, 0.2), 3: (10.0, 0.0)})  # ASR 0 from a chance-level model
    result = evaluate_claims([claims["asd-defends"]], long)[0]
    assert not result.holds and "collapsed" in result.failures[0]


def test_asd_keeps_acc_compares_means_with_no_defense(claims):
    assert verdict(claims, "asd-keeps-acc", table(none=(97.0, 99.0), asd=(95.0, 1.0)))  # exactly 2 points
    assert not verdict(claims, "asd-keeps-acc", table(none=(97.0, 99.0), asd=(94.9, 1.0)))


def test_asd_undominated_says_something_when_asd_is_the_only_defense_that_defends(claims):
    assert verdict(claims, "asd-undominated", table(fp=(99.0, 40.0)))  # FP: more ACC, but more ASR too
    assert not verdict(claims, "asd-undominated", table(fp=(99.0, 0.5)))  # FP: more ACC and less ASR than ASD
    assert not verdict(claims, "asd-undominated", table(asd=(96.0, 30.0), fp=(96.5, 20.0)))
    assert not verdict(claims, "asd-undominated", table(asd_seeds={1: (96.0, 1.0), 2: (5.0, 1.0), 3: (96.0, 1.0)}))


def test_a_best_average_claim_with_one_eligible_defense_is_vacuous_and_fails():
    best = Claim(id="best", text="", defense="asd", metric="acc", op=">=", kind="best_average",
                 among={"metric": "asr", "op": "<=", "value": 5})
    [r] = evaluate_claims([best], table(fp=(99.0, 40.0)))
    assert not r.holds and "vacuous" in r.failures[0]
    assert evaluate_claims([best], table(fp=(95.0, 4.0)))[0].holds  # two defend: ASD's ACC is the best


def test_missing_or_nan_values_never_count_as_a_success(claims):
    unknown = table().assign(num_classes=float("nan"))  # ACC 96 could be chance on 2 classes: never a success
    assert not verdict(claims, "asd-defends", unknown)
    nan = table(asd_seeds={1: (96.0, 1.0), 2: (96.0, float("nan")), 3: (96.0, 1.0)})
    assert not verdict(claims, "asd-defends", nan)
    assert not verdict(claims, "asd-keeps-acc", table(asd_seeds={1: (float("nan"), 1.0), 2: (96.0, 1.0),
                                                                 3: (96.0, 1.0)}))


XFAIL = ('- {id: implant, text: "x", defense: none, metric: asr, op: ">=", value: 90, stat: worst, '
         'xfail: {profiles: [mini], attacks: [blend], reason: "Blend does not implant at mini scale"}}\n')


def test_a_declared_failure_passes_the_gate_only_where_declared_and_while_it_fails(tmp_path):
    path = tmp_path / "claims.yaml"
    path.write_text(XFAIL)
    [claim] = load_claims(path)
    fails_on_blend = long_table({("badnets", "none"): {s: (97.0, 99.0) for s in (1, 2, 3)},
                                 ("blend", "none"): {s: (97.0, 10.0) for s in (1, 2, 3)}})
    [r] = evaluate_claims([claim], fails_on_blend, profile="mini")
    assert r.holds and r.ok and r.expected == "xfail"
    [r] = evaluate_claims([claim], fails_on_blend, profile="paper")  # the declaration is the mini's only
    assert not r.ok
    both_fail = fails_on_blend.assign(asr=10.0)
    [r] = evaluate_claims([claim], both_fail, profile="mini")  # an undeclared cell still fails the gate
    assert not r.ok and any("badnets" in f for f in r.failures)
    [r] = evaluate_claims([claim], fails_on_blend.assign(asr=99.0), profile="mini")  # blend now implants
    assert not r.ok and r.expected == "xpass" and "remove it from xfail" in r.failures[0]


def test_claims_command_reads_the_tables_profile_and_is_strict(tmp_path, capsys):
    path = tmp_path / "claims.yaml"
    path.write_text(XFAIL)
    t = long_table({("badnets", "none"): {s: (97.0, 99.0) for s in (1, 2)},
                    ("blend", "none"): {s: (97.0, 10.0) for s in (1, 2)}})
    t.insert(0, "profile", "mini")
    t.to_csv(tmp_path / "t.csv", index=False)
    assert main(["claims", str(tmp_path / "t.csv"), "--claims", str(path)]) == 0
    assert "fails where declared" in capsys.readouterr().out
    assert main(["claims", str(tmp_path / "t.csv"), "--claims", str(path), "--profile", "paper"]) == 1
    t.assign(asr=99.0).to_csv(tmp_path / "t.csv", index=False)
    assert main(["claims", str(tmp_path / "t.csv"), "--claims", str(path)]) == 1
    assert "unexpected pass" in capsys.readouterr().out


def test_the_committed_mini_table_holds_every_claim_without_a_declared_failure(capsys):
    assert main(["claims", str(REPO / "results" / "mini" / "table.csv")]) == 0
    out = capsys.readouterr().out
    assert "4 of 4 claims hold; the gate passes." in out
    declared = [c["id"] for c in yaml.safe_load((REPO / "reference" / "claims.yaml").read_text()) if "xfail" in c]
    assert not declared and "fails where declared" not in out, "every attack implants; ASD's claims hold on every row"


def test_claims_command_exit_codes_and_a_users_own_file(tmp_path, capsys):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    table().to_csv(good, index=False)
    table(asd=(96.0, 50.0)).to_csv(bad, index=False)
    assert main(["claims", str(good)]) == 0
    assert "4 of 4 claims hold; the gate passes" in capsys.readouterr().out
    assert main(["claims", str(bad)]) == 1
    assert "- [ ] **asd-defends**" in capsys.readouterr().out
    mine = tmp_path / "mine.yaml"
    mine.write_text('- {id: fp-acc, text: "FP keeps ACC above 99", defense: fp, metric: acc, op: ">=", value: 99}\n')
    assert main(["claims", str(good), "--claims", str(mine)]) == 1


@pytest.mark.parametrize("line, message", [
    ('- {id: a, defense: asd, metric: f1, op: "<=", value: 5}', "metric must be acc or asr"),
    ('- {id: a, defense: asd, metric: asr, op: "=<", value: 5}', "op must be one of"),
    ('- {id: a, defense: asd, metric: asr, op: "<=", value: 5, ref: none}', "exactly one of 'value'"),
    ('- {id: a, defense: asd, metric: asr, op: "<=", valu: 5}', "unknown field"),
    ('- {id: a, defense: asd, metric: asr, op: "<=", value: 5, stat: max}', "stat must be one of"),
    ("- {id: a, defense: asd", "malformed YAML"),
    ('- {id: a, defense: asd, metric: asr, op: "<=", value: five}', "value must be a finite number"),
    ('- {id: a, defense: asd, metric: asr, op: "<=", value: 5, xfail: {profiles: [mini]}}', "xfail needs"),
    ('- {id: a, defense: asd, metric: asr, op: "<=", value: 5, xfail: {profiles: mini, reason: r}}', "xfail needs"),
    ('- {id: a, defense: asd, metric: acc, op: ">=", kind: undominated, value: 5}', "leave out value"),
    ('- {id: a, defense: asd, metric: acc, op: ">=", kind: best}', "kind must be one of"),
])
def test_a_bad_claims_file_is_a_one_line_error(tmp_path, line, message):
    path = tmp_path / "claims.yaml"
    path.write_text(line + "\n")
    with pytest.raises(UserError, match=message):
        load_claims(path)
