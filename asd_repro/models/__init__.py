"""Backbones from timm: ResNet-18 with the CIFAR stem at small sizes, the standard stem at 224.

timm's ResNet has no stride-1 stem option, so for small inputs the stem is replaced by a 3x3
stride-1 convolution and the max-pool by Identity (the ASD reference's CIFAR ResNet-18). The
'deep' stem type is only used to make timm size the stem to ``channels[0]``; its convolutions are
then replaced. The head stays timm's ``fc``, so layer names are ``layer1..layer4`` and ``fc``.

Initialisation (``init``): 'official' is the ASD authors' (their CIFAR ResNet-18: every convolution, the stem's
included, kaiming-normal fan_out; batch-norm scales 1). 'timm' is timm's own: it also zero-initialises the last
batch-norm scale of every residual block, and the replaced stem keeps PyTorch's default init (DEVIATIONS T7).
"""

from __future__ import annotations

import torch.nn as nn

from asd_repro.core.config import configurable
from asd_repro.core.errors import require

ARCHS = {
    # name: (blocks per stage, widths per stage)
    "resnet18": ((2, 2, 2, 2), (64, 128, 256, 512)),
    "slim_resnet": ((1, 1, 1, 1), (16, 32, 64, 128)),
}


@configurable(module="models")
def create_model(num_classes: int, in_chans: int, image_size: int, arch: str = "resnet18",
                 stem: str = "auto", init: str = "official") -> nn.Module:
    """Build a ResNet classifier.

    Args:
        num_classes: outputs of the linear head.
        in_chans: input channels (1 for grey datasets).
        image_size: input side; selects the stem when ``stem='auto'``.
        arch: one of ``ARCHS``.
        stem: 'cifar' (3x3 stride 1, no max-pool), 'imagenet' (7x7 stride 2 + max-pool) or 'auto'
            (cifar up to 64 px).
        init: 'official' (the authors' initialisation) or 'timm' (timm's; the mini and smoke profiles').
    """
    import timm

    require("models.create_model.arch", arch, arch in ARCHS, f"one of {', '.join(ARCHS)}")
    if stem == "auto":
        stem = "cifar" if image_size <= 64 else "imagenet"
    require("models.create_model.stem", stem, stem in ("cifar", "imagenet"), "'cifar', 'imagenet' or 'auto'")
    require("models.create_model.init", init, init in ("official", "timm"), "'official' or 'timm'")
    official = {"zero_init_last": False} if init == "official" else {}
    layers, channels = ARCHS[arch]
    recipe = dict(num_classes=num_classes, in_chans=in_chans, image_size=image_size, arch=arch, stem=stem)
    if stem == "imagenet" and arch == "resnet18":
        model = timm.create_model("resnet18", pretrained=False, num_classes=num_classes, in_chans=in_chans, **official)
        model.create_kwargs = recipe
        return model
    kwargs = dict(layers=layers, channels=channels, stem_type="deep", stem_width=channels[0] // 2)
    model = timm.create_model("resnet18", pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs,
                              **official)
    if stem == "cifar":
        model.conv1 = nn.Conv2d(in_chans, channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(in_chans, channels[0], kernel_size=7, stride=2, padding=3, bias=False)
    if official:
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(in_chans, image_size, image_size))
    model.create_kwargs = recipe  # saved with the weights, so a loaded model never depends on gin bindings
    return model
