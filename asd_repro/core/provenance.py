"""What made a number: the library versions, the device, the CPU and the thread count of a run.

Cross-machine differences are part of the noise model (a CPU or a torch build moves cells the way a seed
does), so every run records its environment and every table says which environments made it.
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchvision", "timm", "numpy")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(device: Any = "cpu") -> dict[str, Any]:
    """The environment of this process: package versions, python, device (with the GPU's name), CPU, threads."""
    import torch

    device = str(device)
    env: dict[str, Any] = {name: _version(name) for name in PACKAGES}
    env["torch"] = torch.__version__  # the build tag (+cpu, +cu130) matters, the distribution version lacks it
    env.update(python=platform.python_version(), machine=platform.machine(), cpu=cpu_model(),
               threads=torch.get_num_threads(), device=device)
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def summary(env: dict[str, Any]) -> str:
    """One line naming an environment, e.g. ``torch 2.14.1+cu130, ..., cpu AMD EPYC, 2 threads, device cpu``."""
    parts = [f"{name} {env[name]}" for name in (*PACKAGES, "python") if env.get(name)]
    parts += [f"cpu {env.get('cpu')}", f"{env.get('threads')} threads", f"device {env.get('device')}"]
    if env.get("gpu"):
        parts.append(f"gpu {env['gpu']}")
    return ", ".join(parts)
