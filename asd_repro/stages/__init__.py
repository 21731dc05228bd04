"""The pipeline's stage functions, one gin-configurable root per DVC stage (``stages.<name>`` in gin).

prepare -> assets -> poison -> train (pretrain) -> evaluate -> table. Each writes its outputs atomically (a failed
stage leaves nothing behind) together with ``config.gin`` (what was asked) and ``operative_config.gin`` (what was
used). Paths come from the command line (dvc.yaml is their one source), never from gin. A stage's DVC code
dependencies are the CLI, the shared plumbing (``asd_repro/core``, its common steps in ``core/cell.py``) and the
module of its own root, so editing one root re-runs only its stages. This file only gathers the roots.
"""

from asd_repro.core.cell import (Cell, deterministic, load_model, load_poisoned, open_cell, torch_threads,
                                     write_run_folder)
from asd_repro.stages.data import assets, poison, prepare
from asd_repro.stages.evaluation import evaluate
from asd_repro.stages.training import pretrain, train

__all__ = ["Cell", "assets", "deterministic", "evaluate", "load_model", "load_poisoned", "open_cell", "poison", "prepare", "pretrain",
           "torch_threads", "train", "write_run_folder"]
