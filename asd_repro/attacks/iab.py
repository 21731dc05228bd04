"""IAB, input-aware dynamic backdoor (Nguyen & Tran, NeurIPS 2020): every input gets its own trigger.

A pattern generator g and a mask network m (conv encoder-decoders) give x' = x + m(x) * (g(x) - x),
in pixel space [0, 1]. As in the paper's code (and BackdoorBox's IAD):
  1. m is pre-trained alone with lambda_norm * mean(relu(m(x) - density)) (a sparse mask) plus
     lambda_div * |x1 - x2| / |m(x1) - m(x2)| (different inputs -> different masks), then frozen;
  2. g is trained jointly with a classifier on batches holding backdoor samples (own trigger, target
     label), cross samples (another image's trigger, true label: a trigger only works on its own
     image) and clean samples, plus the same diversity loss on the patterns.
The paper's attacker controls training; here (data poisoning only) ``fit`` trains g and m once, the
classifier is thrown away, and ``poison_train`` applies them to a fixed set: poisoned samples take
the target label, cross samples (outside the ``poison`` mask) keep theirs, as in the paper's batches.
"""

from __future__ import annotations


import gin
import numpy as np

from asd_repro.attacks import Attack, PoisonedTrain, channel_stats, is_integer, is_number, register_attack, scaled
from asd_repro.core.config import configurable
from asd_repro.core.errors import StepLosses
from asd_repro.engine.device import cpu_threads

EPSILON = 1e-7  # keeps the diversity ratio finite (the paper's value)


def milestone_epochs(fractions: tuple[float, ...], epochs: int) -> list[int]:
    """The epochs after which a phase's learning rates drop: ``fractions`` of its length, never before the first
    epoch has run (a milestone of 0 would drop the rate before any step, as a 1-epoch phase otherwise gets)."""
    return [max(1, int(round(f * epochs))) for f in fractions]


def mask_phase_epochs(epochs: int, min_steps: int, steps_per_epoch: int) -> int:
    """The mask phase's epochs: ``epochs``, or more whole epochs when those give fewer than ``min_steps`` steps."""
    if epochs == 0 or steps_per_epoch == 0:
        return epochs
    return max(epochs, -(-min_steps // steps_per_epoch))


def _nets():
    """The torch modules, defined lazily so that importing the plug-in does not import torch."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def block(c_in: int, c_out: int, relu: bool = True) -> nn.Sequential:
        layers = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out, momentum=0.05)]
        return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)

    class EncoderDecoder(nn.Module):
        """The paper's generator: ``depth`` (conv, conv, max-pool) steps doubling the width from ``width``,
        a middle conv, then ``depth`` (upsample, conv, conv) steps halving it; output in [0, 1]. Upsampling
        goes back to the encoder's exact sizes, so any image side works (28 -> 14 -> 7 -> 14 -> 28)."""

        def __init__(self, in_ch: int, out_ch: int, width: int, depth: int):
            super().__init__()
            widths = [width * 2 ** i for i in range(depth)]
            self.down = nn.ModuleList()
            c = in_ch
            for w in widths:
                self.down.append(nn.Sequential(block(c, w), block(w, w)))
                c = w
            self.middle = block(c, c)
            self.up = nn.ModuleList()
            for i in range(depth):
                last = i == depth - 1
                nxt = out_ch if last else max(c // 2, 1)
                self.up.append(nn.Sequential(block(c, c), block(c, nxt, relu=not last)))
                c = nxt

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            sizes = []
            for step in self.down:
                x = step(x)
                sizes.append(x.shape[-2:])
                x = F.max_pool2d(x, 2)
            x = self.middle(x)
            for step, size in zip(self.up, reversed(sizes)):
                x = step(F.interpolate(x, size=size, mode="nearest"))
            return torch.tanh(x) / (2 + EPSILON) + 0.5

    return EncoderDecoder


def _small_cnn(in_ch: int, num_classes: int):
    """The shape of the paper's MNIST classifier: two 5x5 convolutions (32, 64) with max-pools, a 512-unit
    MLP; adaptive pooling to 4 x 4 lets it take any image size."""
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(in_ch, 32, 5), nn.ReLU(inplace=True), nn.Dropout(0.1), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5), nn.ReLU(inplace=True), nn.Dropout(0.1), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, 512), nn.ReLU(inplace=True), nn.Dropout(0.1),
        nn.Linear(512, num_classes))


def _threshold(m):
    """The paper's soft step that makes the mask nearly binary."""
    import torch

    return torch.tanh(m * 20 - 10) / (2 + EPSILON) + 0.5


def _diversity(x1, x2, p1, p2):
    """mean |x1 - x2| / |p1 - p2| over pairs (RMS distances): small when different inputs get different triggers."""
    dist_x = (x1 - x2).pow(2).mean(dim=(1, 2, 3)).sqrt()
    dist_p = (p1 - p2).pow(2).mean(dim=(1, 2, 3)).sqrt()
    return (dist_x / (dist_p + EPSILON)).mean()


