"""Run untrusted code (a student's notebook) inside a bubblewrap sandbox.

Why bubblewrap (``bwrap``, Debian's ``bubblewrap`` package): it is the sandbox Flatpak is built on,
small, audited, and needs no daemon. It builds a new mount, user, process, network and IPC namespace
for one process tree, so the sandbox sees only the folders bound into it:

* read-only: the system (``/usr``, ``/etc`` ...), Python and the virtual environment, and the course
  folders a notebook reads (``course_utils``, ``data``, ``benchmarks``, ``docs``);
* writable: the student's own folder (the notebook's working directory) and a private ``/tmp``;
* absent: ``solutions/``, the rest of the teacher's checkout, the gradebook, other students' work,
  ``/root`` and ``/home``; the network (only a private loopback exists).

Limits per kernel (:class:`Limits`): CPU seconds, address space, file size (``setrlimit``, inherited
by every process in the sandbox), and nbgrader's per-cell timeout plus a wall-clock limit per notebook
(applied by the grader, :mod:`classroom.grading`).

The Jupyter kernel talks to nbgrader over Unix sockets (``KernelManager.transport = "ipc"``) in a
folder bound into the sandbox, because the sandbox has no network to reach nbgrader's TCP ports. The
kernel spec :func:`write_kernelspec` writes starts ``python -m classroom.sandbox kernel
{connection_file}`` outside the sandbox; that launcher sets the limits and ``exec``\\ s ``bwrap``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# What a course notebook reads with relative paths (``../data`` and so on): bound read-only.
COURSE_DIRS = ("course_utils", "data", "benchmarks", "docs")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
KERNEL_NAME = "course-sandbox"
ENV_SETTINGS = "COURSE_SANDBOX"  # JSON settings the grader passes to the kernel launcher


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces on this machine."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one student's notebook.

    cell_timeout_s: nbgrader's per-cell timeout; notebook_timeout_s: wall clock for the whole
    notebook (the grader kills the run after it); cpu_s: CPU seconds of the kernel's processes
    (``RLIMIT_CPU``); memory_mb: address space per process (``RLIMIT_AS``; PyTorch reserves a few
    GB of address space it never touches, so keep this ≥ 4096); file_mb: the largest file it may write.
    """

    cell_timeout_s: int = 300
    notebook_timeout_s: int = 900
    cpu_s: int = 1200
    memory_mb: int = 8192
    file_mb: int = 256

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Limits.{name}={value!r}: give a positive whole number")
        if self.memory_mb < 1024:
            raise ValueError(f"Limits.memory_mb={self.memory_mb}: PyTorch alone needs more; give at least 1024 (default 8192)")


def bwrap() -> str:
    """The ``bwrap`` executable, checked to work here; :class:`SandboxUnavailable` says how to get it."""
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed, so student code cannot be sandboxed. Install it with "
            "`bash scripts/ensure_bubblewrap.sh` (Debian's bubblewrap package), or grade with --unsafe "
            "if every submission is trusted")
    probe = subprocess.run([path, *_namespace_flags(), "--ro-bind", "/", "/", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise SandboxUnavailable(
            f"bubblewrap cannot create a sandbox on this machine ({probe.stderr.strip() or probe.returncode}); "
            "unprivileged user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1), or grade "
            "as root. Use --unsafe only if every submission is trusted")
    return path


def _namespace_flags() -> list[str]:
    return ["--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL",
            "--die-with-parent", "--new-session"]


def sandbox_argv(command: list[str], *, writable: list[Path], readable: list[Path], workdir: Path,
                 env: dict[str, str]) -> list[str]:
    """``bwrap`` arguments that run ``command`` in ``workdir`` with only these folders visible.

    ``readable`` and ``writable`` are bound at their own paths (read-only / read-write); the
    environment is exactly ``env`` (nothing inherited). The system folders, this Python and its
    virtual environment are bound read-only.
    """
    # /tmp first: a private, empty one; everything bound after it (a checkout or a virtual environment
    # that lives under /tmp included) shows through it.
    argv = [bwrap(), *_namespace_flags(), "--clearenv", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for d in SYSTEM_DIRS:
        if Path(d).exists():
            argv += ["--ro-bind", d, d]
    for p in _python_dirs():
        argv += ["--ro-bind", str(p), str(p)]
    for p in readable:
        argv += ["--ro-bind", str(p), str(p)]
    for p in writable:
        argv += ["--bind", str(p), str(p)]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    return argv + ["--chdir", str(workdir), "--", *command]


def _extra_import_dirs() -> list[Path]:
    """The folders on this process's ``PYTHONPATH`` other than the course's (a shared course
    environment reached that way, as on a hub): the kernel gets them too, read-only."""
    entries = [Path(e).resolve() for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    # A folder holding the course itself (the repository or one above it) would show solutions/: left out.
    return [e for e in dict.fromkeys(entries) if e.is_dir() and not REPO.is_relative_to(e)]


def _python_dirs() -> list[Path]:
    """This interpreter's installation and virtual environment (not under the system folders), and
    the folders on its ``PYTHONPATH``."""
    dirs = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parent.parent,
            Path(sys.prefix).absolute(), *_extra_import_dirs()}  # also as named: a virtual environment reached through a link
    return sorted(d for d in dirs if not any(str(d).startswith(s + "/") or str(d) == s for s in SYSTEM_DIRS))


def _set_limits(limits: Limits) -> None:
    """Apply the CPU, address-space and file-size limits to this process (inherited by its children)."""
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 5))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb << 20, limits.memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb << 20, limits.file_mb << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def kernel_env(threads: int = 1) -> dict[str, str]:
    """The environment inside the sandbox: a home in the private /tmp, one BLAS/OpenMP thread by
    default (graders run students in parallel), static widgets, and the course importable."""
    return {
        "HOME": "/tmp", "MPLCONFIGDIR": "/tmp/matplotlib", "IPYTHONDIR": "/tmp/ipython", "JUPYTER_RUNTIME_DIR": "/tmp",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "PYTHONPATH": os.pathsep.join(map(str, [REPO, *_extra_import_dirs()])), "PYTHONDONTWRITEBYTECODE": "1", "COURSE_STATIC_WIDGETS": "1", "MPLBACKEND": "agg",
        "GOMP_SPINCOUNT": "1000", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads), "TQDM_DISABLE": "1", "LANG": "C.UTF-8",
    }


