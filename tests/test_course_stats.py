"""The core path of every notebook fits its budget; deep dives come last (``classroom.course_stats``).

A notebook's core path is everything before its ``## Going deeper`` cell. The course's core path
must stay under 13,000 words of prose, split into per-notebook budgets below, with no core markdown
cell over 200 words and every checked exercise in the core.
"""

from __future__ import annotations

import nbformat
import pytest

from classroom.course_stats import CELL_WORD_LIMIT, CORE_WORD_BUDGET, ROOT, course_stats, notebook_stats

BUDGET = {"00_setup_and_tour": 700, "01_detection_basics": 1000, "02_training_a_tiny_detector": 1200,
          "03_gradient_clipping": 1100, "04_quantization_math": 1200, "05_qat_and_int8": 1200,
          "06_knowledge_distillation": 1200, "07_pruning": 1200, "08_capstone": 1000, "09_integer_inference": 1200,
          "10_your_own_data": 1000, "11_when_int8_goes_wrong": 1000}
STATS = course_stats()


def test_budgets_cover_every_notebook_and_sum_to_the_course_budget():
    assert set(BUDGET) == set(STATS) and sum(BUDGET.values()) <= CORE_WORD_BUDGET


def test_the_course_core_path_fits_its_budget():
    total = sum(s["core_words"] for s in STATS.values())
    assert total <= CORE_WORD_BUDGET, f"the course's core path is {total:,} words, budget {CORE_WORD_BUDGET:,}"


@pytest.mark.parametrize("name", list(BUDGET))
def test_core_path_fits_its_budget(name):
    s = STATS[name]
    assert s["has_deep_dives"], f"{name}: no '## Going deeper' cell"
    assert s["core_words"] <= BUDGET[name], f"{name}: core path {s['core_words']} words, budget {BUDGET[name]}"
    assert s["longest_core_cell"] <= CELL_WORD_LIMIT, f"{name}: a core markdown cell has {s['longest_core_cell']} words"
    assert s["checked_exercises_in_deep_dives"] == 0, f"{name}: checked exercises belong to the core path"


def test_counts_split_at_the_going_deeper_cell(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Title\n\none two three"),
        nbformat.v4.new_code_cell("x = 1\n# a comment\n\ncheck_box_area(f)"),
        nbformat.v4.new_markdown_cell("## Going deeper\n\nfour five"),
        nbformat.v4.new_code_cell("y = 2\nz = 3"),
        nbformat.v4.new_markdown_cell("### Kernels\n" + "w " * 250),
    ])
    path = tmp_path / "99_demo.ipynb"
    nbformat.write(nb, path)
    s = notebook_stats(path)
    assert (s["core_words"], s["longest_core_cell"], s["core_code_lines"], s["checked_exercises"]) == (5, 5, 2, 1)
    assert (s["deep_words"], s["deep_code_lines"], s["has_deep_dives"]) == (5 + 252, 2, True)
    nb.cells[2].source = "## Going further"  # not the marker: everything is core
    nbformat.write(nb, path)
    assert not notebook_stats(path)["has_deep_dives"] and notebook_stats(path)["longest_core_cell"] == 252


def test_the_script_prints_a_table(capsys):
    from classroom.course_stats import main

    main([])
    out = capsys.readouterr().out
    assert "core words" in out and all(name in out for name in STATS) and str(ROOT) not in out


@pytest.mark.parametrize("name", list(BUDGET))
def test_the_header_states_the_guided_time_derived_from_the_core_path(name):
    """Guided time = core words / 80 + core code lines / 7 + 8 per checked exercise, in 5-minute steps (course_stats)."""
    import re

    cells = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells[:3]
    header = "".join(c.source for c in cells if c.cell_type == "markdown")
    stated = int(re.search(r"Time: about (\d+) minutes", header).group(1))
    assert stated == STATS[name]["guided_minutes"], (
        f"{name}: the header says {stated} min, its core path needs {STATS[name]['guided_minutes']} "
        "(python -m classroom.course_stats); update the header, notebook 00's table and docs/teaching.md")


def test_guided_minutes_formula():
    from classroom.course_stats import guided_minutes

    assert guided_minutes({"core_words": 800, "core_code_lines": 70, "checked_exercises": 2}) == 35  # 10 + 10 + 16
    assert guided_minutes({"core_words": 80, "core_code_lines": 0, "checked_exercises": 0}) == 10  # at least 10
    assert guided_minutes({"core_words": 1200, "core_code_lines": 140, "checked_exercises": 2}) == 50  # 15 + 20 + 16 = 51
