"""The mechanisms behind the bad-input contract, each tested where it lives: inputs that do not belong together,
a write that fails for any reason, a scratch folder another process still writes, a seed every RNG takes, a matrix
that names something twice, and the table stage's place after ``check``."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from asd_repro import stages
from asd_repro.core.errors import UserError
from asd_repro.core.io import atomic_dir, write_error

from conftest import REPO, badnets_poisoned, configure, tiny_prepared

GIN = ["params/base.gin", "params/attacks/badnets.gin", "params/defenses/none.gin", "params/profiles/smoke/common.gin",
       "params/profiles/smoke/none.gin"]
TRAIN = ["SEED = 3", "defenses.NoDefense.epochs = 1", "defenses.NoDefense.batch_size = 16",
         "stages.train.device = 'cpu'"]


def _train(clean, poisoned, out, upstream=None, bindings=()):
    asked = configure(GIN, [*TRAIN, *bindings])
    return stages.train("none", clean, poisoned, out, out.parent / f"{out.name}.json", None, asked_config=asked,
                        upstream=upstream)


def test_a_poisoned_set_of_another_prepared_set_is_refused_naming_it(tmp_path):
    clean, poisoned = badnets_poisoned(tmp_path, GIN)
    other = tiny_prepared(tmp_path / "other", n_per_class=13)  # same name, other images
    with pytest.raises(UserError, match=r"made from another prepared set .*rebuild it"):
        _train(other, poisoned, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    _train(clean, poisoned, tmp_path / "run")  # its own prepared set is fine
    assert (tmp_path / "run" / "model.pt").is_file()


def test_an_upstream_model_of_other_classes_is_refused_naming_it(tmp_path):
    clean, poisoned = badnets_poisoned(tmp_path, GIN)
    _train(clean, poisoned, tmp_path / "none")
    import torch

    saved = torch.load(tmp_path / "none" / "model.pt", weights_only=True)
    from asd_repro.models import create_model

    kwargs = {**saved["model_kwargs"], "num_classes": 43}
    foreign = create_model(**kwargs)
    torch.save({"model_kwargs": kwargs, "state_dict": foreign.state_dict()}, tmp_path / "none" / "model.pt")
    with pytest.raises(UserError, match=r"num_classes 43 \(the cell has 10\)"):
        _train(clean, poisoned, tmp_path / "repaired", upstream=tmp_path / "none")


def test_more_seed_samples_than_a_class_holds_is_refused(tmp_path):
    from conftest import tiny_context

    ctx = tiny_context()
    with pytest.raises(UserError, match=r"defenses.ASD.seeds_per_class asks 99 .* class \d has only \d+"):
        ctx.clean_indices(99, np.random.default_rng(0), "defenses.ASD.seeds_per_class")
    assert len(ctx.clean_indices(2, np.random.default_rng(0), "x")) == 6  # 3 classes x 2


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "free disk space"), (errno.EROFS, "read-only"),
                                         (errno.EACCES, "fix the permissions"), (errno.ENOTDIR, "is a file, not a folder"),
                                         (errno.EISDIR, "a folder where a file belongs")])
def test_every_kind_of_failed_write_is_one_line_naming_the_path(code, words):
    error = write_error(OSError(code, os.strerror(code), "results/mini/table.md"))
    assert isinstance(error, UserError) and "\n" not in str(error)
    assert str(error).startswith("results/mini/table.md: cannot ") and words in str(error)
    assert write_error(OSError(errno.ECONNRESET, "reset", "x")) is None  # not a write problem: a real traceback


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
@pytest.mark.parametrize("where", ["os.replace", "tempfile.mkstemp"])
def test_a_failed_write_at_the_one_write_path_is_one_line_exit_2_and_nothing_written(tmp_path, monkeypatch, capsys,
                                                                                     code, where):
    """Fault injection where every small output (JSON, markers, curves) is written: the rename or the scratch file."""
    import tempfile

    from asd_repro.cli import main

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path / "ok"))

    module, name = where.split(".")
    monkeypatch.setattr({"os": os, "tempfile": tempfile}[module], name, fail)
    monkeypatch.chdir(REPO)
    assert main(["check", "--out", str(tmp_path / "ok")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"asd-repro: error: {tmp_path / 'ok'}: cannot ") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_an_output_under_a_regular_file_through_the_cli_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    run = subprocess.run([sys.executable, "-m", "asd_repro", "check", "--out", str(tmp_path / "file" / "ok")],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("asd-repro: error: ") and run.stderr.count("\n") == 1
    assert "move that file away" in run.stderr


def test_a_scratch_folder_of_a_live_writer_is_kept_and_a_dead_ones_removed(tmp_path):
    out = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".run.partial-{sleeper.pid}-abc"
        dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True).stdout.strip()
        dead = tmp_path / f".run.partial-{dead_pid}-def"
        old_style = tmp_path / ".run.partial-xyz"  # written before scratch folders named their writer
        for folder in (live, dead, old_style):
            folder.mkdir()
        with atomic_dir(out) as tmp:
            (tmp / "a").write_text("1")
        assert live.is_dir(), "another process's scratch folder is never deleted under it"
        assert not dead.exists() and not old_style.exists()
        assert (out / "a").read_text() == "1"
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("seed", [-1, 2**32, 2**63, True, 1.5])
def test_a_seed_no_rng_takes_is_one_line_before_any_work(tmp_path, seed):
    clean = tiny_prepared(tmp_path / "prepared")
    configure(GIN, ["SEED = 3"])
    with pytest.raises(UserError, match=r"stages.assets.seed = .* is invalid"):
        stages.assets("badnets", clean, tmp_path / "assets", seed=seed)
    assert not (tmp_path / "assets").exists()


def test_check_refuses_a_name_listed_twice_and_a_seed_too_large(tmp_path):
    from asd_repro.core.matrix import check_params

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    for change, message in ((dict(attacks=["badnets", "blend", "badnets"]), "lists badnets twice"),
                            (dict(seeds=[100, 2**63]), "integers from 0 to 4294967295")):
        file = tmp_path / "params.yaml"
        file.write_text(yaml.safe_dump({**base, **change}))
        with pytest.raises(UserError, match=message):
            check_params(file, tmp_path / "ok", lambda name: {"fp": "repair", "nad": "repair", "dbd": "selfsup"}
                         .get(name, "scratch"), gin_root=REPO / "params")
        assert not (tmp_path / "ok").exists()


def test_the_table_stage_runs_after_check():
    table = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["table"]
    check = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["check"]
    assert check["outs"][0].keys() >= {"checks/params.ok"} if isinstance(check["outs"][0], dict) else False
    assert "checks/params.ok" in [d.split(" ")[0] for d in table["deps"]]


def _fail_with(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), "the-output")
    return fail


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
@pytest.mark.parametrize("kind", ["arrays", "json", "model", "png"])
def test_every_output_kind_fails_to_write_as_one_line_exit_2_and_leaves_nothing(tmp_path, monkeypatch, capsys,
                                                                                code, kind):
    """Fault injection at each kind of output: a stage's arrays (numpy), JSON records, model weights (torch) and the
    table's figures (matplotlib); the previous outputs stay and no scratch folder is left."""
    import matplotlib.figure
    import numpy
    import tempfile
    import torch

    from asd_repro.cli import main

    monkeypatch.chdir(REPO)
    clean, poisoned = badnets_poisoned(tmp_path, GIN)
    metrics = tmp_path / "metrics"
    if kind == "png":
        from conftest import write_metrics

        write_metrics(metrics, {("mnist5k", "badnets", d): {100: (98.0, 1.0)} for d in ("none", "asd")})
        (tmp_path / "p.yaml").write_text("profile: mini\nseeds: [100]\ndatasets: [mnist5k]\nattacks: [badnets]\n"
                                         "defenses: {scratch: [none, asd], repair: [], selfsup: []}\n")
    target, argv = {
        "arrays": ((numpy, "save"), ["poison", "badnets", "--clean", clean, "--assets", tmp_path / "assets",
                                     "--out", tmp_path / "out", "--seed", "3", "--gin", *GIN,
                                     "--bind", "attacks.BadNets.ratio = 0.2"]),
        "json": ((tempfile, "mkstemp"), ["poison", "badnets", "--clean", clean, "--assets", tmp_path / "assets",
                                         "--out", tmp_path / "out", "--seed", "3", "--gin", *GIN,
                                         "--bind", "attacks.BadNets.ratio = 0.2"]),
        "model": ((torch, "save"), ["train", "none", "--clean", clean, "--poisoned", poisoned, "--out",
                                    tmp_path / "out", "--curves", tmp_path / "out.json", "--seed", "3", "--gin", *GIN,
                                    *sum((["--bind", b] for b in TRAIN[1:]), [])]),
        "png": ((matplotlib.figure.Figure, "savefig"), ["table", "--metrics", metrics, "--paper",
                                                        "reference/paper_table.csv", "--params", tmp_path / "p.yaml",
                                                        "--out", tmp_path / "out",
                                                        "--gin", "params/profiles/mini/common.gin"]),
    }[kind]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "previous.txt").write_text("the last good output")
    monkeypatch.setattr(*target, _fail_with(code))
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.rsplit("\r", 1)[-1]  # after the training's progress bar, if any
    assert err.startswith("asd-repro: error: ") and err.count("\n") == 1, err
    assert ": cannot " in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["previous.txt"], "the previous output is untouched"
    assert not list(tmp_path.glob(".out.partial-*")), "no scratch folder is left"


