"""The engine's training loop: one resumable loop over epochs (``run_epochs``), the epoch bodies it runs over
device-resident uint8 data (``train_epoch``; MixMatch's and SimCLR's live beside it), and prediction.

A phase of any defense is ``run_epochs`` with an epoch body: the loop owns the timing, the learning rate logged,
the schedule step, the end-of-epoch record, the checkpoint and the interrupt hook; the body owns the training.
Epoch bodies keep their statistics and every step's loss on the device (``StepLosses``, the divergence guard) and
read them once per epoch.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from asd_repro.core.errors import StepLosses
from asd_repro.engine.augment import Augment, Normalize
from asd_repro.engine.checkpoint import Checkpointer, rng_state, set_rng_state


class Interrupted(KeyboardInterrupt):
    """Raised by ``run_epochs`` when a test asks the run to stop after an epoch (a simulated kill)."""


def index_batches(n: int, batch_size: int, generator: torch.Generator | None, drop_last: bool = False,
                  device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Shuffled (or, with no generator, ordered) index batches."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        yield order[i:i + batch_size].to(device)


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                augment: Augment, normalize: Normalize, batch_size: int, generator: torch.Generator,
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                desc: str = "train") -> dict[str, float]:
    """One pass of mini-batch training with on-device augmentation; returns mean loss and accuracy."""
    model.train()
    # float64 sums on the device: the same additions, in the same order, as summing loss.item() on the host
    total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    seen = 0
    losses = StepLosses(desc)
    bar = tqdm(list(index_batches(len(y), batch_size, generator, device=x.device)), desc=desc, leave=False,
               mininterval=1.0)
    for idx in bar:
        inputs, targets = normalize(augment(x[idx], generator)), y[idx]
        logits = model(inputs)
        loss = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.add(loss)
        total_loss += loss.detach().double() * len(idx)
        correct += (logits.argmax(1) == targets).sum()
        seen += len(idx)
    losses.check()
    return {"loss": total_loss.item() / max(seen, 1), "train_acc": 100.0 * correct.item() / max(seen, 1)}


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, normalize: Normalize, batch_size: int = 1024,
                   augment: Augment | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Logits for every image, eval mode, large batches; optional augmentation (e.g. for split losses)."""
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        if augment is not None:
            xb = augment(xb, generator)
        out.append(model(normalize(xb)).float())
    return torch.cat(out) if out else torch.empty(0)


class Resumable:
    """Holds the objects of a training phase and saves/restores them with every RNG state."""

    def __init__(self, checkpointer: Checkpointer, generator: torch.Generator, **objects: Any):
        self.ckpt = checkpointer
        self.generator = generator
        self.objects = objects

    def restore(self, needs: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """Load the last checkpoint into the objects; None (objects untouched) when there is none.

        A checkpoint of another layout (missing ``needs`` entries, other objects, other shapes) is discarded
        with a one-line warning and the objects are left as they were, so the phase starts over from epoch 0.
        """
        state = self.ckpt.load()
        if state is None:
            return None
        before = {name: copy.deepcopy(obj.state_dict()) for name, obj in self.objects.items()}
        rng_before = rng_state(self.generator)
        try:
            missing = [k for k in ("objects", "rng", *needs) if k not in state]
            if missing:
                raise KeyError(", ".join(missing))
            for name, obj in self.objects.items():
                obj.load_state_dict(state["objects"][name])
            set_rng_state(state["rng"], self.generator)
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as e:
            for name, obj in self.objects.items():
                obj.load_state_dict(before[name])
            set_rng_state(rng_before, self.generator)
            self.ckpt.discard(f"is not this run's ({type(e).__name__}: {str(e).splitlines()[0][:100]})")
            return None
        return state

    def save(self, **extra: Any) -> None:
        state = {"objects": {n: o.state_dict() for n, o in self.objects.items()}, "rng": rng_state(self.generator),
                 **extra}
        self.ckpt.save(state)


def run_epochs(phase: str, epochs: int, body: Callable[[int], dict[str, Any]], *, checkpointer: Checkpointer,
               generator: torch.Generator, objects: dict[str, Any], records: list[dict[str, Any]],
               end_epoch: Callable[[dict[str, Any], int], Any], optimizer: torch.optim.Optimizer | None = None,
               schedule: Any = None, first_epoch: int = 0, stop_after_epoch: int | None = None) -> None:
    """Run epochs ``0 .. epochs - 1`` of a phase, resuming after the last checkpointed one.

    Every epoch: ``stats = body(epoch)`` (0-based within the phase), the schedule's step, then the record
    ``{epoch, phase, lr, **stats, seconds}`` goes to ``end_epoch(record, epochs_done)`` (which may add to it and
    appends it to ``records``), and the checkpoint (``objects``, every RNG state, ``records``) is saved.

    Args:
        objects: what the checkpoint restores (anything with ``state_dict``/``load_state_dict``: the model, the
            optimiser, the schedule, ...).
        records: the curves so far; replaced by the checkpoint's on resume.
        optimizer: its first group's lr, read before the epoch, is the record's ``lr``.
        first_epoch: epochs of the run's earlier phases: records and the interrupt hook count across phases.
        stop_after_epoch: tests only, raise ``Interrupted`` once ``first_epoch + epoch + 1`` reaches it.
    """
    state = Resumable(checkpointer, generator, **objects)
    restored = state.restore(needs=("epoch", "curves"))
    start = 0
    if restored is not None:
        records[:] = restored["curves"]
        start = restored["epoch"]
        print(f"resuming {phase} from epoch {start}/{epochs}", flush=True)
    for epoch in range(start, epochs):
        began = time.perf_counter()
        lr = {"lr": optimizer.param_groups[0]["lr"]} if optimizer is not None else {}
        stats = body(epoch)
        if schedule is not None:
            schedule.step()
        done = first_epoch + epoch + 1
        end_epoch({"epoch": done, "phase": phase, **lr, **stats, "seconds": time.perf_counter() - began}, done)
        state.save(epoch=epoch + 1, curves=records)
        if stop_after_epoch is not None and done >= stop_after_epoch:
            raise Interrupted(f"stopped after epoch {done} (test hook)")
