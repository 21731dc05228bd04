"""`asd-repro config`: one cell's gin configuration, composed from the files and bindings dvc.yaml gives it."""

from asd_repro.cli import main


def test_prints_each_stage_with_its_files_in_order_and_the_extra_binding_last(capsys, repo_cwd):
    assert main(["config", "mnist5k", "badnets", "asd", "--seed", "101", "--bind", "defenses.ASD.gamma = 0.3"]) == 0
    out = capsys.readouterr().out
    sections = out.split("######## ")[1:]
    assert [s.split(":")[0] for s in sections] == ["assets@mnist5k-badnets-101", "poison@mnist5k-badnets-101",
                                                  "train@mnist5k-badnets-asd-101"]
    train = sections[2]
    order = [train.index(f"# ---- {f}") for f in ("params/base.gin", "params/datasets/mnist5k.gin",
                                                  "params/defenses/asd.gin", "params/profiles/mini/common.gin",
                                                  "params/profiles/mini/asd.gin")]
    assert order == sorted(order)
    assert "SEED = 101" in train
    assert train.rstrip().endswith("defenses.ASD.gamma = 0.3")
    assert "defenses.ASD.gamma = 0.5" in train  # the default it overrides, from params/defenses/asd.gin


def test_a_repair_defense_gets_the_repair_stage_and_another_profile_its_files(capsys, repo_cwd):
    assert main(["config", "mnist5k", "blend", "nad", "--profile", "paper", "--values"]) == 0
    out = capsys.readouterr().out
    assert "######## repair@mnist5k-blend-nad-100" in out
    assert "# ---- params/profiles/paper/nad.gin" in out and "profiles/mini" not in out
    assert "#### repair@mnist5k-blend-nad-100: every value gin holds" in out


def test_an_unknown_defense_is_one_line(capsys, repo_cwd):
    assert main(["config", "mnist5k", "badnets", "strip"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "defense 'strip' is not in 'defenses'" in err[0]
