"""A trial class on a real JupyterHub on 127.0.0.1: what ``tests/test_hub.py`` and
``benchmarks/hub_load.py`` run (``classroom.hub``'s configuration, JupyterHub's DummyAuthenticator).

:func:`trial_hub` makes a Unix account per user (homes only their owner can enter), the
instructor's course folder (``make student``'s, with ``course.toml``), the student distribution
(``make release``), the hub's folder (``hub.setup``), starts JupyterHub with a service token for the
test, and on leaving stops it, checks nothing is left running and removes the accounts.

Every user runs this checkout's environment, as a class shares one course environment; a folder above
it that other accounts cannot enter (``/root``, where pyenv keeps Python) is opened for entering only
(``o+x``, not listing) while the hub runs and closed again after, and the checkout itself for
listing too (``o+rx``: the instructor's tools import ``classroom`` from it). Needs root.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from . import course_settings, distribution, hub, sandbox
from . import nbgrader_build as nbb

PREFIX = "edc-trial-"  # every account this module makes starts with it
PYTHON = Path(sys.executable)  # the course environment every user runs


class TrialError(RuntimeError):
    """The trial hub could not be set up or did not behave; the message says what and where to look."""


def why_not() -> str:
    """Empty if a trial hub can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root: it creates Unix accounts for the hub's users"
    for tool in ("useradd", "userdel", "runuser", "pkill", "pgrep"):
        if not shutil.which(tool):
            return f"{tool} not found"
    if not hub.PROXY.exists():
        return "JupyterHub's proxy is missing: bash scripts/ensure_hub_proxy.sh"
    try:
        sandbox.bwrap()
    except sandbox.SandboxUnavailable as err:
        return str(err)
    return ""


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 just now."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def open_for_entering(paths: list[Path], listed: list[Path] = ()) -> dict[Path, int]:
    """Add o+x to every folder at or above ``paths`` that lacks it, and o+rx to the folders ``listed``
    (Python lists a folder on its import path to find a module in it); returns the modes to put back."""
    changed: dict[Path, int] = {}
    for path in [*paths, *listed]:
        for folder in [path, *path.parents]:
            mode = folder.stat().st_mode & 0o7777
            want = 0o005 if folder in listed else 0o001
            if folder.is_dir() and mode & want != want:
                changed.setdefault(folder, mode)
                folder.chmod(mode | want)
    return changed


