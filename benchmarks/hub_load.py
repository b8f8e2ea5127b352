"""Time and memory of a student's kernel under the course hub: one student alone, then N at once.

Starts the trial hub of ``classroom.hub_trial`` (real JupyterHub on 127.0.0.1, one Unix account per
user, the hub configuration of ``classroom.hub``: one BLAS/OpenMP thread per kernel), puts the
answered notebook (the nbgrader source, solutions filled in) into each student's home and runs it
there with nbgrader's "Validate" (the student's own server starts a kernel as the student and runs
every cell). Round 1: one student alone; round 2: ``--students`` at once. While they run, every
process of each student is sampled (``/proc``, every 0.2 s): the peak resident memory of the
kernel and of the whole account. Writes ``benchmarks/results/hub_load.json``.

    python benchmarks/hub_load.py                       # notebook 04, 3 students (as root)
    python benchmarks/hub_load.py --notebook 01_detection_basics --students 3
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import torch

from harness import RESULTS, ROOT, run_info, write_json

sys.path.insert(0, str(ROOT))  # classroom/ is the repository's teacher tooling, not an installed package
from classroom import hub_trial  # noqa: E402
from classroom import nbgrader_build as nbb  # noqa: E402


def _processes(uid: int) -> dict[int, tuple[str, int, int]]:
    """{pid: (command line, VmRSS kB, VmHWM kB)} of the processes of ``uid``."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) != uid:
                continue
            cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found[int(entry.name)] = (cmd, int(fields.get("VmRSS", "0 kB").split()[0]), int(fields.get("VmHWM", "0 kB").split()[0]))
        except (OSError, KeyError, ValueError):
            continue
    return found


class MemoryWatch:
    """Samples the accounts' processes until stopped: peak kernel resident memory (VmHWM of any
    ``ipykernel`` process) and peak total resident memory of each account, in MiB."""

    def __init__(self, uids: dict[str, int], every_s: float = 0.2):
        self.uids, self.every_s = uids, every_s
        self.kernel_mib = {n: 0.0 for n in uids}
        self.account_mib = {n: 0.0 for n in uids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, uid in self.uids.items():
                procs = _processes(uid)
                kernels = [hwm for cmd, _, hwm in procs.values() if "ipykernel" in cmd]
                self.kernel_mib[name] = max(self.kernel_mib[name], max(kernels, default=0) / 1024)
                self.account_mib[name] = max(self.account_mib[name], sum(rss for _, rss, _ in procs.values()) / 1024)
            self._stop.wait(self.every_s)

    def __enter__(self) -> "MemoryWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _validate(trial: hub_trial.TrialHub, name: str, notebook: str) -> float:
    """Run ``notebook`` in ``name``'s home with nbgrader's Validate; returns the seconds it took."""
    start = time.perf_counter()
    status, body = trial.client.user("POST", name, "assignments/validate", form={"path": f"{notebook}/{notebook}.ipynb"},
                                     timeout=1800)
    seconds = time.perf_counter() - start
    result = json.loads(body) if status == 200 else {}
    if not result.get("success") or result.get("value"):
        raise hub_trial.TrialError(f"{name}: validating {notebook} gave HTTP {status}: {body[:2000]!r}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notebook", default="04_quantization_math", choices=nbb.assignments())
    parser.add_argument("--students", type=int, default=3, help="students at once in round 2 (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    names = [f"s{i + 1}" for i in range(args.students)]
    with hub_trial.trial_hub(names, [args.notebook]) as trial:
        answered = nbformat.read(trial.course / "source" / args.notebook / f"{args.notebook}.ipynb", as_version=4)
        body = json.dumps({"type": "notebook", "format": "json", "content": answered}).encode()
        for name in trial.students:
            trial.client.start_server(name)
            trial.client.user("PUT", name, f"api/contents/{args.notebook}", body=json.dumps({"type": "directory"}).encode())
            status, _ = trial.client.user("PUT", name, f"api/contents/{args.notebook}/{args.notebook}.ipynb", body=body)
            if status not in (200, 201):
                raise hub_trial.TrialError(f"could not put the notebook into {name}'s home: HTTP {status}")
        uids = {n: pwd.getpwnam(n).pw_uid for n in trial.students}
        rounds = []
        for together in (trial.students[:1], trial.students):
            with MemoryWatch({n: uids[n] for n in together}) as watch:
                start = time.perf_counter()
                with ThreadPoolExecutor(len(together)) as pool:
                    seconds = dict(zip(together, pool.map(lambda n: _validate(trial, n, args.notebook), together)))
                wall = time.perf_counter() - start
            rounds.append({"students_at_once": len(together), "wall_s": round(wall, 1),
                           "seconds_per_student": {n: round(s, 1) for n, s in seconds.items()},
                           "kernel_peak_mib": {n: round(watch.kernel_mib[n]) for n in together},
                           "account_peak_mib": {n: round(watch.account_mib[n]) for n in together}})
            print(f"{len(together)} at once: {wall:.0f} s wall; per student {rounds[-1]['seconds_per_student']}; "
                  f"kernel peak {rounds[-1]['kernel_peak_mib']} MiB; account peak {rounds[-1]['account_peak_mib']} MiB")
        memory_limit = trial.course.joinpath("course.toml").read_text()
    path = write_json(args.out / "hub_load.json", {
        "description": ("a student's kernel under the course hub (classroom.hub, JupyterHub on 127.0.0.1, one Unix account "
                        "per student, one BLAS/OpenMP thread per kernel): the answered notebook run in the student's "
                        "home with nbgrader's Validate, first one student alone, then several at once; peak resident "
                        "memory of the kernel (VmHWM) and of the student's whole account (server + kernel, VmRSS summed), "
                        "sampled every 0.2 s"),
        "command": f"python benchmarks/hub_load.py --notebook {args.notebook} --students {args.students}",
        "run": run_info(torch.device("cpu")),
        "notebook": args.notebook,
        "threads_per_kernel": 1,
        "memory_limit_mb_per_process": int(next(line.split("=")[1] for line in memory_limit.splitlines()
                                                 if line.startswith("memory_mb"))),
        "rounds": rounds,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
