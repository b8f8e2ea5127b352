"""A class's settings: roster, due dates, late penalty, limits — one file the teacher edits.

``<course>/course.toml`` is written once, with every setting commented, the first time a course folder
is used; after that the tooling only reads it (``make student`` and ``make grade`` never overwrite
it). Everything nbgrader needs is derived from it (``nbgrader_config.py`` is regenerated each run).
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .sandbox import Limits

FILE = "course.toml"
LATE_PENALTIES = ("none", "zero")

TEMPLATE = """\
# Settings of this class. `make student`, `make grade` and `make feedback` read this file and never
# overwrite it: edit it freely. Times are UTC unless they name an offset.

[grading]
# Parallel graders, one BLAS thread each; 0 = one per CPU core.
jobs = 0
# What a late submission loses: "none" (lateness is only recorded), "zero" (all of it), or a
# fraction such as 0.25 (a quarter of each late notebook's points).
late_penalty = "none"

[limits]
# Per student notebook. A cell running longer than cell_timeout_s is interrupted; the whole notebook
# is stopped after notebook_timeout_s; memory_mb caps each process's address space (PyTorch needs
# about 4096); cpu_s caps the CPU seconds of the student's kernel.
cell_timeout_s = 300
notebook_timeout_s = 900
cpu_s = 1200
memory_mb = 8192

[roster]
# One line per student: id = "First Last". With a roster, submissions from ids not listed here
# are reported and not graded. Without one, every submitting folder is a student.
# alice = "Alice Liddell"

[due]
# One line per assignment: name = "YYYY-MM-DD HH:MM" (UTC). Submissions carry nbgrader's
# timestamp.txt; a later timestamp is late.
# 01_detection_basics = "2027-02-15 23:59"
"""


class SettingsError(ValueError):
    """A value in course.toml that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class CourseSettings:
    """The parsed ``course.toml``: see :data:`TEMPLATE` for the meaning of each field."""

    jobs: int = 0
    late_penalty: str | float = "none"  # "none", "zero" or the fraction of a late notebook's points taken off
    limits: Limits = field(default_factory=Limits)
    roster: dict[str, str] = field(default_factory=dict)
    due: dict[str, dt.datetime] = field(default_factory=dict)

    @property
    def late_kept(self) -> float:
        """The fraction of a late notebook's points it keeps: 1 ("none"), 0 ("zero") or 1 - the fraction."""
        if isinstance(self.late_penalty, str):
            return {"none": 1.0, "zero": 0.0}[self.late_penalty]
        return 1.0 - self.late_penalty

    @property
    def workers(self) -> int:
        """``jobs``, with 0 meaning one per CPU core available to this process."""
        return self.jobs or len(os.sched_getaffinity(0))


def ensure(course: Path) -> Path:
    """Create ``course/course.toml`` from the template if it does not exist; return its path."""
    path = Path(course) / FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(TEMPLATE)
    return path


def load(course: Path) -> CourseSettings:
    """Read ``course/course.toml`` (created first if missing) and check every value."""
    path = ensure(course)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SettingsError(f"{path}: not valid TOML ({err}); fix the line, or delete the file to get the template back") from None
    unknown = set(raw) - {"grading", "limits", "roster", "due"}
    if unknown:
        raise SettingsError(f"{path}: unknown section(s) {sorted(unknown)}; the sections are grading, limits, roster, due")
    grading = raw.get("grading", {})
    jobs = grading.get("jobs", 0)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 0:
        raise SettingsError(f"{path}: [grading] jobs = {jobs!r}; give a whole number >= 0 (0: one per core)")
    late = grading.get("late_penalty", "none")
    fraction = isinstance(late, (int, float)) and not isinstance(late, bool) and 0 < late < 1
    if late not in LATE_PENALTIES and not fraction:
        raise SettingsError(f"{path}: [grading] late_penalty = {late!r}; choose one of {LATE_PENALTIES} "
                            "or a fraction of the notebook's points between 0 and 1, such as 0.25")
    late = float(late) if fraction else late
    try:
        limits = Limits(**raw.get("limits", {}))
    except (TypeError, ValueError) as err:
        raise SettingsError(f"{path}: [limits] {err}") from None
    roster = raw.get("roster", {})
    bad = {k: v for k, v in roster.items() if not isinstance(v, str)}
    if bad:
        raise SettingsError(f"{path}: [roster] {bad}: write each student as id = \"First Last\"")
    due = {}
    for name, value in raw.get("due", {}).items():
        due[name] = _parse_time(value, f"{path}: [due] {name}")
    return CourseSettings(jobs=jobs, late_penalty=late, limits=limits, roster=dict(roster), due=due)


def _parse_time(value: object, where: str) -> dt.datetime:
    """A due date as a timezone-aware UTC datetime (naive times are UTC)."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise SettingsError(f"{where} = {value!r}: write a date and time like \"2027-02-15 23:59\"") from None
    else:
        raise SettingsError(f"{where} = {value!r}: write a date and time like \"2027-02-15 23:59\"")
    return moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment.astimezone(dt.timezone.utc)
