"""The table stage's gin root, ``stages.table``: results/<profile>/ from the metrics, curves and claims.

Registered under the ``stages`` module like the other stage roots, so a profile's ``common.gin`` binds
``stages.table.*`` next to the training stages' values; it lives here so that editing the report re-runs the
table stage only. Heavy imports (pandas, matplotlib) happen inside the function.
"""

from __future__ import annotations

from pathlib import Path

import gin


@gin.configurable("table", module="stages")
def table(metrics: Path, curves: Path | None, paper_csv: Path, claims_file: Path | None, out: Path, profile: str,
          datasets: list[str], attacks: list[str], defenses: list[str], seeds: list[int],
          paper_dataset: dict[str, str] | None = None, decimals: int = 1, tolerance_k: float = 2.0,
          binomial_z: float = 2.0, abs_floor: float = 1.0, collapse_margin: float = 0.1, asr_success: float = 50.0,
          figures: bool = True) -> None:
    """Assemble ``table.md`` (seed statistics, claims, paper diff with tolerance verdicts), ``table.csv`` (every
    seed's value), ``summary.csv`` (one row a cell) and the figures.

    Args:
        paper_dataset: which paper dataset each of ours is compared with when the paper has no row for it (the
            embedded mnist5k stands in for CIFAR-10); the output says so.
        decimals: rounding of the rendered tables.
        tolerance_k: the paper diff's tolerance is ``max(k * seed std, z * binomial SE, abs_floor)`` points.
        binomial_z: z of that tolerance (the binomial floor of a measurement on the test set).
        abs_floor: the smallest tolerance, in points.
        collapse_margin: a model whose clean ACC is at most chance + this x (100 - chance) is collapsed (19% for
            10 classes): marked in the table and a failure in every claim, never a defense's success.
        asr_success: a seed's attack succeeded when its ASR is at least this (%), for the per-cell count.
        figures: draw the PNG figures (matplotlib).
    """
    from asd_repro.io import atomic_dir
    from asd_repro.report import figures as figs
    from asd_repro.report.claims import evaluate_claims, load_claims
    from asd_repro.report.stats import Noise
    from asd_repro.report.table import assemble, collect_metrics, load_paper

    noise = Noise(k=tolerance_k, z=binomial_z, abs_floor=abs_floor, collapse_margin=collapse_margin, asr_success=asr_success)
    found = collect_metrics(Path(metrics), datasets, attacks, defenses, seeds)
    paper = load_paper(Path(paper_csv))
    claims = evaluate_claims(load_claims(Path(claims_file)), found, noise) if claims_file else []
    files = assemble(found, paper, profile, datasets, paper_dataset or {}, decimals, noise, claims)
    with atomic_dir(out) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text)
        if figures:
            figs.draw_all(found, Path(curves) if curves else None, tmp, noise, datasets, attacks, defenses, seeds)
    print(f"table for profile {profile}: {found.groupby(['dataset', 'attack', 'defense']).ngroups} cells x "
          f"{len(seeds)} seeds -> {out}")
