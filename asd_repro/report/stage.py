"""The table stage's gin root, ``stages.table``: results/<profile>/ from the metrics, curves and claims.

Registered under the ``stages`` module like the other stage roots, so a profile's ``common.gin`` binds
``stages.table.*`` next to the training stages' values; it lives here so that editing the report re-runs the
table stage only. Heavy imports (pandas, matplotlib) happen inside the function.
"""

from __future__ import annotations

from pathlib import Path

from asd_repro.core.config import configurable


@configurable(module="stages", name="table")
def table(metrics: Path, curves: Path | None, paper_csv: Path, claims_file: Path | None, out: Path, profile: str,
          datasets: list[str], attacks: list[str], defenses: list[str], seeds: list[int],
          paper_dataset: dict[str, str] | None = None, decimals: int = 1, alpha: float = 0.05,
          correction: str = "holm", readable_acc: float = 3.0, readable_asr: float = 20.0,
          collapse_margin: float = 0.1, asr_success: float = 50.0, figures: bool = True) -> None:
    """Assemble ``table.md`` (seed statistics, power, claims, calibrated diff against the paper), ``table.csv``
    (every seed's value), ``summary.csv`` (one row a cell) and the figures.

    Args:
        paper_dataset: which paper dataset each of ours is compared with when the paper has no row for it (the
            embedded mnist5k stands in for CIFAR-10); the output says so.
        decimals: rounding of the rendered tables.
        alpha: the family-wise false-alarm rate of the paper diff's verdicts (``report/gate.py``).
        correction: the multiple-comparison correction over the table (a statsmodels multipletests method).
        readable_acc: ACC points a cell must be able to detect at its seeds, else it is underpowered.
        readable_asr: ASR points likewise.
        collapse_margin: a model whose clean ACC is at most chance + this x (100 - chance) is collapsed (19% for
            10 classes): marked in the table and a failure in every claim, never a defense's success.
        asr_success: a seed's attack succeeded when its ASR is at least this (%), for the per-cell count.
        figures: draw the PNG figures (matplotlib).
    """
    from asd_repro.core.io import atomic_dir
    from asd_repro.report import figures as figs
    from asd_repro.report.claims import checklist, evaluate_claims, load_claims
    from asd_repro.report.dvcviews import PLOTS, VIEWS, write_curves, write_views
    from asd_repro.report.gate import Gate
    from asd_repro.report.stats import Noise
    from asd_repro.report.table import assemble, collect_metrics, load_paper

    noise = Noise(collapse_margin=collapse_margin, asr_success=asr_success)
    gate = Gate(alpha=alpha, correction=correction, readable_acc=readable_acc, readable_asr=readable_asr)
    found = collect_metrics(Path(metrics), datasets, attacks, defenses, seeds)
    paper = load_paper(Path(paper_csv))
    claims = evaluate_claims(load_claims(Path(claims_file)), found, noise, profile) if claims_file else []
    files = assemble(found, paper, profile, datasets, paper_dataset or {}, decimals, noise,
                     checklist(claims) if claims else "", gate=gate)
    with atomic_dir(out) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text)
        if figures:
            figs.draw_all(found, Path(curves) if curves else None, tmp, noise, datasets, attacks, defenses, seeds)
        write_views(found, tmp / VIEWS)  # what `dvc metrics show/diff` read
        if curves:
            write_curves(Path(curves), tmp / PLOTS, datasets, attacks, defenses, seeds)  # what `dvc plots` draw
    print(f"table for profile {profile}: {found.groupby(['dataset', 'attack', 'defense']).ngroups} cells x "
          f"{len(seeds)} seeds -> {out}")