def run(command: list[str], workdir: Path, limits: Limits = Limits(), readable: list[Path] = (),
        timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in the sandbox, in ``workdir`` (writable), with the course folders and
    ``readable`` read-only, under ``limits``; wall clock ``timeout`` (default ``limits.notebook_timeout_s``).
    Returns the completed process (stdout and stderr as text)."""
    workdir = Path(workdir).resolve()
    argv = sandbox_argv(command, writable=[workdir], readable=[*map(Path, readable)] + [REPO / d for d in COURSE_DIRS],
                        workdir=workdir, env=kernel_env())
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout or limits.notebook_timeout_s,
                          preexec_fn=lambda: _set_limits(limits))


def write_kernelspec(jupyter_dir: Path) -> Path:
    """Write the ``course-sandbox`` kernel spec under ``jupyter_dir/kernels`` (put ``jupyter_dir`` on
    ``JUPYTER_PATH``). Returns the kernel.json path."""
    spec_dir = jupyter_dir / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "classroom.sandbox", "kernel", "{connection_file}"],
        "display_name": "Python 3 (course sandbox)",
        "language": "python",
        "interrupt_mode": "message",  # a signal would stop at bwrap; ipykernel handles interrupt_request
        "env": {"PYTHONPATH": os.pathsep.join(map(str, [REPO, *_extra_import_dirs()]))},
    }
    path = spec_dir / "kernel.json"
    path.write_text(json.dumps(spec, indent=1))
    return path


def settings_env(limits: Limits, threads: int = 1) -> dict[str, str]:
    """Environment variables the grader sets so the kernel launcher knows the limits."""
    return {ENV_SETTINGS: json.dumps({"limits": asdict(limits), "threads": threads})}


def check_private_folder(folder: Path, workdir: Path) -> None:
    """Refuse to bind ``folder`` writable unless it is a folder of its own: not a system folder, not
    the shared temporary folder, and not above the student's folder (which would expose the course
    folder and the gradebook)."""
    shared = {Path("/"), Path("/tmp").resolve(), Path("/var/tmp"), Path.home().resolve(), REPO}
    if folder in shared or workdir.is_relative_to(folder) or REPO.is_relative_to(folder):
        raise SandboxUnavailable(f"the kernel's connection file is in {folder}, a shared folder; binding it into the "
                                 "sandbox would expose other files. Start the kernel with TMPDIR set to a private folder "
                                 "(classroom.grading does)")


def launch_kernel(connection_file: str) -> None:
    """Kernel launcher (outside the sandbox): set the limits, then replace this process with
    ``bwrap ... python -m ipykernel_launcher -f CONNECTION_FILE``. The working directory (the
    student's assignment folder, where nbclient starts the kernel) is the only writable course
    folder; its parent (the student's folder, with links to the course folders) is read-only."""
    settings = json.loads(os.environ.get(ENV_SETTINGS, "{}"))
    limits = Limits(**settings.get("limits", {}))
    workdir = Path.cwd().resolve()
    conn = Path(connection_file).resolve()
    check_private_folder(conn.parent, workdir)
    readable = [workdir.parent] + [REPO / d for d in COURSE_DIRS if (REPO / d).exists()]
    writable = [workdir, conn.parent]
    argv = sandbox_argv([sys.executable, "-m", "ipykernel_launcher", "-f", str(conn), "--HistoryManager.hist_file=:memory:"],
                        writable=writable, readable=readable, workdir=workdir, env=kernel_env(settings.get("threads", 1)))
    _set_limits(limits)
    os.execv(argv[0], argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "kernel":
        launch_kernel(argv[1])
    print("usage: python -m classroom.sandbox kernel CONNECTION_FILE  (started by nbgrader through the "
          f"{KERNEL_NAME!r} kernel spec)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
