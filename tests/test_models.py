"""The backbone's initialisation: the authors' by default (the paper profile), timm's where a profile binds it."""

import pytest
import torch

from asd_repro.core.errors import UserError
from asd_repro.models import create_model


def _last_bn_scales(model):
    return [block.bn2.weight for stage in (model.layer1, model.layer2, model.layer3, model.layer4) for block in stage]


def test_official_init_keeps_every_batchnorm_scale_at_one_and_the_stem_kaiming_fan_out():
    torch.manual_seed(0)
    model = create_model(num_classes=10, in_chans=3, image_size=32, arch="resnet18")  # the default: 'official'
    assert all(torch.equal(w, torch.ones_like(w)) for w in _last_bn_scales(model))
    w = model.conv1.weight  # 64 x 3 x 3 x 3: kaiming-normal fan_out = std sqrt(2 / (64 * 9)) = 0.059
    assert w.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.1)


def test_timm_init_zeroes_the_last_batchnorm_scale_of_every_block_and_keeps_the_default_stem():
    torch.manual_seed(0)
    model = create_model(num_classes=10, in_chans=3, image_size=32, arch="resnet18", init="timm")
    assert all(torch.equal(w, torch.zeros_like(w)) for w in _last_bn_scales(model))
    w = model.conv1.weight  # PyTorch's default: kaiming-uniform a=sqrt(5), std 1 / sqrt(3 * fan_in) = 0.111
    assert w.std().item() == pytest.approx(1 / (3 * 27) ** 0.5, rel=0.1)


def test_an_unknown_init_is_one_line_naming_the_binding():
    with pytest.raises(UserError, match=r"models.create_model.init = 'kaiming' is invalid: expected 'official' or"):
        create_model(num_classes=10, in_chans=3, image_size=32, init="kaiming")
