"""The training stages: ``train`` (one cell's model with a defense; also the repair and fine-tuning stages) and
``pretrain`` (a self-supervised defense's pre-training)."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import gin

from asd_repro.core.cell import (check_model_fits, load_model, open_cell, peak_memory, stopped_if_diverged, to_nchw,
                                 write_run_folder)
from asd_repro.core.config import configurable
from asd_repro.core.errors import UserError, check_seed, require
from asd_repro.core.io import atomic_dir, write_json
from asd_repro.core.provenance import environment


@configurable(module="stages")
def train(defense: str, clean: Path, poisoned: Path, out: Path, curves: Path, checkpoints: Path | None = None,
          seed: int = gin.REQUIRED, device: str = "auto", channels_last: bool = True, asked_config: str = "",
          stop_after_epoch: int | None = None, upstream: Path | None = None,
          eval_batch_size: int = 256, eval_every: int = 1) -> dict[str, Any]:
    """Train one table cell's model with a defense; resumable from per-epoch checkpoints.

    The curves hold test ACC/ASR (every ``eval_every`` epochs and after the last) for diagnostics only: the
    table reports the final epoch, never a test-selected one.

    Args:
        device: 'auto' (CUDA when available), 'cpu' or 'cuda[:i]'.
        channels_last: channels-last memory format for the model and its inputs (faster convolutions).
        stop_after_epoch: tests only, simulates a kill after that many epochs.
        eval_batch_size: batch of the per-epoch test evaluations (256 is ~2x faster than 1,024 on a laptop CPU).
        eval_every: evaluate the curves' test ACC/ASR every this many epochs (and after the last one); the other
            epochs record None. Speed only: the trained weights are the same for any value.
        upstream: a run folder (``model.pt``) whose model a post-training defense (FP, NAD) starts from, or
            the folder of a pre-training stage (DBD's self-supervised backbone); its files enter the checkpoint key.
    """
    import torch

    from asd_repro.defenses import DEFENSES, Context
    from asd_repro.engine.augment import Augment
    from asd_repro.engine.checkpoint import Checkpointer

    check_seed("stages.train.seed", seed)
    require("stages.train.eval_every", eval_every, eval_every >= 1, "a positive number of epochs")
    require("stages.train.eval_batch_size", eval_batch_size, eval_batch_size >= 1, "a positive batch size")
    cell = open_cell(clean, poisoned, seed, device, channels_last)
    data, arrays, dev = cell.data, cell.arrays, cell.device
    defense_obj = DEFENSES.create(defense)
    augment = Augment().resolved(data.info.hflip)
    augment.check_image(*arrays["train_x"].shape[1:3])
    upstream_model, upstream_key = None, ""
    if upstream is not None:
        upstream_model, upstream_key = load_model(upstream, dev, cell.memory_format)
        check_model_fits(upstream_model, upstream, cell.model_kwargs)
    key = cell.fingerprint(asked_config, defense, upstream_key)
    ctx = Context(
        train_x=to_nchw(arrays["train_x"], dev), train_y=torch.from_numpy(arrays["train_y"]).to(dev),
        poison=arrays["train_poison"], test_x=to_nchw(data.test.x, dev), test_y=torch.from_numpy(data.test.y).to(dev),
        bd_x=to_nchw(arrays["test_x"], dev), bd_y=torch.from_numpy(arrays["test_y"]).to(dev),
        num_classes=data.info.num_classes, augment=augment,
        normalize=cell.normalize(), new_model=cell.new_model, generator=cell.generator,
        checkpointer=Checkpointer(checkpoints, key), device=dev, seed=seed,
        stop_after_epoch=stop_after_epoch, upstream=upstream_model, eval_batch_size=eval_batch_size,
        eval_every=eval_every,
    )
    start = time.perf_counter()
    with ctx.checkpointer.lock(), stopped_if_diverged(out):
        model = defense_obj.run(ctx)
    seconds = time.perf_counter() - start
    last = ctx.curves[-1] if ctx.curves else {}
    # the last epoch is always evaluated, on the model the defense returns (FP's folded mask gives the same outputs)
    final = {"acc": last["acc"], "asr": last["asr"]} if last.get("acc") is not None else ctx.evaluate(model)
    info = {"dataset": data.info.name, "attack": cell.meta["attack"], "defense": defense, "seed": seed,
            "device": str(dev), "torch": torch.__version__, "python": platform.python_version(),
            "train_seconds": round(seconds, 2), "final_epoch": final, "model": cell.model_kwargs,
            "environment": environment(dev), "memory": peak_memory(dev), **getattr(defense_obj, "run_info", {})}
    with atomic_dir(out) as tmp:  # the curves are written inside: the stage's outputs land together or not at all
        write_run_folder(tmp, asked_config, model, cell.model_kwargs, "run.json", info)
        write_json(curves, ctx.uniform_curves())
    ctx.checkpointer.clear()
    print(f"trained {data.info.name}/{cell.meta['attack']}/{defense} in {seconds:.1f}s on {dev}: "
          f"ACC {final['acc']:.2f} ASR {final['asr']:.2f} -> {out}")
    return info


@configurable(module="stages")
def pretrain(defense: str, clean: Path, poisoned: Path, out: Path, checkpoints: Path | None = None,
             seed: int = gin.REQUIRED, device: str = "auto", channels_last: bool = True, asked_config: str = "",
             stop_after_epoch: int | None = None) -> dict[str, Any]:
    """A self-supervised defense's pre-training stage (DBD: SimCLR), written as a model folder for ``train``.

    The pre-training step is the one the defense declared at registration (``@register_defense(pretrain=...)``).
    ``out/model.pt`` has the format ``train`` writes (so ``train(upstream=out)`` loads it): the trained backbone with
    the model's freshly initialised head; ``out/pretrain.json`` records the losses and times. Resumable per epoch.

    Args:
        device: 'auto' (CUDA when available), 'cpu' or 'cuda[:i]'.
        channels_last: channels-last memory format for the model and its inputs.
        stop_after_epoch: tests only, simulates a kill after that many epochs.
    """
    import torch

    from asd_repro.defenses import DEFENSES
    from asd_repro.engine.checkpoint import Checkpointer
    from asd_repro.engine.simclr import head_parameter_names
    from asd_repro.models import create_model

    check_seed("stages.pretrain.seed", seed)
    pretrain_step = DEFENSES.meta(defense).get("pretrain")
    if pretrain_step is None:
        selfsup = ", ".join(n for n in DEFENSES.names() if DEFENSES.meta(n).get("pretrain") is not None)
        raise UserError(f"{defense!r} has no pre-training stage (only {selfsup}); list it in defenses.scratch")
    cell = open_cell(clean, poisoned, seed, device, channels_last, stage="pretrain")
    data, dev = cell.data, cell.device
    checkpointer = Checkpointer(checkpoints, cell.fingerprint(asked_config, f"{defense}-pretrain"))
    x = to_nchw(cell.arrays["train_x"], dev)
    model = create_model(**cell.model_kwargs)  # its head stays as initialised here, right after seeding
    start = time.perf_counter()
    with checkpointer.lock(), stopped_if_diverged(out):
        backbone, info = pretrain_step(x, cell.new_model, cell.generator, cell.normalize(), data.info.hflip,
                                       checkpointer, stop_after_epoch=stop_after_epoch)
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    assert not unexpected and set(missing) == head_parameter_names(model), (missing, unexpected)
    record = {"dataset": data.info.name, "attack": cell.meta["attack"], "seed": seed, "device": str(dev),
              "torch": torch.__version__, "python": platform.python_version(),
              "wall_seconds": round(time.perf_counter() - start, 2), "model": cell.model_kwargs,
              "environment": environment(dev), "memory": peak_memory(dev), **info}
    with atomic_dir(out) as tmp:
        write_run_folder(tmp, asked_config, model, cell.model_kwargs, "pretrain.json", record)
    checkpointer.clear()
    print(f"pre-trained the {defense} backbone of {data.info.name}/{cell.meta['attack']} in {info['seconds']:.1f}s "
          f"on {dev}: final loss {info['final_loss']:.4f} -> {out}")
    return record
