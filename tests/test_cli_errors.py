"""Bad input: one line on stderr naming the file and the fix, exit status 2, no partial outputs."""

import shutil
from pathlib import Path

import pytest

from asd_repro.cli import main

from conftest import tiny_prepared


def _run(capsys, argv):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return rc, err


def _assert_one_line_error(rc, err, *needles):
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("asd-repro: error: ")
    for n in needles:
        assert n in err, err


def test_unknown_gin_binding_in_a_file(tmp_path, capsys, repo_cwd):
    clean = tiny_prepared(tmp_path / "prepared")
    bad = tmp_path / "typo.gin"
    bad.write_text("attacks.BadNets.patch_sise = 3\n")
    out = tmp_path / "poisoned"
    rc, err = _run(capsys, ["assets", "badnets", "--clean", clean, "--out", out, "--seed", 1,
                            "--gin", "params/base.gin", "params/attacks/badnets.gin", bad])
    _assert_one_line_error(rc, err, str(bad), "patch_sise")
    assert not out.exists() and not list(tmp_path.glob(".poisoned.partial*"))


def test_profile_without_a_file_for_a_defense(tmp_path, capsys, repo_cwd):
    params = tmp_path / "params.yaml"
    params.write_text("profile: mini\nseeds: [1]\ndatasets: [mnist5k]\nattacks: [badnets]\ndefenses:\n  scratch: [none]\n")
    (tmp_path / "params").mkdir()
    for sub in ("datasets", "attacks", "defenses"):
        shutil.copytree(Path("params") / sub, tmp_path / "params" / sub)
    (tmp_path / "params" / "profiles" / "mini").mkdir(parents=True)
    (tmp_path / "params" / "profiles" / "mini" / "common.gin").write_text("# empty\n")
    (tmp_path / "params" / "profiles" / "mini" / "attacks.gin").write_text("# empty\n")
    from asd_repro.core.errors import UserError
    from asd_repro.core.matrix import check_params

    with pytest.raises(UserError, match=r"profiles/mini/none\.gin: missing"):
        check_params(params, tmp_path / "ok", lambda name: "scratch", gin_root=tmp_path / "params")


def test_unknown_configurable_from_params_yaml(tmp_path, capsys, repo_cwd):
    params = tmp_path / "params.yaml"
    params.write_text("bindings:\n  poison: ['attacks.BadNet.patch_size = 3']\n")
    rc, err = _run(capsys, ["assets", "badnets", "--clean", tmp_path, "--out", tmp_path / "o", "--seed", 1,
                            "--gin", "params/base.gin", "--bindings-from", f"{params}:bindings.poison"])
    _assert_one_line_error(rc, err, str(params), "attacks.BadNet")


def test_a_bad_binding_names_the_list_it_came_from(tmp_path, capsys, repo_cwd):
    params = tmp_path / "params.yaml"
    params.write_text("bindings:\n  train: ['SEED = 1']\n  asd: ['defenses.ASD.gama = 0.3']\n")
    rc, err = _run(capsys, ["assets", "badnets", "--clean", tmp_path, "--out", tmp_path / "o", "--gin", "params/base.gin",
                            "--bindings-from", f"{params}:bindings.train", "--bindings-from", f"{params}:bindings.asd"])
    _assert_one_line_error(rc, err, f"{params}:bindings.asd: bad gin binding", "defenses.ASD.gama")


def test_malformed_gin_file(tmp_path, capsys, repo_cwd):
    bad = tmp_path / "broken.gin"
    bad.write_text("engine.Augment.crop_padding = (4,\n")
    rc, err = _run(capsys, ["assets", "badnets", "--clean", tmp_path, "--out", tmp_path / "o", "--gin", bad])
    _assert_one_line_error(rc, err, str(bad))


def test_missing_gin_file(tmp_path, capsys, repo_cwd):
    rc, err = _run(capsys, ["assets", "badnets", "--clean", tmp_path, "--out", tmp_path / "o",
                            "--gin", "params/attacks/nope.gin"])
    _assert_one_line_error(rc, err, "params/attacks/nope.gin", "not found")


def _without_families(text: str) -> list[str]:
    """params.yaml's lines without the indented family lists under ``defenses:``."""
    lines, inside = [], False
    for line in text.splitlines():
        inside = line.startswith("defenses:") or (inside and line.startswith(" "))
        if not inside or line.startswith("defenses:"):
            lines.append(line)
    return lines


@pytest.mark.parametrize("key,value,needle", [("attacks", "[badnets, badnet]", "unknown attack 'badnet'"),
                                              ("datasets", "[mnist5kk]", "unknown dataset 'mnist5kk'"),
                                              ("defenses", "{scratch: [nope]}", "unknown defense 'nope'"),
                                              ("profile", "huge", "unknown profile 'huge'")])
