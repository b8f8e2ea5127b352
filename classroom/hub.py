"""The class on a JupyterHub: one hub, one read-only course environment, nbgrader's exchange.

    python -m classroom.hub setup HUB_DIR --course COURSE --python ENV/bin/python --distribution DIST \\
        --instructor teacher --students alice bob carol        # writes HUB_DIR (nothing overwritten)
    sudo ENV/bin/jupyterhub -f HUB_DIR/jupyterhub_config.py       # starts each user's server as that user

A class of 60 shares a machine: every student has a Unix account (created by your university's
login, or ``useradd``), a home folder only they can read, and a Jupyter server started by the hub
as that account (:class:`CourseSpawner`, JupyterHub's ``LocalProcessSpawner`` with the course's
limits). The course environment (``python -m venv /opt/course-env``, then ``pip install`` of
``make release``'s distribution) belongs to root: every user runs it, nobody can change it. What
``setup`` writes:

    HUB_DIR/jupyterhub_config.py        the hub, on 127.0.0.1 (yours to edit; see "Login" in it)
    HUB_DIR/exchange/                   nbgrader's exchange: release, fetch, submit, collect, feedback
    HUB_DIR/config/student/             a student's Jupyter: the exchange and course id for nbgrader's
                                        assignment list; the formgrader, "create assignment" and the
                                        extension manager switched off
    HUB_DIR/config/instructor/          the instructor's: the same exchange, the course folder, formgrader
    HUB_DIR/instructor.sh               `source` it in the instructor's shell: nbgrader and classroom/ ready

Per user: one BLAS/OpenMP thread per kernel (with torch's default, every kernel starts a thread
per core and a shared node is oversubscribed many times over),
``mem_limit`` as the address-space limit of each of the user's processes (LocalProcessSpawner
enforces no memory limit of its own; a hub with cgroups, such as SystemdSpawner, can replace it),
idle kernels shut down after ``cull_kernel_minutes`` and idle servers stopped by
jupyterhub-idle-culler after ``cull_server_minutes``.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import resource
import sys
from pathlib import Path

from . import course_settings

COURSE_ID = "efficient-detection"  # nbgrader_build's CourseDirectory.course_id
REPO = Path(__file__).resolve().parent.parent
PROXY = REPO / "build" / "hub-proxy" / "node_modules" / ".bin" / "configurable-http-proxy"  # scripts/ensure_hub_proxy.sh

# nbgrader's lab extensions a student has no use for, and JupyterLab's extension manager (installing
# into the shared environment must not be offered).
STUDENT_HIDDEN_LAB = ("@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment", "@jupyter/nbgrader:course-list",
                      "@jupyterlab/extensionmanager-extension")
SHARED_DIRS = ("data", "benchmarks", "docs")  # what the notebooks reach with ../ (nbgrader_build.SHARED_DIRS less the package)
STUDENT_OFF_SERVER = ("nbgrader.server_extensions.formgrader", "nbgrader.server_extensions.course_list")

INSTRUCTOR_SH = """\
# source this file -- the instructor's shell on the hub: the course environment's
# nbgrader, the course repository's classroom/ tools, and nbgrader's exchange. Then: cd {course}
export PATH={bin}:$PATH
export PYTHONPATH={repo}${{PYTHONPATH:+:$PYTHONPATH}}
export JUPYTER_CONFIG_PATH={config}
"""

CONFIG = '''"""JupyterHub for the Efficient Detection Course, written once by `python -m classroom.hub setup`:
yours to edit, never overwritten. Start it as root: sudo {python_bin}/jupyterhub -f {hub_dir}/jupyterhub_config.py"""
import sys

sys.path.insert(0, {repo!r})  # classroom.hub.CourseSpawner
c = get_config()  # noqa: F821
HUB_DIR = {hub_dir!r}

# Network: everything on this machine only. To open the hub to a class, put it behind your
# university's HTTPS front end and login first.
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.ConfigurableHTTPProxy.pid_file = HUB_DIR + "/proxy.pid"
c.JupyterHub.db_url = "sqlite:///" + HUB_DIR + "/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = HUB_DIR + "/jupyterhub_cookie_secret"
c.JupyterHub.cleanup_servers = True  # stopping the hub stops every user's server

# Login: JupyterHub's DummyAuthenticator accepts any password -- for trying the hub on 127.0.0.1
# only. Replace it with your university's (jupyterhub-ltiauthenticator, oauthenticator, ldapauthenticator).
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {users!r}
c.Authenticator.admin_users = {instructors!r}

# Each user's server: their Unix account, the shared course environment, the course's limits.
c.JupyterHub.spawner_class = "classroom.hub.CourseSpawner"
c.CourseSpawner.instructors = {instructors_list!r}
c.CourseSpawner.config_root = HUB_DIR + "/config"
c.CourseSpawner.distribution = {distribution!r}  # make release's folder: data/, benchmarks/, docs/ linked into each home
c.CourseSpawner.threads = {threads}
c.Spawner.cmd = [{python!r}, "-m", "jupyterhub.singleuser"]
c.Spawner.default_url = "/lab"
c.Spawner.mem_limit = "{memory_mb}M"
c.Spawner.environment = {{}}
c.Spawner.args = ["--MappingKernelManager.cull_idle_timeout={cull_kernel_s}", "--MappingKernelManager.cull_interval=60"]

# Servers idle for {cull_server_s} s are stopped (their files stay).
c.JupyterHub.services = [{{"name": "idle-culler",
                          "command": [{python!r}, "-m", "jupyterhub_idle_culler", "--timeout={cull_server_s}"]}}]
c.JupyterHub.load_roles = [{{"name": "idle-culler", "services": ["idle-culler"],
                            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]}}]
'''


try:  # the hub imports this module; the rest of the course does not need JupyterHub installed
    from jupyterhub.spawner import LocalProcessSpawner as _Base
    from traitlets import Integer, List, Unicode
except ImportError:  # pragma: no cover - setup and the tests of it work without JupyterHub
    _Base = None


if _Base is not None:
    class CourseSpawner(_Base):
        """``LocalProcessSpawner`` (each server as its user's Unix account) with the course's settings:
        the user's role decides their Jupyter configuration (``config_root/student`` or
        ``config_root/instructor``, first on ``JUPYTER_CONFIG_PATH``), ``threads`` BLAS/OpenMP threads per
        kernel, and ``mem_limit`` as the address-space limit (``RLIMIT_AS``) of each of the user's processes."""

        instructors = List(Unicode(), help="the users who get the instructor's configuration (formgrader)").tag(config=True)
        distribution = Unicode(help="the student distribution (make release): its data/, benchmarks/ and docs/ "
                                    "are linked into each home, where the notebooks look for them (../data)").tag(config=True)
        config_root = Unicode(help="the folder with student/ and instructor/ Jupyter configurations").tag(config=True)
        threads = Integer(1, help="BLAS/OpenMP threads per kernel").tag(config=True)

        def role(self) -> str:
            return "instructor" if self.user.name in self.instructors else "student"

        def get_env(self) -> dict[str, str]:
            env = super().get_env()
            threads = str(self.threads)
            config_path = [os.path.join(self.config_root, self.role()), env.get("JUPYTER_CONFIG_PATH", "")]
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads,
                       GOMP_SPINCOUNT="1000", JUPYTER_CONFIG_PATH=os.pathsep.join(p for p in config_path if p))
            return env

        def make_preexec_fn(self, name: str):
            become_user = super().make_preexec_fn(name)
            limit = int(self.mem_limit or 0)
            shared = [os.path.join(self.distribution, d) for d in SHARED_DIRS] if self.distribution else []

            def preexec() -> None:
                if limit:
                    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
                become_user()  # now the user, in their home
                for target in shared:  # a fetched notebook sits in ~/<assignment>/ and reads ../data
                    link = os.path.basename(target)
                    try:
                        if not os.path.lexists(link):  # a folder of the student's own by that name stays
                            os.symlink(target, link)
                    except OSError:
                        pass  # the server starts all the same; the notebook will say it misses ../data

            return preexec


