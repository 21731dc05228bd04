"""A killed training stage, re-run, resumes from its last finished epoch and ends identically."""

import json

import torch

from asd_repro.defenses import Interrupted
from asd_repro import stages

from conftest import badnets_poisoned, configure

GIN = ["params/base.gin", "params/attacks/badnets.gin", "params/defenses/none.gin", "params/profiles/smoke/common.gin",
       "params/profiles/smoke/none.gin"]


def _poisoned(tmp_path):
    return badnets_poisoned(tmp_path, GIN)


def _train(clean, poisoned, out, ckpt, stop=None, bindings=()):
    asked = configure(GIN, ["SEED = 3", "defenses.NoDefense.epochs = 3", "defenses.NoDefense.batch_size = 16",
                            "none/engine.Optimizer.schedule = 'cosine'", "stages.train.device = 'cpu'", *bindings])
    return stages.train("none", clean, poisoned, out, out.parent / f"{out.name}.json", ckpt, asked_config=asked,
                        stop_after_epoch=stop)


def test_interrupted_run_resumes_to_identical_weights(tmp_path):
    clean, poisoned = _poisoned(tmp_path)
    _train(clean, poisoned, tmp_path / "straight", tmp_path / "ckpt_a")
    try:
        _train(clean, poisoned, tmp_path / "resumed", tmp_path / "ckpt_b", stop=2)
        raise AssertionError("the test hook should have stopped the run")
    except Interrupted:
        pass
    assert not (tmp_path / "resumed").exists(), "an interrupted stage leaves no output"
    assert any((tmp_path / "ckpt_b").rglob("last.pt")), "a checkpoint was written every epoch"
    _train(clean, poisoned, tmp_path / "resumed", tmp_path / "ckpt_b")
    a = torch.load(tmp_path / "straight" / "model.pt")["state_dict"]
    b = torch.load(tmp_path / "resumed" / "model.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def curves(name):  # everything but wall-clock time
        return [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads((tmp_path / name).read_text())]

    assert curves("straight.json") == curves("resumed.json") and len(curves("resumed.json")) == 3
    assert not any((tmp_path / "ckpt_b").rglob("last.pt")), "checkpoints are removed once the cell is done"


def test_checkpoint_of_another_config_is_not_resumed(tmp_path):
    clean, poisoned = _poisoned(tmp_path)
    try:
        _train(clean, poisoned, tmp_path / "a", tmp_path / "ckpt", stop=1)
    except Interrupted:
        pass
    asked = configure(GIN, ["SEED = 3", "defenses.NoDefense.epochs = 2", "defenses.NoDefense.batch_size = 16",
                            "stages.train.device = 'cpu'"])
    stages.train("none", clean, poisoned, tmp_path / "b", tmp_path / "b.json", tmp_path / "ckpt", asked_config=asked)
    assert [r["epoch"] for r in json.loads((tmp_path / "b.json").read_text())] == [1, 2]


def test_eval_every_thins_the_curves_and_changes_no_weight(tmp_path):
    clean, poisoned = _poisoned(tmp_path)
    every = _train(clean, poisoned, tmp_path / "every", None)
    sparse = _train(clean, poisoned, tmp_path / "sparse", None, bindings=["stages.train.eval_every = 2"])
    a = torch.load(tmp_path / "every" / "model.pt")["state_dict"]
    b = torch.load(tmp_path / "sparse" / "model.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a), "evaluating less often must not change the training"
    assert every["final_epoch"] == sparse["final_epoch"]
    dense_curve = json.loads((tmp_path / "every.json").read_text())
    sparse_curve = json.loads((tmp_path / "sparse.json").read_text())
    assert [r["acc"] is None for r in sparse_curve] == [True, False, False]  # epoch 2, and the last (3)
    assert [r["asr"] for r in sparse_curve][1:] == [r["asr"] for r in dense_curve][1:]
    assert all(r["acc"] is not None for r in dense_curve)


def test_eval_every_below_one_is_a_clear_error(tmp_path):
    import pytest

    from asd_repro.core.errors import UserError

    clean, poisoned = _poisoned(tmp_path)
    with pytest.raises(UserError, match="stages.train.eval_every = 0 is invalid: expected a positive number of epochs"):
        _train(clean, poisoned, tmp_path / "x", None, bindings=["stages.train.eval_every = 0"])
    assert not (tmp_path / "x").exists()


def test_a_truncated_checkpoint_restarts_the_cell_and_ends_identically(tmp_path, capsys):
    clean, poisoned = _poisoned(tmp_path)
    _train(clean, poisoned, tmp_path / "straight", tmp_path / "ckpt_a")
    try:
        _train(clean, poisoned, tmp_path / "resumed", tmp_path / "ckpt_b", stop=2)
    except Interrupted:
        pass
    (last,) = (tmp_path / "ckpt_b").rglob("last.pt")
    last.write_bytes(last.read_bytes()[:100])  # cut off, as a disk or a kill outside our atomic rename could leave it
    capsys.readouterr()
    _train(clean, poisoned, tmp_path / "resumed", tmp_path / "ckpt_b")
    assert "resuming" not in capsys.readouterr().out, "a cut-off checkpoint is never resumed: the cell starts over"
    assert [r["epoch"] for r in json.loads((tmp_path / "resumed.json").read_text())] == [1, 2, 3]
    a = torch.load(tmp_path / "straight" / "model.pt")["state_dict"]
    b = torch.load(tmp_path / "resumed" / "model.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