def test_unknown_names_in_params_yaml(tmp_path, capsys, repo_cwd, key, value, needle):
    text = Path("params.yaml").read_text()
    source = _without_families(text) if key == "defenses" else text.splitlines()
    lines = [f"{key}: {value}" if line.split(":")[0] == key else line for line in source]
    params = tmp_path / "params.yaml"
    params.write_text("\n".join(lines) + "\n")
    out = tmp_path / "checks" / "params.ok"
    rc, err = _run(capsys, ["check", "--params", params, "--out", out])
    _assert_one_line_error(rc, err, str(params), needle, "known:")
    assert not out.exists()


@pytest.mark.parametrize("defenses,needle", [("[none, asd]", "must map the families"),
                                             ("{scratch: [none, fp]}", "'fp' belongs in defenses.repair"),
                                             ("{scratch: [asd], repair: [fp]}", "add 'none' to defenses.scratch")])
def test_misplaced_defenses_in_params_yaml(tmp_path, capsys, repo_cwd, defenses, needle):
    kept = [line for line in _without_families(Path("params.yaml").read_text()) if not line.startswith("defenses:")]
    params = tmp_path / "params.yaml"
    params.write_text("\n".join(kept) + f"\ndefenses: {defenses}\n")
    rc, err = _run(capsys, ["check", "--params", params, "--out", tmp_path / "ok"])
    _assert_one_line_error(rc, err, str(params), needle)


def test_malformed_params_yaml(tmp_path, capsys, repo_cwd):
    params = tmp_path / "params.yaml"
    params.write_text("attacks: [badnets\n")
    rc, err = _run(capsys, ["check", "--params", params, "--out", tmp_path / "ok"])
    _assert_one_line_error(rc, err, str(params), "malformed YAML")


def test_cifar10_unavailable_offline(tmp_path, capsys, repo_cwd, monkeypatch):
    import asd_repro.data.cifar10 as cifar10

    def offline(dest):
        raise OSError("network is unreachable")

    monkeypatch.setattr(cifar10, "download", offline)
    out = tmp_path / "prepared" / "cifar10"
    rc, err = _run(capsys, ["prepare", "cifar10", "--raw-root", tmp_path / "raw", "--out", out,
                            "--gin", "params/datasets/cifar10.gin"])
    _assert_one_line_error(rc, err, "cifar-10-batches-py", "download failed")
    assert not out.exists()


def test_fashion_mnist_unavailable_offline(tmp_path, capsys, repo_cwd, monkeypatch):
    import asd_repro.data.fashion_mnist as fm

    monkeypatch.setattr(fm, "download", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")), raising=True)
    out = tmp_path / "prepared" / "fashion_mnist"
    rc, err = _run(capsys, ["prepare", "fashion_mnist", "--raw-root", tmp_path / "raw", "--out", out,
                            "--gin", "params/datasets/fashion_mnist.gin",
                            "--bind", f"datasets.FashionMnist.system_dir = '{tmp_path / 'none'}'"])
    _assert_one_line_error(rc, err, "dataset-fashion-mnist")
    assert not out.exists()


def test_corrupt_cached_array(tmp_path, capsys, repo_cwd):
    clean = tiny_prepared(tmp_path / "prepared")
    arr = clean / "train_x.npy"
    data = bytearray(arr.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the pixels
    arr.write_bytes(bytes(data))
    out = tmp_path / "assets"
    rc, err = _run(capsys, ["assets", "badnets", "--clean", clean, "--out", out, "--seed", 1,
                            "--gin", "params/base.gin", "params/attacks/badnets.gin"])
    _assert_one_line_error(rc, err, str(arr), "corrupt", "dvc repro -f")
    assert not out.exists()
    arr.write_bytes(b"not an npy file")
    rc, err = _run(capsys, ["assets", "badnets", "--clean", clean, "--out", out, "--seed", 1,
                            "--gin", "params/base.gin", "params/attacks/badnets.gin"])
    _assert_one_line_error(rc, err, str(arr), "corrupt")


def test_missing_required_value(tmp_path, capsys, repo_cwd):
    clean = tiny_prepared(tmp_path / "prepared")
    rc, err = _run(capsys, ["assets", "badnets", "--clean", clean, "--out", tmp_path / "o",
                            "--gin", "params/base.gin", "params/attacks/badnets.gin"])  # no --seed: SEED unbound
    _assert_one_line_error(rc, err, "SEED")


@pytest.mark.slow
def test_a_reader_that_stops_early_gets_no_traceback():
    """`asd-repro config ... | head -1`: exit 0, nothing on stderr."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    run = subprocess.run("asd-repro config mnist5k badnets asd --values | head -1; echo \"rc=${PIPESTATUS[0]}\"",
                         shell=True, executable="/bin/bash", cwd=root, capture_output=True, text=True, timeout=120)
    assert run.stdout.startswith("######## ") and run.stdout.strip().endswith("rc=0"), run.stdout + run.stderr
    assert run.stderr == ""


def test_a_gate_cut_short_exits_141_never_0(monkeypatch):
    import os
    import sys

    from asd_repro.cli import main

    table = str(Path(__file__).resolve().parents[1] / "results" / "mini" / "table.csv")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    out = os.fdopen(write, "w")
    monkeypatch.setattr(sys, "stdout", out)
    try:
        assert main(["compare", table, table]) == 141
    finally:
        out.close()
