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
