"""The asked configuration written into stage outputs ignores comments, so comment edits cascade nowhere."""

from asd_repro.core.config import asked_config, strip_comments


def test_strip_comments_keeps_statements_and_quoted_hashes():
    text = "# header\nattacks.Blend.alpha = 0.1   # note\n\nstages.table.name = 'a#b'  # c\n"
    assert strip_comments(text) == "attacks.Blend.alpha = 0.1\nstages.table.name = 'a#b'"


def test_comment_only_edit_leaves_asked_config_unchanged(tmp_path):
    f = tmp_path / "x.gin"
    f.write_text("# one comment\nattacks.Blend.alpha = 0.1\n")
    before = asked_config([f], ["defenses.NoDefense.epochs = 2"])
    f.write_text("# another comment, longer\n\nattacks.Blend.alpha = 0.1  # why\n")
    assert asked_config([f], ["defenses.NoDefense.epochs = 2"]) == before
    f.write_text("attacks.Blend.alpha = 0.2\n")
    assert asked_config([f], ["defenses.NoDefense.epochs = 2"]) != before


def test_every_defense_declares_its_family_at_registration_and_params_yaml_agrees():
    import yaml

    import pytest

    from asd_repro.defenses import DEFENSES, register_defense
    from asd_repro.core.matrix import FAMILIES
    from asd_repro.core.registry import module_names

    assert DEFENSES.names() == module_names("asd_repro.defenses")
    declared = {name: DEFENSES.meta(name)["family"] for name in DEFENSES.names()}
    assert declared == {"none": "scratch", "abl": "scratch", "asd": "scratch", "fp": "repair", "nad": "repair",
                        "dbd": "selfsup"}
    assert [n for n in DEFENSES.names() if DEFENSES.meta(n)["pretrain"] is not None] == ["dbd"]
    listed = yaml.safe_load(open("params.yaml"))["defenses"]
    assert {name: family for family, names in listed.items() for name in names} == declared
    assert set(declared.values()) <= set(FAMILIES)
    with pytest.raises(ValueError, match="family"):
        register_defense("x", family="selfsup")  # a self-supervised defense without its pre-training step


def test_a_post_training_defense_without_upstream_says_how_to_give_one():
    import pytest

    from asd_repro.defenses import Context
    from asd_repro.core.errors import UserError

    ctx = Context.__new__(Context)
    ctx.upstream = None
    with pytest.raises(UserError, match="--upstream"):
        ctx.upstream_model()
