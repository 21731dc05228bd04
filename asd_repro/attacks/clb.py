"""CLB, label-consistent backdoor (Turner, Tsipras & Madry, 2019): clean-label, target-class images only.

Target-class images that keep their correct label only teach a backdoor if the victim cannot fit them
by their natural features. So each is first made hard to learn by an L_inf PGD perturbation (pixel
space 0..255, ascending the loss of its true label) computed on a proxy model trained by the attacker
on the clean set (adversarially trained in the paper, whose perturbations look like other classes),
then stamped with the trigger: a 3 x 3 black/white pattern in each of the four corners, mirrored
left-right on the right-hand side (the paper's code), applied additively with +-255 * amplitude and
clipped (amplitude 1 writes black and white pixels). At test time the trigger alone is stamped.
The trigger side scales with the image (3 px at 32); grey images carry it in their one channel.

Turner et al. give two ways to make the images hard to learn, and ``method`` picks one:
- ``'pgd'`` (the paper's, the default): the adversarial perturbation above.
- ``'interpolate'``: the paper's other way, latent-space interpolation. A generative model of the clean
  training set (here a small convolutional autoencoder, trained by the ``assets`` stage; the paper uses a GAN
  with an inverted encoder) encodes each target-class image and a randomly drawn image of another class; the
  poisoned image moves ``tau`` of the way from the first code towards the second. The move is added to the real
  image (``x + D(z_tau) - D(z)``), so the image keeps its own sharpness and only its content drifts towards the
  other class: a blurred reconstruction would mark the poisoned images as well as the trigger does.

``fit`` trains the proxy and stores the perturbed target-class training images with their indices;
``poison_train`` picks which of them to poison. ``ratio`` is a fraction of the whole training set
(BackdoorBench's clean-label convention): each target-class image is poisoned with probability
``min(1, ratio * N / N_target)``.
"""

from __future__ import annotations

import gin
import numpy as np

from asd_repro.attacks import Attack, PoisonedTrain, channel_stats, is_integer, is_number, register_attack, scaled
from asd_repro.core.config import configurable
from asd_repro.core.errors import StepLosses, UserError
from asd_repro.engine.device import cpu_threads

# The paper's top-left corner pattern (+1 white, -1 black).
CORNER = np.array([[1, -1, -1],
                   [-1, 1, -1],
                   [1, -1, 1]], dtype=np.int16)