def test_a_training_stage_places_its_model_folder_and_curves_together_or_neither(tmp_path, monkeypatch, capsys):
    from asd_repro.cli import main
    from asd_repro.stages import training

    monkeypatch.chdir(REPO)
    clean, poisoned = badnets_poisoned(tmp_path, GIN)
    monkeypatch.setattr(training, "write_json", _fail_with(errno.ENOSPC))  # the curves file is the one that fails
    argv = ["train", "none", "--clean", clean, "--poisoned", poisoned, "--out", tmp_path / "run", "--curves",
            tmp_path / "run.json", "--seed", "3", "--gin", *GIN, *sum((["--bind", b] for b in TRAIN[1:]), [])]
    assert main([str(a) for a in argv]) == 2
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.json").exists()
    assert "cannot write" in capsys.readouterr().err.rsplit("\r", 1)[-1]


def test_a_failed_final_rename_puts_the_previous_output_back(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.pt").write_text("the last good model")
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the new output into place
            raise OSError(errno.EIO, "I/O error", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        with atomic_dir(out) as tmp:
            (tmp / "model.pt").write_text("the new model")
    assert (out / "model.pt").read_text() == "the last good model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "no scratch or set-aside folder is left"


def test_a_clean_label_target_class_without_clean_images_gives_none_but_a_short_class_is_an_error():
    from conftest import tiny_context

    ctx = tiny_context()
    ctx.poison[:] = False
    ctx.poison[(ctx.train_y == 0).cpu().numpy()] = True  # every image of class 0 poisoned (CLB on GTSRB)
    picks = ctx.clean_indices(2, np.random.default_rng(0), "x")
    assert len(picks) == 4 and not ctx.poison[picks].any()  # classes 1 and 2 only
    ctx.poison[:] = False
    ctx.poison[np.flatnonzero((ctx.train_y == 1).cpu().numpy())[1:]] = True  # class 1 keeps one clean image
    with pytest.raises(UserError, match="class 1 has only 1 clean"):
        ctx.clean_indices(2, np.random.default_rng(0), "x")


def test_the_type_check_leaves_packed_arguments_to_the_function():
    import gin

    from asd_repro.core.config import configurable

    @configurable(module="tests_mechanisms")
    def packed(x: int, *args: int, **kwargs: float) -> tuple:
        return x, args, kwargs

    try:
        assert packed(1, 2, 3, y=4.0) == (1, (2, 3), {"y": 4.0})
        with pytest.raises(UserError, match=r"tests_mechanisms.packed.x = 'a' is invalid"):
            packed("a")
    finally:
        gin.config._REGISTRY.pop("tests_mechanisms.packed")


def test_the_check_stage_refuses_a_bindings_typo_or_a_missing_list(tmp_path):
    from asd_repro.checkbindings import main

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    file = tmp_path / "params.yaml"
    file.write_text(yaml.safe_dump(base))
    assert main([str(file)]) == 0
    typo = {**base, "bindings": {**base["bindings"], "asd": ["defenses.ASD.gama = 0.3"]}}
    file.write_text(yaml.safe_dump(typo))
    assert main([str(file)]) == 2
    missing = {**base, "bindings": {k: v for k, v in base["bindings"].items() if k != "nad"}}
    file.write_text(yaml.safe_dump(missing))
    with pytest.raises(UserError, match=r"bindings.nad is missing; dvc.yaml reads it"):
        from asd_repro.checkbindings import check_bindings

        check_bindings(file)


def test_the_check_stage_runs_first_and_depends_on_the_bindings():
    check = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["check"]
    assert check["params"] == [{"params.yaml": None}]  # every key of params.yaml, the bindings lists included
    assert check["cmd"].startswith("python -m asd_repro.checkbindings params.yaml &&")
