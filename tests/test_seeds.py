"""Seeds as an axis of the matrix: params.yaml's list, one output folder a seed, every seed evaluated."""

from __future__ import annotations

import pytest

from asd_repro.core.errors import UserError
from asd_repro.core.matrix import seed_folder, seeds_of


def test_seeds_are_a_list_of_distinct_non_negative_integers():
    assert seeds_of({"seeds": [100, 101, 102]}) == [100, 101, 102]
    for bad in ([], [1, 1], [1, -2], ["1"], 100, None, [True]):
        with pytest.raises(UserError, match="seeds"):
            seeds_of({"seeds": bad})
    with pytest.raises(UserError, match="'seed' is now 'seeds'"):
        seeds_of({"seed": 100})


def test_each_seed_has_its_own_folder(tmp_path):
    assert seed_folder(tmp_path / "runs" / "asd", 101) == tmp_path / "runs" / "asd" / "s101"


def test_provenance_names_the_libraries_cpu_and_threads():
    import torch

    from asd_repro.core.provenance import environment, summary

    env = environment("cpu")
    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()
    assert env["numpy"] and env["timm"] and env["cpu"] and env["device"] == "cpu"
    line = summary(env)
    assert line.startswith(f"torch {torch.__version__}") and f"{env['threads']} threads" in line
