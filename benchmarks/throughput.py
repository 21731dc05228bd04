"""Training throughput: our engine (uint8 on device, batched augmentation) vs a torchvision
DataLoader + per-image PIL transforms, same model, batch, optimiser and augmentation, one process.

Usage (from the project root, after `dvc repro` has prepared the data):
    python benchmarks/throughput.py [--prepared data/prepared/mnist5k] [--arch slim_resnet] [--batch 64]

Rounds alternate between the two loops so that both see the same machine load; the median
images/s per loop and their ratio are printed (and written as JSON with --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from asd_repro.data import load_prepared
from asd_repro.engine.augment import Augment, Normalize
from asd_repro.engine.loop import index_batches
from asd_repro.models import create_model


class PilDataset(Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i]
        img = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        return self.transform(img), int(self.y[i])


def step(model, opt, inputs, targets):
    loss = F.cross_entropy(model(inputs), targets)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def engine_epoch(model, opt, x, y, augment, normalize, batch, generator, limit):
    n = 0
    for idx in index_batches(len(y), batch, generator, drop_last=True):
        step(model, opt, normalize(augment(x[idx], generator)), y[idx])
        n += len(idx)
        if n >= limit:
            break
    return n


def loader_epoch(model, opt, loader, limit):
    n = 0
    for inputs, targets in loader:
        step(model, opt, inputs, targets)
        n += len(targets)
        if n >= limit:
            break
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", default="data/prepared/mnist5k")
    ap.add_argument("--arch", default="slim_resnet")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--padding", type=int, default=2)
    ap.add_argument("--images", type=int, default=2048, help="images per timed round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()

    data = load_prepared(args.prepared)
    h, w, c = data.train.x.shape[1:]
    torch.manual_seed(0)
    model = create_model(data.info.num_classes, c, h, arch=args.arch, stem="cifar")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()

    x = torch.from_numpy(np.ascontiguousarray(data.train.x.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(data.train.y)
    augment = Augment(args.padding, "reflect", data.info.hflip)
    normalize = Normalize(data.info.mean, data.info.std, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)

    pil = [transforms.RandomCrop(h, padding=args.padding, padding_mode="reflect")]
    if data.info.hflip:
        pil.append(transforms.RandomHorizontalFlip())
    pil += [transforms.ToTensor(), transforms.Normalize(data.info.mean, data.info.std)]
    loader = DataLoader(PilDataset(data.train.x, data.train.y, transforms.Compose(pil)), batch_size=args.batch,
                        shuffle=True, drop_last=True, num_workers=args.workers, persistent_workers=args.workers > 0)

    engine_epoch(model, opt, x, y, augment, normalize, args.batch, generator, 4 * args.batch)  # warm-up
    loader_epoch(model, opt, loader, 4 * args.batch)
    rates = {"engine": [], "dataloader_pil": []}
    for _ in range(args.rounds):
        t = time.perf_counter()
        n = engine_epoch(model, opt, x, y, augment, normalize, args.batch, generator, args.images)
        rates["engine"].append(n / (time.perf_counter() - t))
        t = time.perf_counter()
        n = loader_epoch(model, opt, loader, args.images)
        rates["dataloader_pil"].append(n / (time.perf_counter() - t))
        print({k: round(v[-1]) for k, v in rates.items()}, flush=True)

    result = {"dataset": data.info.name, "arch": args.arch, "batch": args.batch, "workers": args.workers,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
              "engine_img_per_s": round(statistics.median(rates["engine"]), 1),
              "dataloader_pil_img_per_s": round(statistics.median(rates["dataloader_pil"]), 1)}
    result["ratio"] = round(result["engine_img_per_s"] / result["dataloader_pil_img_per_s"], 2)
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