def as_user(user: str, argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    """Run ``argv`` as ``user`` (``runuser``) with exactly ``env``; returns stdout or raises with the output."""
    done = subprocess.run(["runuser", "-u", user, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()], *argv],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise TrialError(f"{user}: {' '.join(argv)} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def stop_process_group(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM the process group ``proc`` leads (started with ``start_new_session=True``), SIGKILL it after ``timeout``."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def listening() -> list[tuple[str, int, int]]:
    """(address, port, uid) of every listening TCP socket (IPv4 and IPv6) on this machine."""
    found = []
    for table, ipv4 in (("/proc/net/tcp", True), ("/proc/net/tcp6", False)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            addr_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(addr_hex)
            if ipv4:
                addr = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:
                addr = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
            found.append((addr, int(port_hex, 16), int(fields[7])))
    return found


@dataclass
class HubClient:
    """A running hub and its service token: ``api`` talks to the hub, ``user`` to a user's server."""

    url: str
    token: str

    def request(self, method: str, url: str, body: bytes | None = None, form: dict | None = None,
                timeout: float = 600) -> tuple[int, bytes]:
        content_type = "application/json"
        if form is not None:
            body, content_type = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
        req = urllib.request.Request(url, data=body, method=method,
                                     headers={"Authorization": f"token {self.token}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def api(self, method: str, path: str, **kw) -> tuple[int, bytes]:
        return self.request(method, f"{self.url}/hub/api/{path}", **kw)

    def user(self, method: str, name: str, path: str, **kw) -> tuple[int, bytes]:
        return self.request(method, f"{self.url}/user/{name}/{urllib.parse.quote(path)}", **kw)

    def start_server(self, name: str, timeout_s: float = 120) -> None:
        status, body = self.api("POST", f"users/{name}/server")
        if status not in (201, 202):
            raise TrialError(f"starting {name}'s server: HTTP {status} {body[:300]!r}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = json.loads(self.api("GET", f"users/{name}")[1])
            if info.get("servers", {}).get("", {}).get("ready"):
                return
            time.sleep(0.5)
        raise TrialError(f"{name}'s server did not start in {timeout_s:.0f} s")


@dataclass
class TrialHub:
    """What :func:`trial_hub` set up: folders, accounts, ports and the client."""

    base: Path
    instructor: str
    students: list[str]
    course: Path
    hub_dir: Path
    distribution: Path
    client: HubClient
    ports: list[int]
    teacher_env: dict[str, str] = field(default_factory=dict)
    #: filled in when the hub has stopped (before the accounts go): their processes still running, and
    #: the hub's ports still listened on -- both should be empty
    left_after_stop: str = ""
    ports_after_stop: list[int] = field(default_factory=list)

    def home(self, name: str) -> Path:
        return Path(pwd.getpwnam(name).pw_dir)

    def teacher(self, *argv: str, timeout: float = 900) -> str:
        """Run ``python -m ARGV...`` as the instructor in the course folder (nbgrader, classroom.grading, ...)."""
        return as_user(self.instructor, [str(PYTHON), "-m", *argv], self.course, self.teacher_env, timeout)


def _remove_accounts(names: list[str]) -> None:
    for name in names:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", "-r", name], capture_output=True)


@contextlib.contextmanager
def trial_hub(students: list[str], assignments: list[str], late_penalty: float | str = "none",
              instructor: str = "teacher") -> Iterator[TrialHub]:
    """A running hub for ``instructor`` and ``students`` (names get :data:`PREFIX`), with the course
    folder built for ``assignments``; everything is stopped and removed on leaving."""
    if (why := why_not()):
        raise TrialError(why)
    instructor, students = PREFIX + instructor, [PREFIX + s for s in students]
    names = [instructor, *students]
    base = Path(tempfile.mkdtemp(prefix="course-hub-", dir="/tmp"))
    base.chmod(0o755)
    _remove_accounts(names)  # an earlier run that was killed may have left them
    (base / "home").mkdir(mode=0o755)
    reopened: dict[Path, int] = {}
    proc = log = trial = None
    try:
        for name in names:
            subprocess.run(["useradd", "-m", "-d", str(base / "home" / name), "-s", "/bin/bash", name], check=True,
                           capture_output=True)
            (base / "home" / name).chmod(0o700)  # only its owner enters a home
        course = base / "home" / instructor / "course"
        dist = distribution.build(base / "distribution", course=base / "build-course", only=assignments)
        nbb.student(course, assignments)
        settings = course / course_settings.FILE
        settings.write_text(settings.read_text().replace('late_penalty = "none"', f"late_penalty = {json.dumps(late_penalty)}"))
        subprocess.run(["chown", "-R", f"{instructor}:{instructor}", str(course)], check=True)
        ports = free_ports(3)
        hub_dir = base / "hub"
        config = hub.setup(hub_dir, course, PYTHON, instructor, students, dist, port=ports[0], hub_port=ports[1],
                           api_port=ports[2])
        token = secrets.token_hex(32)
        trial_config = hub_dir / "trial_config.py"
        trial_config.write_text(  # the students' course package is the distribution's, as in a class
            f"load_subconfig({str(config)!r})\n"
            f"c.Spawner.environment = {{'PYTHONPATH': {str(dist)!r}}}\n"
            f"c.JupyterHub.services.append({{'name': 'course-trial', 'api_token': {token!r}}})\n"
            "c.JupyterHub.load_roles.append({'name': 'admin', 'services': ['course-trial']})\n")
        reopened = open_for_entering([PYTHON.resolve(), Path(sys.prefix), hub.PROXY], listed=[nbb.REPO])
        log = open(base / "hub.log", "wb")
        proc = subprocess.Popen([str(PYTHON), "-m", "jupyterhub", "-f", str(trial_config)], cwd=hub_dir,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = HubClient(f"http://127.0.0.1:{ports[0]}", token)
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.api("GET", "", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise TrialError(f"the hub did not start; its log:\n{(base / 'hub.log').read_text()[-4000:]}")
            time.sleep(0.5)
        teacher_env = {"PATH": f"{PYTHON.parent}:/usr/bin:/bin", "HOME": str(base / "home" / instructor),
                       "PYTHONPATH": str(nbb.REPO), "JUPYTER_CONFIG_PATH": str(hub_dir / "config" / "instructor"),
                       "LANG": "C.UTF-8"}
        trial = TrialHub(base, instructor, students, course, hub_dir, dist, client, ports, teacher_env)
        yield trial
    finally:
        if proc is not None:
            stop_process_group(proc)
            if trial is not None:
                time.sleep(1)
                trial.left_after_stop = left_running(names)
                trial.ports_after_stop = sorted({p for _, p, _ in listening() if p in trial.ports})
        if log is not None:
            log.close()
        for folder, mode in reopened.items():
            folder.chmod(mode)
        _remove_accounts(names)
        shutil.rmtree(base, ignore_errors=True)


def left_running(names: list[str]) -> str:
    """The processes of these accounts still running (``pgrep -a``), empty if none."""
    return subprocess.run(["pgrep", "-a", "-u", ",".join(names)], capture_output=True, text=True).stdout.strip()
