"""engine.device: a device binding torch does not know, or CUDA where there is none, is one line naming the binding."""

from __future__ import annotations

import pytest
import torch

from asd_repro.engine.device import cpu_threads, resolve_device
from asd_repro.core.errors import UserError


def test_auto_and_cpu_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "meta"])
def test_a_name_that_is_not_a_device_is_one_line_naming_the_binding(name):
    with pytest.raises(UserError, match=rf"^stages.evaluate.device = '{name}'") as info:
        resolve_device(name, "stages.evaluate.device")
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(UserError, match="no CUDA device; bind 'auto' or 'cpu'"):
        resolve_device("cuda", "stages.train.device")


def test_cpu_threads_restores_the_setting():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
