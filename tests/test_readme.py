"""README.md: a newcomer's guide whose commands are CI's and whose results table is generated, never typed.

Also: every relative link in README.md, DEVIATIONS.md and docs/*.md reaches a file, and a heading where it names one.
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest

from asd_repro.report import readme
from asd_repro.report.readme import BEGIN, END, current_block, main, results_block

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SUMMARY = ROOT / "results" / "mini" / "summary.csv"
INSTALL = 'pip install -e ".[dev]"'


def first_fenced_block(text: str) -> list[str]:
    m = re.search(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M)
    assert m, "README.md has no fenced block"
    return [line.split("#", 1)[0].strip() for line in m.group(1).splitlines() if line.strip()]


def test_readme_is_at_most_170_lines():
    assert len(README.read_text().splitlines()) <= 170


def test_the_first_commands_are_the_ones_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    ci_commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    # .ci/run adds pip's own options (python -m pip install --quiet -e ".[dev]"): the same install
    assert any(re.search(r'\bpip install\b.* -e "\.\[dev\]"$', line) for line in ci_commands), \
        ".ci/run no longer installs with " + INSTALL
    assert "pytest -q" in ci_commands, ".ci/run no longer runs pytest -q"
    assert ". .venv/bin/activate" in ci_commands and "python3 -m venv .venv" in ci_commands

    install, test = first_fenced_block(README.read_text())[:2]
    assert install.startswith("python3 -m venv .venv && . .venv/bin/activate && ")
    assert INSTALL in install and install.endswith("asd-repro repro")
    assert [part.strip() for part in test.split("&&")] == [". .venv/bin/activate", "pytest -q"]


def test_the_results_block_is_generated_from_the_committed_summary():
    text = README.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert current_block(text) == results_block(SUMMARY), \
        "README.md's results table is stale: run python -m asd_repro.report.readme"
    assert main(["--check", "--readme", str(README), "--summary", str(SUMMARY)]) == 0


def test_the_block_shows_acc_mean_and_asr_median_in_the_tables_order():
    block = results_block(SUMMARY)
    rows = [line for line in block.splitlines() if line.startswith("| ")]
    assert rows[0] == "| Attack | No Defense | FP | NAD | ABL | DBD | ASD |"
    names = [row.split("|")[1].strip().rstrip(" †") for row in rows[1:]]
    assert names == ["BadNets", "Blend", "WaNet", "IAB", "Refool", "CLB", "Average"]
    with open(SUMMARY, newline="") as f:
        cell = next(r for r in csv.DictReader(f) if r["attack"] == "badnets" and r["defense"] == "none")
    assert rows[1].split("|")[2].strip() == f"{float(cell['acc_mean']):.1f} / {float(cell['asr_median']):.1f}"
    assert "[results/mini/table.md](results/mini/table.md)" in block


def _changed_summary(tmp_path: Path) -> Path:
    with open(SUMMARY, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    cell = next(r for r in rows if r["attack"] == "blend" and r["defense"] == "asd")
    cell["asr_median"] = str(float(cell["asr_median"]) + 12.3)
    out = tmp_path / "summary.csv"
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_a_changed_value_changes_the_block_and_check_fails_on_the_stale_readme(tmp_path, capsys):
    changed = _changed_summary(tmp_path)
    assert results_block(changed) != results_block(SUMMARY)
    stale = tmp_path / "README.md"
    shutil.copy(README, stale)
    before = stale.read_text()

    assert main(["--check", "--readme", str(stale), "--summary", str(changed)]) == 1
    assert "stale" in capsys.readouterr().err
    assert stale.read_text() == before  # --check changes nothing

    assert main(["--readme", str(stale), "--summary", str(changed)]) == 0  # rewrite
    assert current_block(stale.read_text()) == results_block(changed)
    assert main(["--check", "--readme", str(stale), "--summary", str(changed)]) == 0
    outside = before.split(BEGIN)[0], before.split(END)[1]
    assert (stale.read_text().split(BEGIN)[0], stale.read_text().split(END)[1]) == outside


def test_a_readme_without_markers_is_bad_input(tmp_path, capsys):
    bare = tmp_path / "README.md"
    bare.write_text("# nothing here\n")
    assert main(["--check", "--readme", str(bare), "--summary", str(SUMMARY)]) == 2
    assert "results:begin" in capsys.readouterr().err


def test_collapsed_and_missing_cells_are_marked_not_zero(tmp_path):
    with open(SUMMARY, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    next(r for r in rows if r["attack"] == "refool" and r["defense"] == "abl")["collapsed"] = "1"
    rows = [r for r in rows if not (r["attack"] == "clb" and r["defense"] == "dbd")]
    out = tmp_path / "summary.csv"
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    lines = {line.split("|")[1].strip().rstrip(" †"): line.split("|")[2:-1]
             for line in results_block(out).splitlines() if line.startswith("| ")}
    assert "collapsed 1/3" in lines["Refool"][3]
    assert lines["CLB"][4].strip() == ""


# ---- links ----------------------------------------------------------------------------------------------------

def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file (lower case, punctuation dropped, spaces as hyphens)."""
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


DOCS = [ROOT / "README.md", ROOT / "DEVIATIONS.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path):
    text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.S | re.M)
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"^\[[^\]]+\]:\s*(\S+)", text, re.M)
    bad = []
    for target in targets:
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            bad.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            bad.append(f"{target}: no such heading")
    assert not bad, f"{doc.relative_to(ROOT)}: " + "; ".join(bad)


def test_every_reference_style_link_is_defined():
    for doc in DOCS:
        text = doc.read_text()
        used = set(re.findall(r"\]\[([^\]]+)\]", text))
        defined = set(re.findall(r"^\[([^\]]+)\]:", text, re.M))
        assert used <= defined, f"{doc.relative_to(ROOT)}: undefined {sorted(used - defined)}"


def test_the_module_documents_the_columns_it_reads():
    for column in ("acc_mean", "asr_median", "acc_n", "collapsed", "attack_succeeded"):
        assert column in readme.__doc__
