"""Execute every notebook headlessly and print how long each one took.

    python benchmarks/run_notebooks.py            # run copies; the notebooks stay untouched
    python benchmarks/run_notebooks.py --inplace  # also save the executed notebooks (for committing)
    python benchmarks/run_notebooks.py 01_detection_basics   # just the notebooks whose names match
    python benchmarks/run_notebooks.py --record   # a full run that also updates the committed record

Writes the timings to ``build/notebook_times.json`` (not tracked by git, so a
run leaves a clone clean); with ``--record`` (all notebooks only) also to the
committed ``benchmarks/results/notebook_times.json``. Exits non-zero if a
notebook fails, printing the failing cell's error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from queue import Empty
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 180  # every notebook must run in at most 3 minutes on 2 CPU cores
LOCAL_TIMES = ROOT / "build" / "notebook_times.json"  # every run (untracked)
RECORDED_TIMES = ROOT / "benchmarks" / "results" / "notebook_times.json"  # --record only (committed)
# The kernels inherit this: OpenMP threads that soon sleep while they wait, so a busy machine slows the
# notebooks down in proportion instead of many times over (conftest.py explains).
os.environ.setdefault("GOMP_SPINCOUNT", "1000")


def _drop_progress_bars(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Remove tqdm progress-bar widgets from saved outputs.

    Saved, they read as a frozen "0%" bar on GitHub; live in JupyterLab they
    appear again when the cell runs.
    """
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [
                o for o in cell.outputs
                if not (o.get("output_type") == "display_data"
                        and "application/vnd.jupyter.widget-view+json" in o.get("data", {})
                        and "it/s" in o["data"].get("text/plain", ""))
            ]
    return nb


class _SlicedShellChannel:
    """A kernel client's shell channel that waits in 1-second slices.

    Works around jupyter/nbclient#312: after a cell that creates widgets,
    ``get_msg(timeout=T)`` sometimes returns only when T (the whole cell
    timeout) has passed, although the reply arrived long before. Polling again
    in short slices picks up the queued reply at once.
    """

    def __init__(self, channel: Any) -> None:
        self._channel = channel

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            try:
                return await self._channel.get_msg(timeout=step)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise


class RobustNotebookClient(NotebookClient):
    """``NotebookClient`` with the shell-channel workaround above."""

    async def async_start_new_kernel_client(self) -> Any:
        kc = await super().async_start_new_kernel_client()
        kc._shell_channel = _SlicedShellChannel(kc.shell_channel)
        return kc


def run(path: Path, inplace: bool, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    client = RobustNotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    if inplace:
        nbformat.write(_drop_progress_bars(nb), path)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="substrings of notebook names to run (default: all)")
    parser.add_argument("--inplace", action="store_true", help="save outputs into the notebooks")
    parser.add_argument("--timeout", type=int, default=600, help="per-cell timeout, seconds")
    parser.add_argument("--record", action="store_true",
                        help=f"also write the timings to {RECORDED_TIMES.relative_to(ROOT)} (committed; all notebooks only)")
    args = parser.parse_args()
    if args.record and args.names:
        parser.error("--record updates the committed record of all notebooks: run it without notebook names")

    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.names:
        notebooks = [p for p in notebooks if any(n in p.stem for n in args.names)]
    times: dict[str, float] = {}
    failed = []
    for path in notebooks:
        print(f"running {path.name} ...", flush=True)
        try:
            times[path.stem] = run(path, args.inplace, args.timeout)
        except CellExecutionError as err:
            failed.append(path.name)
            print(f"FAILED: {path.name}\n{err}", file=sys.stderr)

    print(f"\n{'notebook':40s} {'seconds':>8s}  within 3 min?")
    for name, seconds in times.items():
        print(f"{name:40s} {seconds:8.1f}  {'yes' if seconds <= BUDGET_S else 'NO'}")
    print(f"{'total':40s} {sum(times.values()):8.1f}")
    record = json.dumps({"machine": platform.machine(), "seconds": times, "total": sum(times.values())}, indent=2) + "\n"
    outs = [LOCAL_TIMES] + ([RECORDED_TIMES] if args.record and not failed else [])
    for out in outs:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(record)
        print(f"wrote {out.relative_to(ROOT)}")
    for name in failed:
        print(f"{name:40s} FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
