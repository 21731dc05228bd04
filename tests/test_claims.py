"""The paper's claims as data: each claim of reference/claims.yaml passes and fails on hand-made tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from asd_repro.cli import main
from asd_repro.errors import UserError
from asd_repro.report.claims import evaluate_claims, load_claims
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
    assert set(claims) == {"attacks-implant", "asd-defends", "asd-keeps-acc", "asd-best-acc"}
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


def test_asd_best_acc_among_the_defenses_that_defend(claims):
    assert verdict(claims, "asd-best-acc", table(fp=(99.0, 40.0)))  # FP has more ACC but does not defend
    assert not verdict(claims, "asd-best-acc", table(fp=(99.0, 4.0)))  # now FP defends and beats ASD's ACC
    assert not verdict(claims, "asd-best-acc", table(asd=(96.0, 30.0)))  # ASD itself does not defend


def test_claims_command_exit_codes_and_a_users_own_file(tmp_path, capsys):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    table().to_csv(good, index=False)
    table(asd=(96.0, 50.0)).to_csv(bad, index=False)
    assert main(["claims", str(good)]) == 0
    assert "4 of 4 claims hold" in capsys.readouterr().out
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
])
def test_a_bad_claims_file_is_a_one_line_error(tmp_path, line, message):
    path = tmp_path / "claims.yaml"
    path.write_text(line + "\n")
    with pytest.raises(UserError, match=message):
        load_claims(path)
