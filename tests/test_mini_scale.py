"""The mini profile's post-training defenses follow the one scaling rule of DEVIATIONS.md ("Mini scaling rule"),
derived from the paper profile's values: the reference's passes over the defender's clean data, the batch scaled
with the data (floor 16), and the learning rate by the square-root rule for that batch."""

from __future__ import annotations

import math

import pytest

from conftest import defense_from

MINI_TRAIN, PAPER_TRAIN = 4000, 50000  # mnist5k's training split (400 images a class) and CIFAR-10's
MINI_CLEAN = round(0.05 * MINI_TRAIN)
PAPER_CLEAN = round(0.05 * PAPER_TRAIN)
BATCH_FLOOR = 16


def _pair(name: str):
    paper = defense_from(name, "base.gin", "datasets/cifar10.gin", f"defenses/{name}.gin", "profiles/paper/common.gin",
                         f"profiles/paper/{name}.gin")
    mini = defense_from(name, "base.gin", "datasets/mnist5k.gin", f"defenses/{name}.gin", "profiles/mini/common.gin",
                        f"profiles/mini/{name}.gin")
    return paper, mini


def _ruled_batch(paper_batch: int) -> int:
    return max(BATCH_FLOOR, round(paper_batch * MINI_CLEAN / PAPER_CLEAN))


def _ruled_lr(paper_lr: float, paper_batch: int, mini_batch: int) -> float:
    lr = paper_lr * math.sqrt(mini_batch / paper_batch)
    return float(f"{lr:.2g}")  # gin files write two significant figures


def test_rule_on_hand_computed_values():
    assert _ruled_batch(256) == 20 and _ruled_batch(64) == 16 and _ruled_batch(2048) == 164
    assert _ruled_lr(0.01, 256, 20) == 0.0028 and _ruled_lr(0.1, 64, 16) == 0.05


@pytest.mark.parametrize("name", ["fp", "nad"])
def test_post_training_defenses_follow_the_scaling_rule(name):
    paper, mini = _pair(name)
    if name == "fp":
        assert mini.finetune_epochs == paper.finetune_epochs == 100
    else:
        assert (mini.teacher_epochs, mini.epochs) == (paper.teacher_epochs, paper.epochs) == (10, 20)
        assert mini.optimizer.drop_epochs == paper.optimizer.drop_epochs and mini.optimizer.gamma == paper.optimizer.gamma
    assert mini.batch_size == _ruled_batch(paper.batch_size)
    assert mini.optimizer.lr == pytest.approx(_ruled_lr(paper.optimizer.lr, paper.batch_size, mini.batch_size))
    assert mini.optimizer.schedule == paper.optimizer.schedule
    assert (mini.optimizer.momentum, mini.optimizer.weight_decay, mini.optimizer.nesterov) == (
        paper.optimizer.momentum, paper.optimizer.weight_decay, paper.optimizer.nesterov)


def test_asd_stage_one_ends_with_the_references_clean_pool_per_class():
    """Stage 1's class-aware pool at its last epoch (seeds + n x floor(epoch / t)) is the reference's: 10 + 110."""
    from asd_repro.defenses.asd import stage1_k

    paper, mini = _pair("asd")

    def last_stage_one_pool(asd):
        return asd.seeds_per_class + stage1_k(asd.stage2_epoch - 1, asd.n, asd.t)

    assert last_stage_one_pool(paper) == 10 + 110
    assert last_stage_one_pool(mini) == last_stage_one_pool(paper)
    assert (mini.stage2_epoch / mini.epochs, mini.stage3_epoch / mini.epochs) == (0.5, 0.75)  # the 2:1:1 split


def test_asd_epoch_keeps_the_references_passes_over_the_training_set():
    """An ASD epoch's MixMatch iterations x labelled batch, over the training set, equal the reference's (1.31), and
    the mini keeps 10% of the reference's epochs, the share No Defense keeps."""
    paper, mini = _pair("asd")
    paper_none, mini_none = _pair("none")

    def passes(asd, n_train):
        return asd.mixmatch.settings["iterations"] * asd.mixmatch.settings["batch_size"] / n_train

    assert passes(paper, PAPER_TRAIN) == pytest.approx(1.31, abs=0.01)
    assert passes(mini, MINI_TRAIN) == pytest.approx(passes(paper, PAPER_TRAIN), rel=0.01)
    assert mini.mixmatch.settings["batch_size"] == paper.mixmatch.settings["batch_size"] == 64
    assert mini.epochs / paper.epochs == mini_none.epochs / paper_none.epochs == pytest.approx(0.1)