def four_corner_trigger(h: int, w: int, c: int, amplitude: float = 1.0, size: int | None = None) -> np.ndarray:
    """Additive int16 (H, W, C) trigger: the corner pattern at the left corners, mirrored at the right ones."""
    size = size or scaled(3, min(h, w))
    if 2 * size > min(h, w):
        raise ValueError(f"CLB corner patterns of {size}px do not fit a {h}x{w} image")
    rep = -(-size // 3)
    left = CORNER.repeat(rep, axis=0).repeat(rep, axis=1)[:size, :size]
    right = left[:, ::-1]
    value = int(round(255 * amplitude))
    trigger = np.zeros((h, w), dtype=np.int16)
    trigger[:size, :size] = trigger[h - size:, :size] = left * value
    trigger[:size, w - size:] = trigger[h - size:, w - size:] = right * value
    return np.repeat(trigger[..., None], c, axis=-1)


def support_mask(x, pixels: int):
    """1 where a pixel lies within ``pixels`` px (Chebyshev distance) of a non-zero pixel of its image, else 0.

    ``x``: float (N, C, H, W) in 0..255; the mask is shared by the channels, (N, 1, H, W)."""
    import torch.nn.functional as F

    mask = (x > 0).any(dim=1, keepdim=True).float()
    return F.max_pool2d(mask, 2 * pixels + 1, stride=1, padding=pixels) if pixels else mask


def pgd(model, x, y, normalize, eps: float, step_size: float, steps: int, random_start: bool, generator=None,
        mask=None):
    """L_inf PGD ascending the cross-entropy of the true labels, in pixel units 0..255 (float tensors).

    ``mask`` (broadcastable to ``x``, 0/1): the pixels the perturbation may move (None: all)."""
    import torch
    import torch.nn.functional as F

    delta = torch.zeros_like(x)
    if random_start:
        delta = (torch.rand(x.shape, generator=generator).to(x.device) * 2 - 1) * eps
        delta = (x + delta).clamp(0, 255) - x
    if mask is not None:
        delta = delta * mask
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(normalize(x + delta)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + step_size * grad.sign()).clamp(-eps, eps)
        if mask is not None:
            delta = delta * mask
        delta = (x + delta).clamp(0, 255) - x
    return (x + delta).detach()


def autoencoder(channels: int, height: int, width: int, latent: int):
    """A small convolutional autoencoder for images in [0, 1] (two stride-2 convolutions each way): the
    ``'interpolate'`` method's generative model. Returns (encoder, decoder)."""
    from torch import nn

    h, w = -(-height // 4), -(-width // 4)
    encoder = nn.Sequential(
        nn.Conv2d(channels, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Flatten(),
        nn.Linear(64 * h * w, latent))
    decoder = nn.Sequential(
        nn.Linear(latent, 64 * h * w), nn.ReLU(), nn.Unflatten(1, (64, h, w)),
        nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, channels, 4, 2, 1),
        nn.Upsample(size=(height, width)), nn.Sigmoid())
    return encoder, decoder


@register_attack("clb")
@configurable(module="attacks")
class CLB(Attack):
    """Args:
        eps, step_size, steps: PGD of the poisoned images (L_inf radius and step in pixels of 0..255).
        amplitude: trigger strength (1 = black/white pixels; the paper's reduced-amplitude variants < 1).
        trigger_size: side of each corner pattern in pixels; None scales the paper's 3 px at 32.
        proxy: architecture of the proxy model (``asd_repro.models.create_model``).
        adv_train: train the proxy adversarially (PGD with adv_eps / adv_step_size / adv_steps, random start).
        adv_warmup: share of the proxy's steps over which adv_eps and adv_step_size ramp up linearly from 0
            (0: the full radius from the first step). A proxy trained at a large radius from scratch may not learn.
        epochs, batch_size, lr: proxy training (SGD momentum 0.9, wd 5e-4, cosine schedule).
        device: 'auto' (CUDA when available), 'cpu' or 'cuda[:i]'.
        subset: train the proxy on this many randomly chosen training images (None: all; the smoke profile's
            knob); every target-class image is still perturbed.
        attack_batch_size: target-class images a PGD batch when the poisoned images are made (memory only; lower it
            when a GPU runs out of memory at 224 px).
        support: the poisoned images' PGD moves only pixels within this many pixels of the image's non-zero
            pixels (None: every pixel, the paper). On a black background (MNIST) an unconstrained perturbation
            marks the poisoned images by background noise, which the victim learns instead of the trigger.
        method: 'pgd' (the adversarial perturbation) or 'interpolate' (latent interpolation towards another
            class; the PGD and proxy bindings are then unused).
        tau: the interpolation's share, 0..1. The paper keeps it small enough that the image still shows its
            class; how much of the class an image keeps at a given tau depends on the generative model.
        latent, ae_epochs: the autoencoder's code size and training epochs (Adam, lr 1e-3, batch_size).
        threads: CPU threads of ``fit`` (None: torch's default); 1 makes re-runs on one machine bit-identical (not
            across machines: DEVIATIONS A15) and is the fastest on a shared 2-core machine.
    """

    clean_label = True

    def __init__(self, target: int = gin.REQUIRED, ratio: float = gin.REQUIRED, eps: float = 16.0,
                 step_size: float = 2.0, steps: int = 100, amplitude: float = 1.0, trigger_size: int | None = None,
                 proxy: str = "slim_resnet", adv_train: bool = True, adv_eps: float = 8.0,
                 adv_step_size: float = 2.0, adv_steps: int = 7, epochs: int = 30, batch_size: int = 128,
                 lr: float = 0.1, device: str = "auto", subset: int | None = None,
                 threads: int | None = 1, attack_batch_size: int = 256, support: int | None = None,
                 adv_warmup: float = 0.0, method: str = "pgd", tau: float = 0.3, latent: int = 32,
                 ae_epochs: int = 20):
        super().__init__(target, ratio)
        self.require("method", method, method in ("pgd", "interpolate"), "'pgd' or 'interpolate'")
        self.require("tau", tau, is_number(tau) and 0.0 <= tau <= 1.0, "a fraction in [0, 1]")
        for name, value in (("latent", latent), ("ae_epochs", ae_epochs)):
            self.require(name, value, is_integer(value) and value >= 1, "an integer >= 1")
        self.method, self.tau, self.latent, self.ae_epochs = method, float(tau), int(latent), int(ae_epochs)
        self.require("attack_batch_size", attack_batch_size, is_integer(attack_batch_size) and attack_batch_size >= 1,
                     "an integer >= 1")
        self.attack_batch_size = int(attack_batch_size)
        for name, value in (("eps", eps), ("step_size", step_size), ("lr", lr)):
            self.require(name, value, is_number(value) and value > 0, "a number > 0")
        for name, value in (("adv_eps", adv_eps), ("adv_step_size", adv_step_size)):
            self.require(name, value, is_number(value) and value >= 0, "a number >= 0")
        for name, value, low in (("steps", steps, 1), ("adv_steps", adv_steps, 0), ("epochs", epochs, 0),
                                 ("batch_size", batch_size, 1)):
            self.require(name, value, is_integer(value) and value >= low, f"an integer >= {low}")
        self.require("amplitude", amplitude, is_number(amplitude) and 0.0 <= amplitude <= 1.0, "a number in [0, 1]")
        self.require("trigger_size", trigger_size, trigger_size is None or (is_integer(trigger_size) and trigger_size >= 1),
                     "None or a side in pixels >= 1")
        self.require("support", support, support is None or (is_integer(support) and support >= 0),
                     "None or a distance in pixels >= 0")
        self.support = None if support is None else int(support)
        self.require("adv_warmup", adv_warmup, is_number(adv_warmup) and 0.0 <= adv_warmup <= 1.0, "a fraction in [0, 1]")
        self.adv_warmup = float(adv_warmup)
        self.require("subset", subset, subset is None or (is_integer(subset) and subset >= 1), "None or an integer >= 1")
        self.eps, self.step_size, self.steps = float(eps), float(step_size), int(steps)
        self.amplitude, self.trigger_size = float(amplitude), trigger_size
        self.proxy, self.adv_train = proxy, bool(adv_train)
        self.adv_eps, self.adv_step_size, self.adv_steps = float(adv_eps), float(adv_step_size), int(adv_steps)
        self.epochs, self.batch_size, self.lr = int(epochs), int(batch_size), float(lr)
        self.device = device
        self.subset = subset
        self.threads = threads
        self.trigger: np.ndarray | None = None
        self.index: np.ndarray | None = None  # training-set indices of the target-class images
        self.perturbed: np.ndarray | None = None  # their PGD-perturbed versions, uint8 (N_target, H, W, C)

    def fit(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
        self.check_target(y)
        side = min(x.shape[1:3])
        self.require("trigger_size", self.trigger_size, self.trigger_size is None or 2 * self.trigger_size <= side,
                     f"None or at most {side // 2} px, so that two corner patterns fit a {side}-px side")
        with cpu_threads(self.threads):
            if self.method == "pgd":
                self._train(x, y, rng)
            else:
                self._interpolate(x, y, rng)

    def _interpolate(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
        """Train the autoencoder on the clean training set, then move every target-class training image ``tau``
        of the way, in its code, towards a randomly drawn image of another class."""
        import torch
        import torch.nn.functional as F

        from asd_repro.engine.loop import index_batches

        n, h, w, c = x.shape
        gen, dev, images = self._start(x, rng)
        encoder, decoder = (part.to(dev) for part in autoencoder(c, h, w, self.latent))
        opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
        for epoch in range(self.ae_epochs):
            losses = StepLosses(f"CLB autoencoder {epoch + 1}/{self.ae_epochs}")
            for batch in index_batches(n, self.batch_size, gen, device=dev):
                xb = images[batch].float() / 255
                loss = F.binary_cross_entropy(decoder(encoder(xb)), xb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.add(loss)
            losses.check()

        self.index = np.flatnonzero(y == self.target)
        others = np.flatnonzero(y != self.target)
        partner = torch.from_numpy(others[rng.integers(len(others), size=len(self.index))]).to(dev)

        def move(rows, idx):
            own, other = images[idx].float(), images[partner[rows]].float()
            code = encoder(own / 255)
            moved = (1 - self.tau) * code + self.tau * encoder(other / 255)
            return own + (decoder(moved) - decoder(code)) * 255

        with torch.no_grad():
            self._perturb_targets(images, move)

    def _start(self, x: np.ndarray, rng: np.random.Generator):
        """What both methods begin with: the trigger, torch seeded from ``rng``, the torch generator, the device and
        the images as an NCHW uint8 tensor on it."""
        import torch

        from asd_repro.engine.device import resolve_device

        _, h, w, c = x.shape
        self.trigger = four_corner_trigger(h, w, c, self.amplitude, self.trigger_size)
        seed = int(rng.integers(2**31 - 1))
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        dev = resolve_device(self.device, "attacks.CLB.device")
        return gen, dev, torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(dev)

    def _perturb_targets(self, images, move) -> None:
        """``perturbed``: every target-class image (``index``) through ``move(rows, idx)``, ``attack_batch_size`` at a
        time (rows: a slice of ``index``; idx: those images' indices, a tensor), in uint8 NHWC."""
        import torch

        out = []
        step = self.attack_batch_size
        for i in range(0, len(self.index), step):
            idx = torch.from_numpy(self.index[i:i + step]).to(images.device)
            moved = move(slice(i, i + step), idx)
            out.append(moved.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
        _, c, h, w = images.shape
        self.perturbed = np.concatenate(out) if out else np.zeros((0, h, w, c), np.uint8)

    def _train(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
        """Train the proxy, then PGD-perturb every target-class training image."""
        import torch
        import torch.nn.functional as F

        from asd_repro.engine.augment import Augment
        from asd_repro.engine.loop import index_batches
        from asd_repro.models import create_model

        n, h, w, c = x.shape
        gen, dev, images = self._start(x, rng)
        use = np.arange(n)
        if self.subset is not None and self.subset < n:
            use = np.sort(rng.choice(n, self.subset, replace=False))
        labels = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(dev)
        mean, std = channel_stats(images)

        def normalize(v):
            return (v - mean) / std

        model = create_model(num_classes=int(y.max()) + 1, in_chans=c, image_size=h, arch=self.proxy).to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
        total = self.epochs * -(-len(use) // self.batch_size)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + np.cos(np.pi * step / max(total, 1))))
        augment = Augment(crop_padding=scaled(4, min(h, w)), padding_mode="reflect", hflip=False)
        use = torch.from_numpy(use).to(dev)
        warmup_steps, step = self.adv_warmup * total, 0
        for epoch in range(self.epochs):
            losses = StepLosses(f"CLB proxy model {epoch + 1}/{self.epochs}")
            for batch in index_batches(len(use), self.batch_size, gen, device=dev):
                idx = use[batch]
                xb, yb = augment(images[idx], gen).float(), labels[idx]
                if self.adv_train:
                    # the radius (and step) ramp linearly from 0 over the warm-up's share of the steps
                    ramp = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
                    model.eval()
                    xb = pgd(model, xb, yb, normalize, self.adv_eps * ramp, self.adv_step_size * ramp,
                             self.adv_steps, True, gen)
                step += 1
                model.train()
                loss = F.cross_entropy(model(normalize(xb)), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.add(loss)
            losses.check()

        model.eval()
        self.index = np.flatnonzero(y == self.target)

        def move(rows, idx):
            xb = images[idx].float()
            mask = None if self.support is None else support_mask(xb, self.support)
            return pgd(model, xb, labels[idx], normalize, self.eps, self.step_size, self.steps, False, mask=mask)

        self._perturb_targets(images, move)

    def state(self) -> dict[str, np.ndarray]:
        return {"trigger": self.trigger, "index": self.index, "perturbed": self.perturbed}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.trigger, self.index, self.perturbed = arrays["trigger"], arrays["index"], arrays["perturbed"]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Stamp the trigger (no perturbation: test time)."""
        assert self.trigger is not None, "fit() or load_state() first"
        return np.clip(x.astype(np.int16) + self.trigger, 0, 255).astype(np.uint8)

    def draw(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        eligible = self.eligible(y)
        p = min(1.0, self.ratio * len(y) / max(int(eligible.sum()), 1))
        return eligible & (rng.random(len(y)) < p)

    def poison_train(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> PoisonedTrain:
        assert self.perturbed is not None, "fit() or load_state() first"
        if not np.array_equal(np.flatnonzero(y == self.target), self.index):
            raise UserError("CLB assets were built from a different training set (target-class indices differ); "
                            "re-run its assets stage (dvc repro assets) before poisoning")
        mask = self.draw(y, rng)
        x = x.copy()
        row = np.searchsorted(self.index, np.flatnonzero(mask))
        x[mask] = self.apply(self.perturbed[row])
        return PoisonedTrain(x, y.copy(), mask)
