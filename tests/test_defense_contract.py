"""What every defense plug-in promises the pipeline, checked on each of them through ``stages.train`` (smoke profile):
it declared its family at registration, a run killed after its first epoch and re-run ends with the same weights and
curves as an uninterrupted one, its curves hold the same fields in every record (``dvc plots``), its epochs count
across phases, and its checkpoints are gone once the cell is done."""

from __future__ import annotations

import json

import pytest

from asd_repro import stages
from asd_repro.defenses import DEFENSES, Interrupted
from asd_repro.core.registry import module_names

from conftest import configure
from posttraining import defense_gin, poisoned_with_upstream

BINDINGS = {  # smaller pools than the smoke profile's, for the tests' 120-image set
    "none": ["defenses.NoDefense.epochs = 2", "defenses.NoDefense.batch_size = 16"],
    "abl": ["defenses.ABL.batch_size = 16"],
    "asd": ["asd/engine.MixMatch.batch_size = 8", "defenses.ASD.seeds_per_class = 2", "defenses.ASD.n = 2"],
    "fp": ["defenses.FP.finetune_epochs = 2"],
    "nad": [],
    "dbd": ["defenses.DBD.epochs = 2", "dbd/engine.MixMatch.rampup = 2", "dbd/engine.MixMatch.batch_size = 8",
            "defenses.simclr_pretrain.batch_size = 32"],
}


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """A BadNets-poisoned toy set and its No-defense model (the upstream of the repair defenses)."""
    return poisoned_with_upstream(tmp_path_factory.mktemp("cell"))


def test_every_defense_plug_in_is_covered_here():
    assert sorted(BINDINGS) == DEFENSES.names() == module_names("asd_repro.defenses")


@pytest.mark.parametrize("name", sorted(BINDINGS))
def test_a_killed_cell_resumes_to_the_same_weights_and_curves(name, cell, tmp_path):
    clean, poisoned, none_model = cell
    family = DEFENSES.meta(name)["family"]
    files = defense_gin(name)
    bindings = ["SEED = 3", "stages.train.device = 'cpu'", "stages.pretrain.device = 'cpu'", *BINDINGS[name]]
    upstream = {"scratch": None, "repair": none_model}.get(family)
    if family == "selfsup":
        pre_files = [*files[:2], f"params/defenses/{name}_pretrain.gin", files[3], f"params/profiles/smoke/{name}_pretrain.gin"]
        asked = configure(pre_files, bindings)
        stages.pretrain(name, clean, poisoned, tmp_path / "pretrained", None, asked_config=asked)
        upstream = tmp_path / "pretrained"

    def train(out: str, stop: int | None = None) -> dict:
        asked = configure(files, bindings)
        return stages.train(name, clean, poisoned, tmp_path / out, tmp_path / f"{out}.json", tmp_path / f"ckpt_{out}",
                            asked_config=asked, stop_after_epoch=stop, upstream=upstream)

    train("straight")
    with pytest.raises(Interrupted):
        train("resumed", stop=1)
    assert not (tmp_path / "resumed").exists(), "an interrupted stage leaves no output"
    assert any((tmp_path / "ckpt_resumed").rglob("*.pt")), "the finished epoch was checkpointed"
    train("resumed")
    assert (tmp_path / "straight" / "model.pt").read_bytes() == (tmp_path / "resumed" / "model.pt").read_bytes()

    def curves(out: str) -> list[dict]:  # everything but wall-clock times
        return [{k: v for k, v in r.items() if not k.endswith("seconds")}
                for r in json.loads((tmp_path / f"{out}.json").read_text())]

    straight = curves("straight")
    assert straight == curves("resumed")
    assert len({tuple(r) for r in straight}) == 1, "every record has the same fields"
    assert {"epoch", "phase", "lr", "acc", "asr", "clean_pool", "poisoned_in_clean_pool"} <= set(straight[0])
    assert [r["epoch"] for r in straight] == list(range(1, len(straight) + 1)) and len(straight) >= 2
    assert straight[-1]["acc"] is not None, "the last epoch is always evaluated"
    assert not any((tmp_path / "ckpt_resumed").rglob("*.pt")), "checkpoints are removed once the cell is done"
