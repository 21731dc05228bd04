"""Import every module that defines gin configurables, so that any gin file can be parsed."""

from __future__ import annotations


def load_all() -> None:
    from asd_repro import stages  # noqa: F401
    from asd_repro.attacks import ATTACKS
    from asd_repro.data import DATASETS
    from asd_repro.defenses import DEFENSES
    from asd_repro.engine import augment, optim  # noqa: F401
    from asd_repro import models  # noqa: F401
    from asd_repro.report import stage  # noqa: F401  (stages.table)

    for registry in (DATASETS, ATTACKS, DEFENSES):
        registry.load_all()


def describe_configurables() -> str:
    import inspect

    import gin.config

    lines = []
    for selector, configurable in sorted(gin.config._REGISTRY.items()):
        if not selector.startswith(("stages.", "attacks.", "datasets.", "defenses.", "engine.", "models.")):
            continue
        fn = configurable.wrapped
        target = fn.__init__ if inspect.isclass(fn) else fn
        params = [p for p in inspect.signature(target).parameters if p not in ("self", "args", "kwargs")]
        lines.append(f"{selector}: {', '.join(params)}")
    return "\n".join(lines)
