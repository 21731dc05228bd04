"""The staleness check: a committed dvc.lock against the code, params and commands, on a clone without the data."""

from __future__ import annotations

import subprocess

import pytest

from asd_repro.report.staleness import main

DVC_YAML = """stages:
  make:
    cmd: cp src.txt data.txt
    deps: [src.txt]
    params: [x]
    outs: [data.txt]
  use:
    cmd: cp data.txt out.txt
    deps: [data.txt, code.py]
    outs: [out.txt]
"""


@pytest.mark.slow
def test_lock_is_fresh_until_code_params_or_a_command_change(tmp_path, dvc_on_path, capsys):
    for name, text in {"dvc.yaml": DVC_YAML, "params.yaml": "x: 1\n", "src.txt": "a\n", "code.py": "A = 1\n"}.items():
        (tmp_path / name).write_text(text)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    for produced in ("data.txt", "out.txt"):  # a fresh clone has none of the stages' outputs
        (tmp_path / produced).unlink()
    assert main([str(tmp_path)]) == 0
    assert "matches" in capsys.readouterr().out

    (tmp_path / "code.py").write_text("A = 2\n")
    assert main([str(tmp_path)]) == 1
    assert "use: code.py modified" in capsys.readouterr().out
    (tmp_path / "code.py").write_text("A = 1\n")
    (tmp_path / "params.yaml").write_text("x: 2\n")
    assert main([str(tmp_path)]) == 1
    assert "make: params.yaml:x modified" in capsys.readouterr().out
    (tmp_path / "params.yaml").write_text("x: 1\n")
    (tmp_path / "dvc.yaml").write_text(DVC_YAML.replace("cp data.txt out.txt", "cat data.txt > out.txt"))
    assert main([str(tmp_path)]) == 1
    assert "use:" in capsys.readouterr().out
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    assert main([str(tmp_path)]) == 0
    capsys.readouterr()
    lock = (tmp_path / "dvc.lock").read_text()
    (tmp_path / "dvc.lock").write_text(lock.replace("  use:", "  used-to-be:\n    cmd: echo gone\n  use:", 1))
    assert main([str(tmp_path)]) == 1
    assert "1 stage(s) that dvc.yaml no longer defines (e.g. used-to-be)" in capsys.readouterr().out


def test_no_lock_is_bad_input(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "dvc.lock: not found" in capsys.readouterr().err


def test_a_new_output_is_stale_and_a_missing_one_is_not():
    from asd_repro.report.staleness import stale_stages

    status = {"table": [{"changed outs": {"results/mini": "not in cache", "views/mini": "deleted"}}],
              "evaluate@a": [{"changed outs": {"metrics/mini/a": "deleted"}}]}
    lock_outs = {"table": {"results/mini"}, "evaluate@a": {"metrics/mini/a"}}
    stale = stale_stages(status, set().union(*lock_outs.values()), set(lock_outs), lock_outs)
    assert stale == {"table": ["views/mini is a new output"]}  # a fresh clone's missing outputs are not staleness


def test_a_lock_that_mixes_two_runs_names_the_stages_whose_inputs_differ():
    """A producer re-ran (its output hash changed) and a reader did not: the reader's recorded input hash differs."""
    from asd_repro.report.staleness import broken_links

    def lock(poison_out: str, train_in: str, folder_in: str = "f") -> dict:
        return {"stages": {
            "poison@a-1": {"deps": [{"path": "data/prepared", "md5": "p"}],
                           "outs": [{"path": "data/poisoned/a/s1", "md5": poison_out}]},
            "prepare": {"outs": [{"path": "data/prepared", "md5": "p"}]},
            "train@a-1": {"deps": [{"path": "data/poisoned/a/s1", "md5": train_in},
                                   {"path": "data/prepared", "md5": "p"}],
                          "outs": [{"path": "runs/a/s1", "md5": "r"}]},
            # a folder holding outputs has a hash of its own: not judged
            "evaluate@a": {"deps": [{"path": "data/poisoned/a", "md5": folder_in}, {"path": "runs/a/s1", "md5": "r"}]}}}

    assert broken_links(lock("x", "x")) == {}
    assert broken_links(lock("x", "y", folder_in="z")) == {"train@a-1": ["data/poisoned/a/s1"]}
    stale_reader = lock("x", "x")
    stale_reader["stages"]["evaluate@a"]["deps"][1]["md5"] = "old"
    assert broken_links(stale_reader) == {"evaluate@a": ["runs/a/s1"]}
