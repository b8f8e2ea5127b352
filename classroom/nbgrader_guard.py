"""Two nbgrader preprocessors that make an exercise's point depend on its check having run to the end,
and a late-penalty plugin (:class:`LateFraction`).

nbgrader scores a test cell by its output: no error means full points. So a test cell that never
ran its check -- emptied by an IPython input transformer, or skipped -- would score. Around
``Execute`` in ``nbgrader autograde`` (``nbgrader_build.CONFIG`` lists them):

* :class:`InsertToken` replaces ``TOKEN`` in every test cell with a token drawn
  afresh for this run (``secrets.token_hex``), and puts before each test cell a cell that gives
  IPython its own input transformers back (``course_utils.exercise_grading.reset_ipython``), so a
  transformer registered by the learner's code cannot rewrite the test cell;
* :class:`RequireToken` then demands the line ``graded <check> <token>`` that
  ``course_utils.exercise_grading.graded`` prints on success in each such cell's output; a cell
  without it gets an error output (``NotGraded``), which nbgrader scores 0. It removes the reset
  cells again, so the graded notebook has the learner's cells only.
"""

from __future__ import annotations

import re
import secrets

from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_output

from nbgrader.plugins import LateSubmissionPlugin
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Float

TOKEN = "__GRADING_TOKEN__"  # the placeholder in the test cells nbgrader_build writes
RESET_SOURCE = '_ = __import__("course_utils.exercise_grading").exercise_grading.reset_ipython()'
_RESET_MARK = "classroom_reset"  # the metadata key of the cells InsertToken adds
_GRADED = re.compile(r'graded\("(check_\w+)", \w+, "' + TOKEN + '"\\)')


def _is_test_cell(cell: NotebookNode) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and meta.get("grade", False) and not meta.get("solution", False)


class InsertToken(NbGraderPreprocessor):
    """Put a fresh random token into every test cell that calls ``graded``."""

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        token = secrets.token_hex(8)
        expected = {}
        cells = []
        for cell in nb.cells:
            if _is_test_cell(cell) and (match := _GRADED.search(cell.source)):
                expected[cell.metadata["nbgrader"]["grade_id"]] = f"graded {match.group(1)} {token}"
                cell.source = cell.source.replace(TOKEN, token)
                cells.append(new_code_cell(RESET_SOURCE, metadata={_RESET_MARK: True}))
            cells.append(cell)
        nb.cells = cells
        resources["classroom_expected_lines"] = expected
        return nb, resources


class RequireToken(NbGraderPreprocessor):
    """Score 0 (an error output) every test cell whose output lacks its ``graded ... <token>`` line."""

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        expected = resources.get("classroom_expected_lines", {})
        nb.cells = [cell for cell in nb.cells if not cell.metadata.get(_RESET_MARK)]
        for cell in nb.cells:
            line = expected.get(cell.metadata.get("nbgrader", {}).get("grade_id"))
            if line is None or not _is_test_cell(cell):
                continue
            printed = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
            if line not in printed.splitlines() and not any(o.get("output_type") == "error" for o in cell.outputs):
                cell.outputs.append(new_output(
                    "error", ename="NotGraded",
                    evalue="this test cell did not run its check to the end (it was emptied, skipped or altered)",
                    traceback=["NotGraded: this test cell did not run its check to the end (it was emptied, skipped or altered)"]))
        return nb, resources


class LateFraction(LateSubmissionPlugin):
    """nbgrader's late penalty as a share of the points: a late notebook loses ``fraction`` of its
    score (course.toml's ``late_penalty = 0.25``, say), however late it is."""

    fraction = Float(0.0, min=0.0, max=1.0, help="the share of a late notebook's score taken off").tag(config=True)

    def late_submission_penalty(self, student_id: str, score: float, total_seconds_late: float) -> float | None:
        return score * self.fraction if total_seconds_late > 0 else None
