"""The class on a JupyterHub, end to end on 127.0.0.1 (``classroom.hub``, run by ``classroom.hub_trial``).

One instructor and three students, each a Unix account made for the test; a real JupyterHub (PyPI)
with its proxy (npm, ``scripts/ensure_hub_proxy.sh``) and JupyterHub's DummyAuthenticator. The
instructor releases notebook 01 through nbgrader's exchange; every student's server fetches it;
alice submits the reference answers, bob the untouched notebook, carol the reference answers after
the due date; the instructor collects, grades in the sandbox (``classroom.grading --collected``) and
releases feedback; every student fetches it. Grades: full, 0, full less the late penalty (0.25).
Also: what a student's account cannot reach, formgrader for the instructor only, only 127.0.0.1
listened on, and no process left once the hub stops. Needs root, bubblewrap and the proxy.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import pwd
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from classroom import course_settings, hub, hub_trial  # noqa: E402

ASSIGNMENT = "01_detection_basics"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(hub_trial.why_not()), reason=hub_trial.why_not() or "-")]


def test_the_hub_shares_the_folders_the_release_links():
    """hub.py keeps its own copy of the shared folders (importing nbgrader_build would load nbgrader into the hub):
    the two lists must not drift apart. The hub leaves out the package, which the course environment installs."""
    from classroom import nbgrader_build

    assert hub.SHARED_DIRS == tuple(d for d in nbgrader_build.SHARED_DIRS if d != "course_utils")


def test_hub_setup_refuses_an_unknown_account_and_keeps_a_teachers_edits(tmp_path):
    python, dist = Path(sys.executable), tmp_path / "dist"
    with pytest.raises(hub.HubError, match="no Unix account"):
        hub.setup(tmp_path / "hub", tmp_path / "course", python, "root", ["no-such-student-x"], dist)
    with pytest.raises(hub.HubError, match="inside the course repository"):  # students would see solutions/
        hub.setup(tmp_path / "hub", tmp_path / "course", python, "root", ["nobody"], ROOT / "build" / "distribution")
    config = hub.setup(tmp_path / "hub", tmp_path / "course", python, "root", ["nobody"], dist)
    text = config.read_text()
    assert 'bind_url = "http://127.0.0.1:' in text and "CourseSpawner" in text and "jupyterhub_idle_culler" in text
    assert f"distribution = {str(dist.resolve())!r}" in text
    config.write_text(text + "\n# the teacher's edit\n")
    hub.setup(tmp_path / "hub", tmp_path / "course", python, "root", ["nobody"], dist)
    assert config.read_text().endswith("# the teacher's edit\n")
    shell = (tmp_path / "hub" / "instructor.sh").read_text()
    assert f"export PATH={python.parent}:$PATH" in shell and "JUPYTER_CONFIG_PATH=" in shell
    page = json.loads((tmp_path / "hub" / "config" / "student" / "labconfig" / "page_config.json").read_text())
    assert page["disabledExtensions"]["@jupyter/nbgrader:formgrader"] is True
    assert (tmp_path / "hub" / "exchange").stat().st_mode & 0o7777 == 0o1777


def test_a_class_on_the_hub_end_to_end():
    with hub_trial.trial_hub(["alice", "bob", "carol"], [ASSIGNMENT], late_penalty=0.25) as trial:
        h, course = trial.client, trial.course
        alice, bob, carol = trial.students
        source_nb = nbformat.read(course / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)

        # The instructor imports the roster and releases the assignment through the exchange; every student fetches it.
        roster = course / "roster.csv"
        roster.write_text("id,first_name,last_name\n" + "".join(f"{s},{s.rsplit('-', 1)[1].title()},Trial\n" for s in trial.students))
        trial.teacher("nbgrader", "db", "student", "import", str(roster))
        assert all(s in trial.teacher("nbgrader", "db", "student", "list") for s in trial.students)
        trial.teacher("nbgrader", "release_assignment", ASSIGNMENT, "--force")
        for name in [trial.instructor, *trial.students]:
            h.start_server(name)
        form = {"assignment_id": ASSIGNMENT, "course_id": hub.COURSE_ID}
        notebook_path = f"api/contents/{ASSIGNMENT}/{ASSIGNMENT}.ipynb"
        for name in trial.students:
            status, body = h.user("POST", name, "assignments/fetch", form=form)
            assert status == 200, (name, status, body[:1000])
            status, body = h.user("GET", name, notebook_path)
            assert status == 200 and b"NotImplementedError" in body and b"BEGIN SOLUTION" not in body, (name, status)

        # alice answers and submits, bob submits the notebook untouched; the due date passes; carol answers late.
        answered = json.dumps({"type": "notebook", "format": "json", "content": source_nb}).encode()
        assert h.user("PUT", alice, notebook_path, body=answered)[0] == 200
        assert h.user("PUT", carol, notebook_path, body=answered)[0] == 200
        # alice's answers run in her home, as her (nbgrader's "Validate" button): the notebook finds ../data there.
        status, body = h.user("POST", alice, "assignments/validate", form={"path": f"{ASSIGNMENT}/{ASSIGNMENT}.ipynb"})
        result = json.loads(body)
        assert status == 200 and result == {"success": True, "value": {}}, result  # no failed or changed cell
        status, body = h.user("GET", alice, "api/contents/data/val")  # the distribution's data, linked into her home
        assert status == 200 and "annotations.json" in body.decode(), status
        for name in (alice, bob):
            status, body = h.user("POST", name, "assignments/submit", form=form)
            assert status == 200 and b'"success": false' not in body, (name, body[:1000])
        due = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=1)
        settings_file = course / course_settings.FILE
        settings_file.write_text(settings_file.read_text().replace(
            f'# {ASSIGNMENT} = "2027-02-15 23:59"', f'{ASSIGNMENT} = "{due.strftime("%Y-%m-%d %H:%M:%S")}"'))
        time.sleep(2.5)
        status, body = h.user("POST", carol, "assignments/submit", form=form)
        assert status == 200 and b'"success": false' not in body, body[:1000]

        # The instructor collects, grades in the sandbox and releases feedback; every student fetches it.
        trial.teacher("nbgrader", "collect", ASSIGNMENT)
        assert sorted(p.name for p in (course / "submitted").iterdir()) == sorted(trial.students)
        trial.teacher("classroom.grading", "--collected", "--course", str(course), "--jobs", "2")
        trial.teacher("classroom.feedback", "--course", str(course), ASSIGNMENT)
        trial.teacher("nbgrader", "release_feedback", ASSIGNMENT)
        with open(course / "grades.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["notebook"] == ASSIGNMENT]
        points = {name: sum(float(r["points"]) for r in rows if r["student"] == name) for name in trial.students}
        full = sum(float(r["max_points"]) for r in rows if r["student"] == alice)
        assert full == 3 and points == {alice: full, bob: 0.0, carol: 0.75 * full}, points
        assert all("late by" in r["reason"] and "25% off" in r["reason"] for r in rows if r["student"] == carol)
        for name in trial.students:
            status, body = h.user("POST", name, "assignments/fetch_feedback", form=form)
            assert status == 200, (name, status, body[:500])
            status, body = h.user("GET", name, f"api/contents/{ASSIGNMENT}/feedback")
            stamps = [e["path"] for e in json.loads(body)["content"]]
            assert status == 200 and len(stamps) == 1, (name, status, stamps)
            status, body = h.user("GET", name, f"api/contents/{stamps[0]}/{ASSIGNMENT}.html")
            page = json.loads(body)["content"]
            # nbgrader's page agrees with grades.csv, late penalty included
            assert status == 200 and f"Score: {points[name]} / {full})" in page, (name, points[name])
            assert ("Late submission penalty (Score: -0.75)" in page) == (name == carol), name

        # What a student's account cannot reach: another student's work, the exchange's submissions, the
        # teacher's gradebook, the course environment (for writing).
        for what, command in [
                ("another student's work", ["cat", str(trial.home(bob) / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")]),
                ("the submissions in the exchange", ["ls", str(trial.hub_dir / "exchange" / hub.COURSE_ID / "inbound")]),
                ("the gradebook", ["cat", str(course / "gradebook.db")]),
                ("the course environment", ["touch", str(Path(sys.prefix) / "written-by-a-student")])]:
            done = subprocess.run(["runuser", "-u", alice, "--", *command], capture_output=True, text=True)
            assert done.returncode != 0 and "denied" in done.stderr, (what, done.stdout[:300], done.stderr[:300])

        # formgrader is the instructor's only; every socket the hub and the servers listen on is 127.0.0.1's.
        assert h.user("GET", trial.instructor, "formgrader")[0] in (200, 302)
        assert h.user("GET", alice, "formgrader")[0] == 404
        uids = {pwd.getpwnam(n).pw_uid for n in [trial.instructor, *trial.students]}
        ours = [(a, p) for a, p, uid in hub_trial.listening() if uid in uids or p in trial.ports]
        assert len(ours) >= 3 + 4, ours  # the hub, its API, the proxy's API and each user's server
        assert all(a == "127.0.0.1" for a, _ in ours), ours
    assert not trial.left_after_stop, f"processes left running after the hub stopped: {trial.left_after_stop}"
    assert not trial.ports_after_stop, f"still listening after the hub stopped: {trial.ports_after_stop}"