class HubError(ValueError):
    """A hub that cannot be set up as asked; the message names the value and the fix."""


def _write_once(path: Path, text: str) -> bool:
    """Write ``path`` unless it exists (a teacher's edits are kept); True if written."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def nbgrader_config(exchange: Path, cell_timeout_s: int, course: Path | None = None) -> str:
    """The ``nbgrader_config.py`` of a student (``course`` None) or of the instructor: the exchange,
    the course id, and a cell time limit for nbgrader's "Validate" button (course.toml's)."""
    lines = ['c = get_config()  # noqa: F821', f'c.Exchange.root = {str(exchange)!r}',
             f'c.CourseDirectory.course_id = {COURSE_ID!r}', f'c.Execute.timeout = {cell_timeout_s}']
    if course is not None:
        lines.append(f'c.CourseDirectory.root = {str(course)!r}')
    return "\n".join(lines) + "\n"


def setup(hub_dir: Path, course: Path, python: Path, instructor: str, students: list[str],
          distribution: Path, port: int = 8000, hub_port: int = 8081,
          api_port: int = 8001, proxy: Path = PROXY) -> Path:
    """Write the hub's folder (see the module docstring); returns its ``jupyterhub_config.py``.

    Files that exist are kept. Limits come from ``course/course.toml`` (``[limits] memory_mb``) and
    the culling times are an hour for servers and half an hour for kernels.
    """
    hub_dir, course = Path(hub_dir).resolve(), Path(course).resolve()
    for name in [instructor, *students]:
        try:
            pwd.getpwnam(name)
        except KeyError:
            raise HubError(f"{name!r} has no Unix account on this machine; create it (sudo useradd -m {name}) "
                           "or let your university's login create accounts") from None
    if instructor in students:
        raise HubError(f"{instructor!r} is both the instructor and a student; give them different accounts")
    distribution = Path(distribution).resolve()
    if distribution.is_relative_to(REPO):
        raise HubError(f"the distribution {distribution} is inside the course repository, which students must not "
                       f"enter (it holds solutions/ and the gradebook); copy it out, e.g. sudo cp -r {distribution} "
                       "/opt/course-dist, and give --distribution /opt/course-dist")
    settings = course_settings.load(course)
    exchange = hub_dir / "exchange"
    exchange.mkdir(parents=True, exist_ok=True)
    exchange.chmod(0o1777)  # nbgrader's exchange: everyone writes, the sticky bit keeps each one's files theirs
    student_dir, instructor_dir = hub_dir / "config" / "student", hub_dir / "config" / "instructor"
    timeout = settings.limits.cell_timeout_s
    _write_once(student_dir / "nbgrader_config.py", nbgrader_config(exchange, timeout))
    _write_once(instructor_dir / "nbgrader_config.py", nbgrader_config(exchange, timeout, course))
    _write_once(student_dir / "jupyter_server_config.json",
                json.dumps({"ServerApp": {"jpserver_extensions": {e: False for e in STUDENT_OFF_SERVER}}}, indent=1))
    _write_once(student_dir / "labconfig" / "page_config.json",
                json.dumps({"disabledExtensions": {e: True for e in STUDENT_HIDDEN_LAB}}, indent=1))
    for folder in (hub_dir, hub_dir / "config", student_dir, instructor_dir, student_dir / "labconfig"):
        folder.chmod(0o755)
    _write_once(hub_dir / "instructor.sh", INSTRUCTOR_SH.format(bin=str(Path(python).parent), repo=str(REPO),
                                                                 config=str(instructor_dir), course=str(course)))
    config = hub_dir / "jupyterhub_config.py"
    _write_once(config, CONFIG.format(
        hub_dir=str(hub_dir), repo=str(REPO), distribution=str(distribution), port=port,
        hub_port=hub_port, api_port=api_port, proxy=str(proxy),
        users=sorted({instructor, *students}), instructors={instructor}, instructors_list=[instructor],
        threads=1, python=str(python), python_bin=str(Path(python).parent), memory_mb=settings.limits.memory_mb,
        cull_kernel_s=1800, cull_server_s=3600))
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup", help="write a hub's folder: its configuration, the exchange, the student's and instructor's Jupyter settings")
    s.add_argument("hub_dir", type=Path)
    s.add_argument("--course", type=Path, required=True, help="the instructor's course folder (make student's, e.g. build/nbgrader)")
    s.add_argument("--python", type=Path, default=Path(sys.executable), help="the shared course environment's python")
    s.add_argument("--distribution", type=Path, required=True,
                   help="the student distribution (make release's build/distribution, copied outside the repository, "
                        "e.g. to /opt/course-dist): read by every user")
    s.add_argument("--instructor", required=True, help="the instructor's account")
    s.add_argument("--students", nargs="+", required=True, help="the students' accounts")
    s.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        config = setup(args.hub_dir, args.course, args.python, args.instructor, args.students, args.distribution,
                       port=args.port)
    except (HubError, course_settings.SettingsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"hub: {config}\nstart it as root: sudo {args.python.parent}/jupyterhub -f {config}\n"
          f"the instructor's shell: source {config.parent / 'instructor.sh'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
