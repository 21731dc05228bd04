"""engine.evaluation: ACC and ASR are exact, sample-weighted, the ASR set excludes the target class, and an empty set
has no value."""

import numpy as np
import pytest
import torch

from asd_repro.attacks.badnets import BadNets
from asd_repro.engine.augment import Normalize
from asd_repro.engine.evaluation import acc_asr, check_asr_labels

NORM = Normalize((0.0,), (1.0,), torch.device("cpu"))


def nchw(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


class Oracle(torch.nn.Module):
    """Predicts the target when pixel (0,0) is bright, otherwise the label encoded in pixel (1,1)."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def forward(self, x):
        raw = x * 255.0  # Normalize((0,), (1,)) keeps 0..255 / 255
        trig = raw[:, 0, 0, 0] > 250
        label = raw[:, 0, 1, 1].round().long()
        out = torch.nn.functional.one_hot(label, 10).float()
        out[trig] = torch.nn.functional.one_hot(torch.tensor(self.target), 10).float()
        return out


def test_asr_excludes_target_class_and_acc_is_sample_weighted():
    y = np.array([0, 1, 2, 3, 3, 3, 4])  # 3 target-class images must not count towards ASR
    x = np.zeros((7, 4, 4, 1), np.uint8)
    x[:, 1, 1, 0] = y
    x[6, 1, 1, 0] = 5  # one clean mistake
    atk = BadNets(target=3, ratio=0.1, patch_size=1, offset=0)
    atk.fit(x, y, np.random.default_rng(0))
    atk.patch = np.array([[[255]]], np.uint8)
    bx, by, idx = atk.poison_test(x, y)
    bx[0, 0, 0, 0] = 0  # one triggered image that fails to trigger
    check_asr_labels(by, 3)
    m = acc_asr(Oracle(3), nchw(x), torch.from_numpy(y), nchw(bx), torch.from_numpy(by), NORM)
    assert m["n_asr"] == 4 and m["n_clean"] == 7
    assert m["asr"] == pytest.approx(75.0)
    assert m["acc"] == pytest.approx(100 * 6 / 7)


def test_asr_set_must_be_labelled_target():
    with pytest.raises(ValueError, match="target"):
        check_asr_labels(np.array([3, 1]), 3)


def test_an_empty_set_has_no_value_not_zero():
    x = torch.zeros((2, 1, 4, 4), dtype=torch.uint8)
    m = acc_asr(Oracle(3), x, torch.zeros(2, dtype=torch.long), x[:0], torch.zeros(0, dtype=torch.long), NORM)
    assert m["acc"] == 100.0 and m["asr"] is None and m["n_asr"] == 0
