"""Every committed output is one a learner may trust: no traceback, no failed command, no machine's paths.

A notebook's ``!`` line, an ``NBVAL_IGNORE_OUTPUT`` cell or a printed error message never makes nbval
fail, so a demonstration that broke can sit in a committed notebook unnoticed. This test reads every
committed output and fails on:

* a Python traceback or an ``error`` output;
* a line of a failed command: ``error:`` (argparse, the course's command line), ``SomethingError: ...``,
  ``ChildFailedError``, a non-zero exit status, torchrun's ``E1202 ...`` log lines;
* a path of the machine that executed the notebook (``/tmp/...``, ``/home/...``, ``.venv/``,
  ``site-packages/``): a learner's machine has other paths, and they leak where the course was run.

A cell meant to show an error is tagged ``raises-exception`` (Jupyter's tag: the cell raises) or
``expected-error`` (the cell prints an error message on purpose); those are not scanned.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXEMPT_TAGS = {"raises-exception", "expected-error"}

FAILURES = {
    "a traceback": re.compile(r"Traceback \(most recent call last\)"),
    "an error line": re.compile(r"(^|: )error: |^\s*(\w+\.)*\w*(Error|Exception): ", re.MULTILINE),
    "a failed distributed run": re.compile(r"ChildFailedError|closing signal SIG"),
    "a non-zero exit status": re.compile(r"(non-zero|nonzero) exit status|exit(ed with)? status [1-9]|exitcode\s*:\s*[1-9]"),
    "an error log line": re.compile(r"^E\d{4} \d\d:\d\d:\d\d", re.MULTILINE),
    "a path of the machine": re.compile(r"(?<![\w.~])(/tmp/|/root/|/home/|/Users/|/work/|/var/folders/|/usr/lib/python)"
                                        r"|\.venv/|site-packages/|[A-Z]:\\\\Users"),
}


def output_text(output: dict) -> str:
    """The text a learner reads in one output: a stream, a result's or display's text/plain, an error."""
    if output.get("output_type") == "stream":
        return "".join(output.get("text", ""))
    if output.get("output_type") == "error":
        return "\n".join([f"{output.get('ename')}: {output.get('evalue')}", *output.get("traceback", [])])
    data = output.get("data", {})
    return "".join(data.get("text/plain", "")) + "".join(data.get("text/html", ""))


def problems(notebook: dict) -> list[str]:
    """Each failure in a notebook's outputs: ``'cell N: <what> in: <the line>'``; [] when all is clean."""
    found = []
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") != "code" or EXEMPT_TAGS & set(cell.get("metadata", {}).get("tags", [])):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found.append(f"cell {index}: an error output ({output.get('ename')}: {output.get('evalue')})")
                continue
            text = output_text(output)
            for what, pattern in FAILURES.items():
                match = pattern.search(text)
                if match:
                    start = text.rfind("\n", 0, match.start()) + 1
                    end = text.find("\n", match.end())
                    found.append(f"cell {index}: {what} in: {text[start:end if end >= 0 else None][:200]!r}")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_outputs_show_no_failure_and_no_machine_path(path):
    found = problems(json.loads(path.read_text(encoding="utf-8")))
    assert not found, f"{path.name}: fix the cell, or tag it raises-exception / expected-error if the error is the lesson:\n" + "\n".join(found)


def _notebook(*outputs, tags=()):
    return {"cells": [{"cell_type": "code", "metadata": {"tags": list(tags)}, "source": "x", "outputs": list(outputs)}]}


def _stream(text, name="stdout"):
    return {"output_type": "stream", "name": name, "text": text}


PLANTED = {
    "a traceback": _stream("Traceback (most recent call last):\n  File \"<stdin>\", line 1\nZeroDivisionError: division by zero\n", "stderr"),
    "an argparse error": _stream("usage: python -m course_utils train ...\npython -m course_utils train: error: argument --train: no file at 'x'\n", "stderr"),
    "the course's error line": _stream("error: --resume: there is no runs/x/last.pt to resume from\n"),
    "an exception line": _stream("RuntimeError: CUDA out of memory\n"),
    "torchrun's failure": _stream("torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"),
    "a failed subprocess": _stream("CalledProcessError: Command '['ls']' returned non-zero exit status 2.\n"),
    "torchrun's error log": _stream("E1202 00:16:39.399000 21083 torch/distributed/elastic/multiprocessing/api.py:882] failed\n"),
    "a temporary folder": _stream("done: checkpoints in /tmp/own_data_h5bfpxdb/run\n"),
    "a venv path in a warning": _stream("/x/.venv/lib/python3.11/site-packages/torch/onnx/utils.py:1: UserWarning: hm\n", "stderr"),
    "a home folder in a result": {"output_type": "execute_result", "data": {"text/plain": "PosixPath('/home/ana/course/run')"}},
    "an error output": {"output_type": "error", "ename": "ValueError", "evalue": "bad", "traceback": ["ValueError: bad"]},
}


@pytest.mark.parametrize("name", PLANTED)
def test_the_scan_finds_a_planted_failure(name):
    """The test of the test: each kind of failure, planted in an output, is found; the same cell tagged
    as an expected error is not scanned."""
    planted = _notebook(PLANTED[name])
    assert problems(planted), f"the scan missed {name}"
    for tag in EXEMPT_TAGS:
        assert problems(_notebook(PLANTED[name], tags=[tag])) == []


def test_the_scan_passes_ordinary_outputs():
    clean = _notebook(_stream("epoch 1/3: val mAP 0.8379 (AP50 0.9788)  -> best.pt\n"),
                      _stream("done: 3 epochs, best val mAP 0.8519; checkpoints in own_data_x/run\n"),
                      _stream("wrote ../benchmarks/results/x.json; errors: 0; Error bars show the seed std\n"),
                      {"output_type": "display_data", "data": {"text/plain": "<Figure size 640x480 with 1 Axes>"}})
    assert problems(clean) == []


def test_a_planted_traceback_in_a_real_notebook_is_found():
    """On a copy of a committed notebook: clean as committed, caught once one output holds a traceback."""
    notebook = json.loads(NOTEBOOKS[1].read_text(encoding="utf-8"))
    assert problems(notebook) == []
    spoiled = copy.deepcopy(notebook)
    cell = next(c for c in spoiled["cells"] if c["cell_type"] == "code" and c["outputs"])
    cell["outputs"].append(PLANTED["a traceback"])
    found = problems(spoiled)
    index = spoiled["cells"].index(cell)
    assert found and all(f.startswith(f"cell {index}: ") for f in found), found
