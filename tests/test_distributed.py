"""The course's trainer under DistributedDataParallel (2 CPU processes, gloo) equals one process with the
whole batch: the same weights after K steps, and gradient clipping sees the all-reduced gradient."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from course_utils import SyntheticShapes, TinyDetector, collate_detection, fit, materialize
from course_utils.clipping import GradientClipping
from course_utils.data import SceneConfig
from course_utils.train import Hook

STEPS, BATCH, WORLD = 3, 4, 2
SCENES = SceneConfig(image_size=64, min_size=10, max_size=30, max_objects=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RecordNorm(Hook):
    """The total gradient norm each step, before clipping (the hook runs first)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def after_backward(self, state) -> None:
        grads = [p.grad for p in state.model.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))


def _data():
    return materialize(SyntheticShapes(STEPS * BATCH * WORLD, seed=7, config=SCENES), progress=False)


def _model() -> TinyDetector:
    torch.manual_seed(0)
    return TinyDetector(width=0.5, batch_norm=False)  # no BN: per-process BN statistics would differ (no SyncBatchNorm on CPU)


def _run(model, loader, clip: float):
    record = RecordNorm()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    fit(model, loader, optimizer, epochs=1, device="cpu", hooks=[record, GradientClipping("norm", clip)], progress=False)
    return record.norms


def _worker(rank: int, port: int, out: str, clip: float) -> None:
    from course_utils import distributed as D

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    device = D.init_from_env("cpu")
    try:
        model = D.prepare(_model(), device)
        loader = D.shard_loader(_data(), BATCH, shuffle=False, seed=0, collate_fn=collate_detection)
        norms = _run(model, loader, clip)
        if D.is_main():
            torch.save({"state": model.module.state_dict(), "norms": norms}, Path(out) / "ddp.pt")
        D.barrier()
    finally:
        D.cleanup()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    clip = 0.5  # small enough to be active: the clipped update differs from the unclipped one
    mp.spawn(_worker, args=(_free_port(), str(out), clip), nprocs=WORLD, join=True)
    ddp = torch.load(out / "ddp.pt", weights_only=True)
    torch.set_num_threads(1)
    single = _model()
    from torch.utils.data import DataLoader

    loader = DataLoader(_data(), batch_size=BATCH * WORLD, shuffle=False, collate_fn=collate_detection)
    norms = _run(single, loader, clip)
    return ddp, single, norms, clip


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
def test_two_ranks_of_batch_b_train_like_one_process_of_batch_2b(runs):
    ddp, single, _, _ = runs
    for name, value in single.state_dict().items():
        assert torch.allclose(ddp["state"][name], value, atol=1e-4, rtol=1e-4), name
    start = _model().state_dict()
    assert any(not torch.equal(start[k], v) for k, v in single.state_dict().items())  # it trained


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
def test_clipping_under_ddp_sees_the_all_reduced_gradient(runs):
    ddp, _, norms, clip = runs
    assert len(ddp["norms"]) == len(norms) == STEPS
    assert ddp["norms"] == pytest.approx(norms, rel=1e-4)
    assert max(norms) > clip  # the clip was active, so a per-rank norm would have changed the result


def test_prepare_refuses_sync_bn_on_the_cpu():
    from course_utils.distributed import prepare

    with pytest.raises(ValueError, match="not on CPU processes"):
        prepare(TinyDetector(width=0.5), torch.device("cpu"), sync_bn=True)


def test_init_from_env_says_to_use_torchrun(monkeypatch):
    from course_utils.distributed import init_from_env

    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        init_from_env("cpu")


# Loaded by every Python process of the "cut" run (PYTHONPATH): right after rank 0 has written epoch 1's last.pt,
# it SIGKILLs torchrun and both workers, as a crash would. The kill follows an event, not a clock, so it lands at
# the same point however fast or busy the machine is.
KILL_AFTER_EPOCH = """
import os

if os.environ.get("KILL_AFTER_EPOCH"):
    import psutil
    import course_utils.train as train

    save = train.save_checkpoint

    def save_then_crash(path, model, **metadata):
        written = save(path, model, **metadata)
        if str(path).endswith("last.pt") and metadata.get("epoch") == int(os.environ["KILL_AFTER_EPOCH"]):
            launcher = psutil.Process().parent()
            for process in launcher.children(recursive=True) + [launcher]:
                if process.pid != os.getpid():
                    process.kill()
            os.kill(os.getpid(), 9)
        return written

    train.save_checkpoint = save_then_crash
"""


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
def test_a_killed_torchrun_training_resumes_to_the_same_weights(tmp_path):
    """torchrun --nproc-per-node 2 -m course_utils train: kill the whole run (SIGKILL) once epoch 1 of 3 is saved,
    resume, and compare with a run that was never interrupted."""
    import shutil
    import subprocess
    import sys

    from course_utils.data import write_coco_split

    write_coco_split(tmp_path / "train", list(range(64)), SCENES)
    write_coco_split(tmp_path / "val", list(range(900, 904)), SCENES)
    (tmp_path / "crash").mkdir()
    (tmp_path / "crash" / "sitecustomize.py").write_text(KILL_AFTER_EPOCH)
    torchrun = Path(sys.executable).with_name("torchrun")
    base = [str(torchrun), "--nproc-per-node", "2", "--master-port", str(_free_port()), "-m", "course_utils", "train",
            "--train", str(tmp_path / "train" / "annotations.json"), "--val", str(tmp_path / "val" / "annotations.json"),
            "--epochs", "3", "--batch-size", "4", "--image-size", "64", "--width", "0.5", "--device", "cpu", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def command(out, port=None):
        cmd = list(base)
        cmd[4] = str(port or _free_port())
        return cmd + ["--out", str(tmp_path / out)]

    done = subprocess.run(command("full"), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    crash_env = dict(env, KILL_AFTER_EPOCH="1", PYTHONPATH=os.pathsep.join([str(tmp_path / "crash"), env.get("PYTHONPATH", "")]))
    killed = subprocess.run(command("cut"), env=crash_env, capture_output=True, text=True, timeout=600)
    assert killed.returncode != 0, "the run was not killed: " + killed.stdout[-2000:]
    last = tmp_path / "cut" / "last.pt"
    assert torch.load(last, weights_only=True)["metadata"]["epoch"] == 1
    resumed = subprocess.run(command("cut") + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 of 3 epochs done" in resumed.stdout
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    cut = torch.load(last, weights_only=True)
    assert full["metadata"]["epoch"] == cut["metadata"]["epoch"] == 3
    for key, value in full["model"].items():
        assert torch.equal(value, cut["model"][key]), key
    shutil.rmtree(tmp_path / "train")
