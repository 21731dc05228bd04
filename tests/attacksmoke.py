"""Smoke-scale attacks for the per-attack tests: tiny random images, a few training steps, fitted once a session."""

from __future__ import annotations

import contextlib
import functools

import numpy as np

from asd_repro.attacks.badnets import BadNets
from asd_repro.attacks.blend import Blend
from asd_repro.attacks.clb import CLB
from asd_repro.attacks.iab import IAB
from asd_repro.attacks.refool import Refool
from asd_repro.attacks.wanet import WaNet

TARGET = 3
SMOKE = {  # smoke-scale attack-side training for 60 tiny images (IAB needs a few steps to make masks input-specific)
    "badnets": lambda **kw: BadNets(target=TARGET, ratio=0.2, **kw),
    "blend": lambda **kw: Blend(target=TARGET, ratio=0.2, **kw),
    "wanet": lambda **kw: WaNet(target=TARGET, ratio=0.2, **kw),
    "iab": lambda **kw: IAB(target=TARGET, ratio=0.2, mask_epochs=5, epochs=2, batch_size=16,
                            classifier="slim_resnet", device="cpu", **kw),
    "refool": lambda **kw: Refool(target=TARGET, ratio=0.2, n_reflections=8, **kw),
    "clb": lambda **kw: CLB(target=TARGET, ratio=0.08, epochs=1, batch_size=32, adv_steps=1, steps=3,
                            device="cpu", **kw),
}


def images(n, h=32, w=32, c=3, seed=0):
    """n random uint8 images of h x w x c."""
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def data(n=60, h=12, w=12, c=1, seed=0):
    """n random uint8 images of h x w x c with labels 0..9 in turn."""
    return images(n, h, w, c, seed), np.arange(n) % 10


def fitted(name, x, y, seed=0, **kw):
    atk = SMOKE[name](**kw)
    atk.fit(x, y, np.random.default_rng(seed))
    return atk


def restored(name, atk, **kw):
    """A fresh attack of the same kind loaded from atk.state(), as the poison stage loads the assets."""
    fresh = SMOKE[name](**kw)
    fresh.load_state({k: np.array(v) for k, v in atk.state().items()})
    return fresh


@contextlib.contextmanager
def one_torch_thread():
    """Tiny convolutions run fastest on one thread; two threads on a busy shared CPU wait on each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@functools.cache
def fitted_once(name, c):
    """The attack ``name`` fitted once a session on the grey (c = 1) or colour (c = 3) tiny set: (atk, x, y)."""
    x, y = data(c=c)
    with one_torch_thread():
        return fitted(name, x, y), x, y