@register_attack("iab")
@configurable(module="attacks")
class IAB(Attack):
    """Args:
        cross_ratio: cross-trigger samples per poisoned sample in the fixed set (the paper's batches hold
            as many cross as backdoor samples: 1): each sample outside the poison mask is a cross sample
            with probability ``cross_ratio * ratio``.
        mask_epochs: mask-network pre-training epochs (25 in the paper's code).
        mask_min_steps: the fewest optimizer steps of the mask phase: when ``mask_epochs`` epochs give fewer, the
            phase runs whole epochs until it reaches them. The mask network trains alone, so it needs steps, not
            passes: 25 epochs are 9,750 steps on CIFAR-10, a scaled profile's few epochs of a small set a few dozen.
            A mask stopped that early is caught mid-swing (its density anywhere from half to eight times its settled
            value, moved by any float difference), and a victim learns its triggers in one run and not the next
            (DEVIATIONS A17). 0: exactly ``mask_epochs``; ``mask_epochs = 0`` skips the phase whatever this is.
        epochs: joint generator + classifier epochs.
        batch_size: training batch (128 in the paper's code).
        width, depth: generator/mask width of the first level and number of down-sampling steps; None takes
            the paper's sizes (16 / 2 for grey images, 32 / 3 for colour).
        mask_density: the mask's target mean (0.032).
        lambda_norm, lambda_div: weights of the mask-density and diversity losses (100 and 1).
        train_bd_ratio, train_cross_ratio: fractions of each training batch turned into backdoor and cross
            samples while g is trained (0.1 and 0.1).
        lr_g, lr_m, lr_c: Adam (betas 0.5, 0.9) for g and m, SGD (momentum 0.9, wd 5e-4) for the classifier.
        milestones: fractions of each phase after which its learning rates drop 10x.
        classifier: architecture of the joint classifier: 'small_cnn' (the paper's MNIST classifier) or an
            ``asd_repro.models.create_model`` architecture (the paper uses the victim's, PreAct-ResNet-18 on CIFAR).
        device: 'auto' (CUDA when available), 'cpu' or 'cuda[:i]', for training and for applying g and m.
        subset: train on this many randomly chosen training images (None: all; the smoke profile's knob).
        apply_batch_size: images a batch when g and m poison a set (memory only: any value gives the same images;
            lower it when a GPU runs out of memory at 224 px).
        threads: CPU threads of ``fit`` and ``apply`` (None: torch's default). 1 makes re-runs on one machine
            bit-identical (not across machines: DEVIATIONS A15) and is the fastest on a shared 2-core machine, where
            two threads wait on each other between the many small operations of these networks (measured 5-10x
            slower).
    """

    def __init__(self, target: int = gin.REQUIRED, ratio: float = gin.REQUIRED, cross_ratio: float = 1.0,
                 mask_epochs: int = 25, epochs: int = 100, batch_size: int = 128, width: int | None = None,
                 depth: int | None = None, mask_density: float = 0.032, lambda_norm: float = 100.0,
                 lambda_div: float = 1.0, train_bd_ratio: float = 0.1, train_cross_ratio: float = 0.1,
                 lr_g: float = 0.01, lr_m: float = 0.01, lr_c: float = 0.01,
                 milestones: tuple[float, ...] = (0.4, 0.8), classifier: str = "resnet18", device: str = "auto",
                 subset: int | None = None, threads: int | None = 1, apply_batch_size: int = 512,
                 mask_min_steps: int = 0):
        super().__init__(target, ratio)
        self.require("apply_batch_size", apply_batch_size, is_integer(apply_batch_size) and apply_batch_size >= 1,
                     "an integer >= 1")
        self.apply_batch_size = int(apply_batch_size)
        self.require("cross_ratio", cross_ratio, is_number(cross_ratio) and 0 <= cross_ratio * ratio <= 1,
                     f"a number >= 0 with cross_ratio x ratio ({ratio}) in [0, 1]")
        for name, value in (("train_bd_ratio", train_bd_ratio), ("train_cross_ratio", train_cross_ratio)):
            self.require(name, value, is_number(value) and 0 <= value <= 1, "a fraction in [0, 1]")
        self.require("train_cross_ratio", train_cross_ratio, train_bd_ratio + train_cross_ratio <= 1,
                     f"train_bd_ratio + train_cross_ratio <= 1 (train_bd_ratio is {train_bd_ratio})")
        for name, value, low in (("mask_epochs", mask_epochs, 0), ("mask_min_steps", mask_min_steps, 0),
                                 ("epochs", epochs, 1), ("batch_size", batch_size, 1)):
            self.require(name, value, is_integer(value) and value >= low, f"an integer >= {low}")
        for name, value in (("width", width), ("depth", depth), ("subset", subset)):
            self.require(name, value, value is None or (is_integer(value) and value >= 1), "None or an integer >= 1")
        self.require("mask_density", mask_density, is_number(mask_density) and 0 < mask_density <= 1,
                     "a fraction in (0, 1]")
        for name, value in (("lambda_norm", lambda_norm), ("lambda_div", lambda_div)):
            self.require(name, value, is_number(value) and value >= 0, "a weight >= 0")
        for name, value in (("lr_g", lr_g), ("lr_m", lr_m), ("lr_c", lr_c)):
            self.require(name, value, is_number(value) and value > 0, "a learning rate > 0")
        self.require("milestones", milestones, isinstance(milestones, (tuple, list))
                     and all(is_number(m) and 0 <= m <= 1 for m in milestones),
                     "a tuple of fractions of the phase in [0, 1]")
        self.cross_ratio = float(cross_ratio)
        self.mask_epochs, self.epochs, self.batch_size = int(mask_epochs), int(epochs), int(batch_size)
        self.mask_min_steps = int(mask_min_steps)
        self.width, self.depth = width, depth
        self.mask_density, self.lambda_norm, self.lambda_div = mask_density, lambda_norm, lambda_div
        self.train_bd_ratio, self.train_cross_ratio = train_bd_ratio, train_cross_ratio
        self.lr_g, self.lr_m, self.lr_c = lr_g, lr_m, lr_c
        self.milestones = tuple(milestones)
        self.classifier = classifier
        self.device = device
        self.subset = subset
        self.threads = threads
        self.g = self.m = None
        self.arch: np.ndarray | None = None  # in_ch, width, depth

    # ----- networks and their assets -----
    def _build(self, in_ch: int, width: int, depth: int) -> None:
        net = _nets()
        self.arch = np.array([in_ch, width, depth], dtype=np.int64)
        self.g = net(in_ch, in_ch, width, depth)
        self.m = net(in_ch, 1, width, depth)

    def state(self) -> dict[str, np.ndarray]:
        assert self.g is not None, "fit() first"
        arrays = {"arch": self.arch}
        for prefix, net in (("g", self.g), ("m", self.m)):
            for key, value in net.state_dict().items():
                arrays[f"{prefix}.{key}"] = value.detach().cpu().numpy()
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        import torch

        self._build(*(int(v) for v in arrays["arch"]))
        for prefix, net in (("g", self.g), ("m", self.m)):
            net.load_state_dict({k[len(prefix) + 1:]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
                                 if k.startswith(prefix + ".")})
            net.eval()

    # ----- triggers -----
    def _triggered(self, x, source):
        """x + m(source) * (g(source) - x), everything in [0, 1]; source = x gives the backdoor sample."""
        mask = _threshold(self.m(source))
        pattern = self.g(source)
        return x + mask * (pattern - x), pattern, mask

    def _apply_pairs(self, x: np.ndarray, source: np.ndarray) -> np.ndarray:
        import torch

        from asd_repro.engine.device import resolve_device

        assert self.g is not None, "fit() or load_state() first"
        dev = resolve_device(self.device, "attacks.IAB.device")
        self.g.to(dev).eval()
        self.m.to(dev).eval()

        def unit(a):
            return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).to(dev).float() / 255

        out = []
        batch_size = self.apply_batch_size
        with cpu_threads(self.threads), torch.inference_mode():
            for i in range(0, len(x), batch_size):
                bd, _, _ = self._triggered(unit(x[i:i + batch_size]), unit(source[i:i + batch_size]))
                out.append((bd * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out) if out else x.copy()

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self._apply_pairs(x, x)

    def apply_cross(self, x: np.ndarray, source: np.ndarray) -> np.ndarray:
        """Cross-trigger samples: each image carries the trigger generated from its ``source`` image."""
        return self._apply_pairs(x, source)

    # ----- the fixed poisoned set -----
    def draw(self, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Poison mask (the base class's draw), cross mask, and each cross sample's trigger source (another index)."""
        n = len(y)
        poison = self.eligible(y) & (rng.random(n) < self.ratio)
        cross = ~poison & (rng.random(n) < self.cross_ratio * self.ratio)
        index = np.flatnonzero(cross)
        source = (index + rng.integers(1, max(n, 2), size=len(index))) % n  # never the image itself
        return poison, cross, source

    def poison_train(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> PoisonedTrain:
        poison, cross, source = self.draw(y, rng)
        out, labels = x.copy(), y.copy()
        if poison.any():
            out[poison] = self.apply(x[poison])
            labels[poison] = self.target
        if cross.any():
            out[cross] = self.apply_cross(x[cross], x[source])
        return PoisonedTrain(out, labels, poison)

    # ----- training g and m -----
    def fit(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
        self.check_target(y)
        with cpu_threads(self.threads):
            self._train(x, y, rng)

    def _train(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
        import torch
        import torch.nn.functional as F

        from asd_repro.engine.augment import Augment
        from asd_repro.models import create_model
        from asd_repro.engine.device import resolve_device

        seed = int(rng.integers(2**31 - 1))
        if self.subset is not None and self.subset < len(x):
            pick = np.sort(rng.choice(len(x), self.subset, replace=False))
            x, y = x[pick], y[pick]
        n, h, w, c = x.shape
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        dev = resolve_device(self.device, "attacks.IAB.device")
        self._build(c, self.width or (16 if c == 1 else 32), self.depth or (2 if c == 1 else 3))
        g, m = self.g.to(dev), self.m.to(dev)
        images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(dev)
        labels = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(dev)
        mean, std = channel_stats(images)
        mean, std = mean / 255, std / 255
        augment = Augment(crop_padding=scaled(4, min(h, w)), padding_mode="reflect", hflip=False)
        batch = min(self.batch_size, n)

        def pairs():
            """Two independent shuffles per epoch: image 1 and an unrelated image 2 (the paper's two loaders)."""
            first, second = torch.randperm(n, generator=gen).to(dev), torch.randperm(n, generator=gen).to(dev)
            for i in range(0, n - n % batch, batch):
                yield first[i:i + batch], second[i:i + batch]

        def steps_at(epochs):
            return milestone_epochs(self.milestones, epochs)

        # 1. the mask network alone
        mask_epochs = mask_phase_epochs(self.mask_epochs, self.mask_min_steps, n // batch)
        opt_m = torch.optim.Adam(m.parameters(), lr=self.lr_m, betas=(0.5, 0.9))
        sched_m = torch.optim.lr_scheduler.MultiStepLR(opt_m, steps_at(mask_epochs), 0.1)
        m.train()
        for epoch in range(mask_epochs):
            losses = StepLosses(f"IAB mask generator {epoch + 1}/{mask_epochs}")
            for i1, i2 in pairs():
                x1, x2 = images[i1].float() / 255, images[i2].float() / 255
                m1, m2 = _threshold(m(x1)), _threshold(m(x2))
                loss_norm = F.relu(m1 - self.mask_density).mean()
                loss = self.lambda_norm * loss_norm + self.lambda_div * _diversity(x1, x2, m1, m2)
                opt_m.zero_grad(set_to_none=True)
                loss.backward()
                opt_m.step()
                losses.add(loss)
            losses.check()
            sched_m.step()
        m.eval().requires_grad_(False)

        # 2. the pattern generator jointly with a classifier
        classes = int(y.max()) + 1
        model = (_small_cnn(c, classes) if self.classifier == "small_cnn" else
                 create_model(num_classes=classes, in_chans=c, image_size=h, arch=self.classifier)).to(dev)
        opt_c = torch.optim.SGD(model.parameters(), lr=self.lr_c, momentum=0.9, weight_decay=5e-4)
        opt_g = torch.optim.Adam(g.parameters(), lr=self.lr_g, betas=(0.5, 0.9))
        sched_c = torch.optim.lr_scheduler.MultiStepLR(opt_c, steps_at(self.epochs), 0.1)
        sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, steps_at(self.epochs), 0.1)
        n_bd = max(1, int(self.train_bd_ratio * batch))
        n_cross = int(self.train_cross_ratio * batch)
        for epoch in range(self.epochs):
            model.train()
            g.train()
            losses = StepLosses(f"IAB pattern generator {epoch + 1}/{self.epochs}")
            for i1, i2 in pairs():
                x1 = augment(images[i1], gen).float() / 255
                x2 = augment(images[i2], gen).float() / 255
                # backdoor samples carry their own trigger, cross samples the trigger of an image 2
                sources = torch.cat([x1[:n_bd], x2[n_bd:n_bd + n_cross]])
                triggered, patterns, _ = self._triggered(x1[:n_bd + n_cross], sources)
                inputs = torch.cat([triggered, x1[n_bd + n_cross:]])
                targets = torch.cat([torch.full((n_bd,), self.target, device=dev), labels[i1][n_bd:]])
                loss = F.cross_entropy(model((inputs - mean) / std), targets)
                k = min(n_bd, n_cross)
                if k:
                    loss = loss + self.lambda_div * _diversity(sources[:k], sources[n_bd:n_bd + k], patterns[:k],
                                                               patterns[n_bd:n_bd + k])
                opt_c.zero_grad(set_to_none=True)
                opt_g.zero_grad(set_to_none=True)
                loss.backward()
                opt_c.step()
                opt_g.step()
                losses.add(loss)
            losses.check()
            sched_c.step()
            sched_g.step()
        self.g, self.m = g.eval(), m.eval()
