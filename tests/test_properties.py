"""Bad inputs generated, not listed: for any params.yaml, claims file or gin binding that Hypothesis draws, the contract
holds: a correct result, or one ``UserError`` line (which the CLI prints as ``asd-repro: error: ...`` with exit 2)
and nothing written. Any other exception is a failure (a traceback a user would see)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gin
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asd_repro.core.errors import UserError

from conftest import REPO

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Any YAML scalar or small structure: what a typo or a wrong edit can put under a key.
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**65), st.floats(allow_nan=True), st.text(max_size=8),
                    st.sampled_from(["mnist5k", "badnets", "asd", "none", "fp", "mini", "dbd", "abl", "iab"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
names = {"datasets": ["mnist5k", "cifar10", "nope"], "attacks": ["badnets", "blend", "iab", "nope"],
         "scratch": ["none", "abl", "asd", "fp"], "repair": ["fp", "nad", "none"], "selfsup": ["dbd", "asd"]}


def _name_lists(key):
    return st.one_of(values, st.lists(st.sampled_from(names[key]), max_size=4))


params_files = st.fixed_dictionaries(
    {"profile": st.one_of(st.sampled_from(["mini", "smoke", "paper", "nope"]), values),
     "seeds": st.one_of(values, st.lists(st.integers(-2, 2**64), max_size=4)),
     "datasets": _name_lists("datasets"), "attacks": _name_lists("attacks"),
     "defenses": st.one_of(values, st.fixed_dictionaries({k: _name_lists(k) for k in ("scratch", "repair", "selfsup")}))})


def _one_line(error: UserError) -> str:
    line = str(error)
    assert line and "\n" not in line.strip(), f"not one line: {line!r}"
    return line


@SETTINGS
@given(params=params_files)
def test_check_accepts_a_valid_matrix_or_says_one_line_and_writes_nothing(params, tmp_path):
    from asd_repro.core.matrix import check_params
    from asd_repro.defenses import DEFENSES

    file, out = tmp_path / "params.yaml", tmp_path / "checks" / "params.ok"
    out.unlink(missing_ok=True)
    file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        check_params(file, out, lambda name: DEFENSES.meta(name)["family"], gin_root=REPO / "params")
    except UserError as e:
        _one_line(e)
        assert not out.exists(), "a rejected params.yaml must write nothing"
        return
    # accepted: then every list is a list of known, distinct names and the seeds are usable by every RNG
    assert out.read_text() == "params.yaml is valid\n"
    for key in ("datasets", "attacks"):
        assert len(set(params[key])) == len(params[key]) and "nope" not in params[key]
    seeds = params["seeds"]
    assert seeds and all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds) and len(set(seeds)) == len(seeds)


claim_entries = st.fixed_dictionaries(
    {"id": st.one_of(st.text(min_size=1, max_size=6), values), "defense": st.sampled_from(["asd", "none", "x"]),
     "metric": st.one_of(st.sampled_from(["acc", "asr"]), values), "op": st.one_of(st.sampled_from(["<=", ">="]), values)},
    optional={"value": st.one_of(st.floats(allow_nan=True), values), "offset": values, "stat": values,
              "kind": st.one_of(st.sampled_from(["every_attack", "best_average", "undominated"]), values),
              "xfail": values, "relative_to": values, "nonsense": values})


@SETTINGS
@given(entries=st.one_of(values, st.lists(claim_entries, max_size=3)))
def test_a_claims_file_loads_or_says_one_line(entries, tmp_path):
    from asd_repro.report.claims import load_claims

    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(entries))
    try:
        claims = load_claims(path)
    except UserError as e:
        assert str(path) in _one_line(e)
        return
    for claim in claims:  # accepted: every number it compares with is a finite number
        for number in (getattr(claim, "value", None), getattr(claim, "offset", None)):
            assert number is None or (isinstance(number, (int, float)) and not isinstance(number, bool)
                                      and math.isfinite(number)), claim


def _stage_configurables() -> list[tuple[str, list[str]]]:
    """Every configurable a stage's gin files may bind, with its parameters (from ``asd-repro configurables``)."""
    from asd_repro.cli.plugins import describe_configurables, load_all

    load_all()
    out = []
    for line in describe_configurables().splitlines():
        selector, _, params = line.partition(": ")
        out.append((selector, [p for p in params.split(", ") if p]))
    return out


CONFIGURABLES = _stage_configurables()
# Classes: the attacks, defenses, datasets and the engine's helpers, built from their bindings alone. The stage
# roots and other functions are called with data by the pipeline tests (test_cli_errors, test_faults).
FITTING = [(s, p) for s, ps in CONFIGURABLES for p in ps if __import__("inspect").isclass(gin.config._REGISTRY[s].wrapped)]


@settings(max_examples=int(__import__("os").environ.get("ASD_REPRO_EXAMPLES", 80)), deadline=None)
@given(binding=st.sampled_from(FITTING), value=st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet="abc5", max_size=4), st.lists(st.integers(-2, 3), max_size=3)))
def test_any_value_bound_to_any_parameter_is_taken_or_named_in_one_line(binding, value):
    """Construct the configurable with one drawn value. A wrong type or range must be a UserError naming the
    binding, never a TypeError, ValueError or other traceback."""
    import inspect

    selector, param = binding
    target = gin.config._REGISTRY[selector].wrapped
    sig = inspect.signature(target.__init__)
    required = [p for p in sig.parameters.values() if p.name != "self" and p.default is gin.REQUIRED]
    kwargs = {p.name: {"target": 0, "ratio": 0.1}.get(p.name, 0) for p in required}
    kwargs[param] = value
    with gin.unlock_config():
        try:
            target(**kwargs)
        except UserError as e:
            line = str(e).splitlines()[0]  # what the CLI prints (gin appends the call's context below it)
            assert param in line or selector in line, line  # the binding, or its configurable (a joint range)
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError,
                OverflowError) as e:
            pytest.fail(f"{selector}.{param} = {value!r}: {type(e).__name__}: {e}")


def test_the_binding_sweep_covers_every_plug_in_kind():
    kinds = {s.split(".")[0] for s, _ in FITTING}
    assert {"attacks", "defenses", "datasets", "engine"} <= kinds
    assert len(FITTING) > 150
    json.dumps(FITTING)  # plain names, for Hypothesis' database
    assert Path(REPO / "params.yaml").is_file()
