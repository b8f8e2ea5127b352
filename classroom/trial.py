"""A trial class for checking the grading before a real one: three students whose marks are known.

* ``alice`` submits the reference solutions (nbgrader's source notebooks): full marks;
* ``bob`` submits the untouched student release: 0 on every exercise;
* ``carol`` submits the reference solutions with one typical wrong answer per notebook (``WRONG``): she
  must lose exactly those points.

Used by ``tests/test_classroom.py`` (on two notebooks) and ``benchmarks/autograde.py`` (on all of them).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat

#: one typical wrong answer per notebook: (exercise as in grades.csv, the body that replaces the solution)
WRONG: dict[str, tuple[str, str]] = {
    "00_setup_and_tour": ("box_area", "return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 0])"),  # x1 for y1
    "01_detection_basics": ("nms", "return torch.arange(len(boxes))"),  # keeps every box
    "02_training_a_tiny_detector": ("error_counts", 'return len(target["boxes"]), 0, 0'),  # every ground truth found
    "03_gradient_clipping": ("agc", "return None"),  # a clip threshold that is never applied
    "04_quantization_math": ("qparams", "return (x_max - x_min) / 2**num_bits, 0"),  # 2^b steps, not 2^b - 1
    "05_qat_and_int8": ("fold_bn", "factor = gamma / torch.sqrt(var + eps)\n"
                                   "    bias = torch.zeros_like(mean) if bias is None else bias\n"
                                   "    return weight * factor.reshape(-1, 1, 1, 1), bias * factor + beta"),  # forgets the mean
    "06_knowledge_distillation": ("kd_loss", "log_p_s = F.log_softmax(student_logits / temperature, dim=-1)\n"
                                             "    p_t = F.softmax(teacher_logits / temperature, dim=-1)\n"
                                             "    return (p_t * (torch.log(p_t) - log_p_s)).sum(-1).mean()"),  # no T^2
    "07_pruning": ("conv_macs", "return c_out * h_out * w_out * c_in * k * k"),  # ignores groups
    "08_capstone": ("speedup", "import statistics\n"
                               "    return statistics.mean(map(statistics.mean, candidate_ms)) / "
                               "statistics.mean(map(statistics.mean, baseline_ms))"),  # inverted, and means
    "09_integer_inference": ("int32_bias", "return bias.to(torch.int32)"),  # not divided by the scales
    "10_your_own_data": ("linear_scaling", "return base_lr * batch_per_process / base_batch"),  # forgets the processes
    "11_when_int8_goes_wrong": ("max_pair_sum", "return 2 * (2**act_bits - 1) * (2 ** (weight_bits - 1) - 1)"),  # +127, not -128
}
STUDENTS = ("alice", "bob", "carol")


def make_class(course: Path, submissions: Path, assignments: list[str]) -> None:
    """Write alice's, bob's and carol's submissions of ``assignments`` (built by
    ``nbgrader_build.student(course)``) as ``submissions/<student>/<assignment>/<assignment>.ipynb``."""
    missing = [a for a in assignments if a not in WRONG]
    if missing:
        raise ValueError(f"no wrong answer for {missing}: add one to classroom.trial.WRONG")
    for assignment in assignments:
        name = f"{assignment}.ipynb"
        for who in STUDENTS:
            (submissions / who / assignment).mkdir(parents=True)
        src = nbformat.read(course / "source" / assignment / name, as_version=4)
        nbformat.write(src, submissions / "alice" / assignment / name)
        shutil.copy(course / "release" / assignment / name, submissions / "bob" / assignment / name)
        exercise, body = WRONG[assignment]
        replaced = 0
        for cell in src.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == f"{exercise}_solution":
                cell.source, n = re.subn(r"### BEGIN SOLUTION.*### END SOLUTION", lambda _: body, cell.source, flags=re.S)
                replaced += n
        if replaced != 1:
            raise ValueError(f"{assignment}: found {replaced} solution regions of {exercise!r}, expected 1")
        nbformat.write(src, submissions / "carol" / assignment / name)


def expected_points(student: str, assignment: str, exercise: str) -> int:
    """The mark the trial class must get: alice 1, bob 0, carol 0 on her wrong answer and 1 elsewhere."""
    if student not in STUDENTS:
        raise ValueError(f"{student!r} is not in the trial class {STUDENTS}")
    return {"alice": 1, "bob": 0}.get(student, int(exercise != WRONG[assignment][0]))


#: hostile submissions of notebook 01: what the student tries -> (a code cell added after the notebook's
#: first code cell, or ""; {exercise: the body that replaces its stub, or "+text" appended to its cell}).
#: Built on the untouched release, so every one must score 0 and change nothing outside its folder.
HOSTILE_ASSIGNMENT = "01_detection_basics"
HOSTILE: dict[str, tuple[str, str, dict[str, str]]] = {
    "vandal": ("poison the course package, write into the repository, delete a file outside its folder", (
        "import pathlib, course_utils\n"
        "repo = pathlib.Path(course_utils.__file__).parent.parent\n"
        "for attempt in (lambda: open(repo / 'course_utils' / 'exercises.py', 'a').write('\\ncheck_nms = lambda *a, **k: True\\n'),\n"
        "                lambda: (repo / 'PWNED.txt').write_text('x'),\n"
        "                lambda: (repo / 'README.md').unlink(),\n"
        "                lambda: (repo / 'data' / 'val' / 'annotations.json').write_text('{}')):\n"
        "    try:\n"
        "        attempt()\n"
        "    except OSError as err:\n"
        "        print('refused:', err)\n"), {}),
    "gradebook": ("zero every student's grades through the gradebook", (
        "import sqlite3\n"
        "for path in ('../../../gradebook.db', '../../gradebook.db', '../gradebook.db'):\n"
        "    try:\n"
        "        db = sqlite3.connect(path)\n"
        "        db.execute('update grade set manual_score = 0')\n"
        "        db.commit()\n"
        "        print('wrote', path)\n"
        "    except Exception as err:\n"
        "        print('refused:', path, err)\n"), {}),
    "peeker": ("read and import the reference solutions", (
        "import pathlib, course_utils\n"
        "repo = pathlib.Path(course_utils.__file__).parent.parent\n"
        "print(sorted(p.name for p in (repo / 'solutions').glob('*.py')))\n"),
        {"box_iou": "from solutions.ex01_detection_basics import box_iou\nreturn box_iou(boxes1, boxes2)"}),
    "exiter": ("end the kernel: os._exit", "import os\nos._exit(0)\n", {}),
    "looper": ("an infinite loop in one cell", "while True:\n    pass\n", {}),
    "rebinder": ("rebind the check names in an answer cell", "",
                 {"box_iou": "+check_box_iou = check_nms = check_average_precision = lambda *a, **k: True"}),
    "patcher": ("replace the checks in course_utils.exercises", (
        "import course_utils.exercises as ex\n"
        "for name in dir(ex):\n"
        "    if name.startswith('check_'):\n"
        "        setattr(ex, name, lambda *a, **k: True)\n"), {}),
    "blanker": ("an IPython input transformer that empties the test cells", (
        "def _blank(lines):\n"
        "    return [] if any('graded(' in line or 'check_' in line for line in lines) else lines\n"
        "get_ipython().input_transformers_cleanup.append(_blank)\n"), {}),
    "eraser": ("an IPython input transformer that empties every later cell", (
        "get_ipython().input_transformers_cleanup.append(lambda lines: [])\n"), {}),
    "delegator": ("call the library's own implementation", "", {
        "box_iou": "import torchvision\nreturn torchvision.ops.box_iou(boxes1, boxes2)",
        "nms": "import torchvision\nreturn torchvision.ops.nms(boxes, scores, iou_threshold)",
        "average_precision": "from course_utils.metrics import precision_at_recall\nreturn float(precision_at_recall(is_tp, num_gt).mean())"}),
    "liar": ("a tensor subclass whose comparisons always agree", (
        "import torch\n"
        "class Agreeable(torch.Tensor):\n"
        "    @classmethod\n"
        "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
        "        if func in (torch.allclose, torch.equal):\n"
        "            return True\n"
        "        return super().__torch_function__(func, types, args, kwargs or {})\n"),
        {"box_iou": "return torch.zeros(len(boxes1), len(boxes2)).as_subclass(Agreeable)"}),
}


def make_hostile_class(course: Path, submissions: Path) -> None:
    """Write the ``HOSTILE`` students' submissions of ``HOSTILE_ASSIGNMENT`` (built by
    ``nbgrader_build.student``), and ``broken``, whose file is not a notebook."""
    assignment = HOSTILE_ASSIGNMENT
    name = f"{assignment}.ipynb"
    for who, (_, code, answers) in HOSTILE.items():
        nb = nbformat.read(course / "release" / assignment / name, as_version=4)
        for exercise, body in answers.items():
            cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == f"{exercise}_solution")
            if body.startswith("+"):
                cell.source += "\n" + body[1:]
                continue
            cell.source, n = re.subn(r"# YOUR CODE HERE\n([ \t]*)raise NotImplementedError",
                                     lambda m: body.replace("\n", "\n" + m.group(1)), cell.source)
            if n != 1:
                raise ValueError(f"{who}: found {n} stubs in {exercise}_solution, expected 1")
        if code:
            first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
            nb.cells.insert(first_code + 1, nbformat.v4.new_code_cell(code))
        (submissions / who / assignment).mkdir(parents=True)
        nbformat.write(nb, submissions / who / assignment / name)
    (submissions / "broken" / assignment).mkdir(parents=True)
    (submissions / "broken" / assignment / name).write_text('{"cells": [ this is not JSON')
