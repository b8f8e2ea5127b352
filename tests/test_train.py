"""course_utils.train and course_utils.models: checkpoints, the loop and its hooks, the detectors."""

from __future__ import annotations

import math
import os
import pickle

import pytest
import torch

import course_utils.train as train_mod
from course_utils.boxes import batched_nms, decode_boxes
from course_utils.data import SyntheticShapes, collate_detection
from course_utils.models import TinyDetector, build_torchvision_detector, count_parameters
from course_utils.train import Hook, NonFiniteLossError, fit, load_checkpoint, save_checkpoint, seed_everything

CPU = torch.device("cpu")


def tiny_model(seed: int = 0, **kwargs) -> TinyDetector:
    torch.manual_seed(seed)
    return TinyDetector(num_classes=3, width=0.25, depth=0, **kwargs)


@pytest.fixture(scope="module")
def batches():
    """Two fixed batches of two 128x128 synthetic images (a 2-batch 'loader')."""
    ds = SyntheticShapes(4, seed=500)
    samples = [ds[i] for i in range(4)]
    return [collate_detection(samples[:2]), collate_detection(samples[2:])]


def assert_state_dicts_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #
def test_checkpoint_round_trip(tmp_path):
    model = tiny_model(seed=1)
    model.train()
    with torch.no_grad():  # make BN buffers non-default so they are checked too
        model(torch.rand(2, 3, 64, 64), [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2)
    metadata = {"epoch": 7, "map": 0.4321, "name": "tiny", "classes": ["circle", "square"], "cfg": {"lr": [0.1, 0.01], "ok": True},
                "ema": torch.arange(3.0)}
    path = save_checkpoint(tmp_path / "sub" / "ckpt.pt", model, **metadata)
    assert path == tmp_path / "sub" / "ckpt.pt" and path.is_file()

    fresh = tiny_model(seed=2)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # really different to start with
    payload = load_checkpoint(path, fresh)
    assert_state_dicts_equal(fresh.state_dict(), model.state_dict())
    assert_state_dicts_equal(payload["model"], model.state_dict())
    meta = payload["metadata"]
    assert torch.equal(meta.pop("ema"), metadata.pop("ema"))
    assert meta == metadata
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temp file left


def test_load_checkpoint_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_load_checkpoint_not_a_course_checkpoint(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a course checkpoint"):
        load_checkpoint(tmp_path / "list.pt")


@pytest.mark.parametrize("existing", [True, False])
def test_save_checkpoint_is_atomic(tmp_path, monkeypatch, existing):
    path = tmp_path / "ckpt.pt"
    if existing:
        save_checkpoint(path, tiny_model(seed=1), epoch=1)
        old_bytes = path.read_bytes()

    def exploding_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(train_mod.torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, tiny_model(seed=2), epoch=2)
    monkeypatch.undo()

    if existing:
        assert path.read_bytes() == old_bytes
        assert load_checkpoint(path)["metadata"] == {"epoch": 1}
        assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]
    else:
        assert sorted(os.listdir(tmp_path)) == []


EXECUTED: list[str] = []


def _side_effect(tag: str) -> str:
    EXECUTED.append(tag)
    return tag


class Smuggled:
    """A pickled object that would run code when unpickled."""

    def __reduce__(self):
        return (_side_effect, ("code ran",))


def test_load_checkpoint_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "evil": Smuggled()}, path)  # default (full) pickler
    EXECUTED.clear()
    with pytest.raises(pickle.UnpicklingError, match="refused") as info:
        load_checkpoint(path, tiny_model())
    assert "evil.pt" in str(info.value)
    assert EXECUTED == []  # nothing in the file was executed
    # the same file *does* run code with the unsafe loader -- so the test above is meaningful
    torch.load(path, weights_only=False)
    assert EXECUTED == ["code ran"]


# --------------------------------------------------------------------------- #
# The training loop
# --------------------------------------------------------------------------- #
class NaNHook(Hook):
    def __init__(self, value: float) -> None:
        self.value = value

    def extra_losses(self, state):
        return {"bad": torch.tensor(self.value)}


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_raises(batches, value):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError) as info:
        fit(model, batches, opt, epochs=1, device=CPU, hooks=[NaNHook(value)], progress=False)
    msg = str(info.value)
    assert ("nan" if math.isnan(value) else "inf") in msg
    assert "bad=" in msg  # names the offending term
    assert "step 0" in msg and "learning rate" in msg
    assert isinstance(info.value, FloatingPointError)
    # the bad step was not applied
    for k, v in model.state_dict().items():
        if k in before and "running" not in k:
            assert torch.equal(v, before[k]), k


class Recorder(Hook):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_train_start(self, state):
        self.calls.append(("on_train_start", state.epoch, state.step))

    def extra_losses(self, state):
        assert state.losses and all(torch.isfinite(v) for v in state.losses.values())
        self.calls.append(("extra_losses", state.epoch, state.step))
        return {"loss_extra": 0.0 * sum(p.sum() for p in state.model.parameters())}

    def after_backward(self, state):
        has_grads = any(p.grad is not None and p.grad.abs().sum() > 0 for p in state.model.parameters())
        self.calls.append(("after_backward", state.epoch, state.step, has_grads))

    def after_step(self, state):
        self.calls.append(("after_step", state.epoch, state.step))

    def on_epoch_end(self, state):
        self.calls.append(("on_epoch_end", state.epoch, state.step))


def test_hooks_called_in_order(batches):
    seed_everything(0)
    model = tiny_model()
    rec = Recorder()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    history = fit(model, batches, opt, epochs=2, device=CPU, hooks=[rec], progress=False)
    expected = [("on_train_start", 0, 0)]
    step = 0
    for epoch in range(2):
        for _ in batches:
            expected += [("extra_losses", epoch, step), ("after_backward", epoch, step, True), ("after_step", epoch, step)]
            step += 1
        expected.append(("on_epoch_end", epoch, step))
    assert rec.calls == expected
    assert len(history["loss"]) == len(history["loss_extra"]) == len(history["lr"]) == 4
    assert len(history["epoch_time"]) == 2
    assert all(math.isfinite(v) for v in history["loss"])


# --------------------------------------------------------------------------- #
# Models
# --------------------------------------------------------------------------- #
def test_tiny_detector_train_mode_losses(batches):
    model = tiny_model()
    model.train()
    images, targets = batches[0]
    losses = model(images, targets)
    assert set(losses) == {"loss_cls", "loss_giou", "loss_l1"}
    for name, value in losses.items():
        assert value.ndim == 0 and torch.isfinite(value), name
        assert value.requires_grad, name
    assert losses["loss_giou"] > 0  # the images have objects, so box losses are active
    with pytest.raises(ValueError, match="targets"):
        model(images)
    # a batch with no objects still gives finite losses
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)} for _ in images]
    losses = model(images, empty)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


@pytest.mark.parametrize("detections_per_image", [100, 7])
def test_tiny_detector_eval_mode_outputs(batches, detections_per_image):
    # score_threshold 0 so that the untrained model emits plenty of candidates
    model = tiny_model(score_threshold=0.0, detections_per_image=detections_per_image).eval()
    images, _ = batches[0]
    with torch.inference_mode():
        outputs = model(images)
    assert isinstance(outputs, list) and len(outputs) == len(images)
    for out in outputs:
        boxes, scores, labels = out["boxes"], out["scores"], out["labels"]
        d = len(scores)
        assert 0 < d <= detections_per_image
        assert boxes.shape == (d, 4) and scores.shape == (d,) and labels.shape == (d,)
        assert labels.dtype == torch.int64 and labels.min() >= 1 and labels.max() <= 3
        assert torch.all(scores[:-1] >= scores[1:])  # sorted by score
        assert torch.all((boxes >= 0) & (boxes <= 128)) and torch.all(boxes[:, 2:] >= boxes[:, :2])
    assert max(len(o["scores"]) for o in outputs) == detections_per_image  # the cap is reached and honoured


def _postprocess_reference(model: TinyDetector, raw: dict, image_size: tuple[int, int]) -> list[dict]:
    """The plain definition, one image at a time, with the course's from-scratch batched_nms."""
    height, width = image_size
    results = []
    for logits, deltas in zip(raw["logits"], raw["deltas"]):
        boxes = decode_boxes(deltas, raw["anchors"])
        boxes = torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                             boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], dim=1)
        scores = logits.sigmoid()
        loc, cls = torch.nonzero(scores > model.score_threshold, as_tuple=True)
        s = scores[loc, cls]
        top = torch.sort(s, descending=True, stable=True).indices[:1000]
        loc, cls, s = loc[top], cls[top], s[top]
        keep = batched_nms(boxes[loc], s, cls, model.nms_threshold)[: model.detections_per_image]
        results.append({"boxes": boxes[loc[keep]], "scores": s[keep], "labels": cls[keep] + 1})
    return results


@pytest.mark.parametrize("batch, size, threshold, ties, top", [(1, 128, 0.05, False, 100), (5, 128, 0.0, False, 50),
                                                               (4, 96, 0.05, True, 100), (3, 256, 0.0, False, 5000)])
def test_tiny_detector_postprocess_equals_per_image_reference(batch, size, threshold, ties, top):
    # size 256: A*K = 32*32*3 > 1000 candidates and no top-k limit, so the per-image cap of 1000 decides;
    # ties: scores on a coarse grid (as an int8 model's are)
    torch.manual_seed(batch)
    model = tiny_model(score_threshold=threshold, detections_per_image=top).eval()
    with torch.inference_mode():
        raw = model.forward_raw(torch.rand(batch, 3, size, size))
        raw["logits"] = raw["logits"] + 3 * torch.randn_like(raw["logits"])  # untrained scores are all ~0.01: spread them
        raw["deltas"] = raw["deltas"] + 0.3 * torch.randn_like(raw["deltas"])
        if ties:
            raw["logits"] = (raw["logits"] * 2).round() / 2
        fast, slow = model.postprocess(raw, (size, size)), _postprocess_reference(model, raw, (size, size))
    assert len(fast) == len(slow) == batch
    assert sum(len(o["scores"]) for o in slow) > batch  # not vacuous
    for f, r in zip(fast, slow):
        assert torch.equal(f["labels"], r["labels"]) and torch.equal(f["scores"], r["scores"])
        torch.testing.assert_close(f["boxes"], r["boxes"])


def test_tiny_detector_postprocess_no_candidates():
    model = tiny_model(score_threshold=0.99).eval()
    with torch.inference_mode():
        raw = model.forward_raw(torch.rand(2, 3, 64, 64))
        out = model.postprocess({**raw, "logits": torch.full_like(raw["logits"], -10.0)}, (64, 64))
    assert [len(o["scores"]) for o in out] == [0, 0] and out[0]["boxes"].shape == (0, 4)


def test_tiny_detector_default_threshold_filters_scores(batches):
    model = tiny_model().eval()
    with torch.inference_mode():
        out = model(batches[0][0])
    for o in out:
        assert torch.all(o["scores"] > model.score_threshold)


def test_tiny_detector_learns_one_batch(batches):
    seed_everything(0)
    model = tiny_model()
    model.train()
    images, targets = batches[0]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def total_loss():
        return sum(model(images, targets).values())

    with torch.no_grad():
        start = total_loss().item()
    for _ in range(15):
        opt.zero_grad()
        loss = total_loss()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = total_loss().item()
    assert end < 0.8 * start, (start, end)


def test_build_torchvision_detector_train_and_eval():
    seed_everything(0)
    model = build_torchvision_detector(num_classes=3, image_size=128)
    assert count_parameters(model) > 0
    ds = SyntheticShapes(2, seed=900)
    images, targets = collate_detection([ds[0], ds[1]])
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    sum(losses.values()).backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))

    model.eval()
    with torch.inference_mode():
        outputs = model(images)
    assert len(outputs) == 2
    for out in outputs:
        d = len(out["scores"])
        assert d <= 100
        assert out["boxes"].shape == (d, 4) and out["labels"].shape == (d,)
        if d:
            assert out["labels"].min() >= 1 and out["labels"].max() <= 3
            assert torch.all((out["boxes"] >= 0) & (out["boxes"] <= 128))


def test_nonfinite_error_keeps_history_up_to_the_failure():
    """A diverged run can still be plotted: the error carries the history so far."""
    from course_utils.train import Hook, NonFiniteLossError

    class NaNOnThirdStep(Hook):
        def extra_losses(self, state):
            return {"boom": torch.tensor(float("nan") if state.step == 2 else 0.0)}

    torch.manual_seed(0)
    model = TinyDetector(width=0.25, depth=0)
    data = [SyntheticShapes(8, seed=0)[i] for i in range(8)]
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=collate_detection)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    with pytest.raises(NonFiniteLossError, match="step 2") as info:
        fit(model, loader, optimizer, epochs=1, device=torch.device("cpu"), hooks=[NaNOnThirdStep()], progress=False)
    assert len(info.value.history["loss"]) == 2
    assert all(math.isfinite(v) for v in info.value.history["loss"])


def test_plain_detector_has_no_batchnorm_and_he_init():
    from torch import nn

    model = TinyDetector(batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    conv = model.stage3[0][0]
    assert conv.bias is not None and torch.all(conv.bias == 0)
    he_std = math.sqrt(2.0 / conv.weight[0].numel())  # Kaiming normal, fan_in, ReLU gain
    assert abs(conv.weight.std().item() - he_std) / he_std < 0.1
    assert TinyDetector(batch_norm=True).stage3[0][0].bias is None


def test_shipped_checkpoint_loads_into_current_model():
    """Later notebooks load benchmarks/results/tiny_detector.pt: it must match the class."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "tiny_detector.pt"
    model = TinyDetector()
    info = load_checkpoint(path, model)  # strict load_state_dict: fails on any mismatch
    assert info["metadata"]["val_map_50"] >= 0.9


def test_make_finetune_optimizer_is_cosine_without_warmup() -> None:
    """Starts at lr (no warm-up), halfway at lr/2, ends at 0: lr_t = lr·(1 + cos(πt/T))/2."""
    from course_utils.train import make_finetune_optimizer

    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = make_finetune_optimizer(model, lr=2e-3, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]["weight_decay"] == 1e-4
    expected = [2e-3 * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(10)]
    assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12) for a, b in zip(lrs, expected)), lrs
    assert optimizer.param_groups[0]["lr"] < 1e-12


def test_drop_crowd_keeps_every_per_box_entry_in_step():
    from course_utils.models import drop_crowd

    t = {"boxes": torch.arange(12.0).reshape(3, 4), "labels": torch.tensor([1, 2, 3]), "iscrowd": torch.tensor([0, 1, 0]),
         "area": torch.tensor([4.0, 5.0, 6.0]), "image_id": torch.tensor(7)}
    out = drop_crowd(t)
    assert out["boxes"].tolist() == [[0, 1, 2, 3], [8, 9, 10, 11]] and out["labels"].tolist() == [1, 3]
    assert out["iscrowd"].tolist() == [0, 0] and out["area"].tolist() == [4.0, 6.0] and int(out["image_id"]) == 7
    plain = {"boxes": t["boxes"], "labels": t["labels"]}
    assert drop_crowd(plain) is plain


@pytest.mark.slow
def test_torchvision_detector_does_not_train_on_crowd_regions():
    """The Faster R-CNN wrapper's losses with a crowd box equal its losses without that box (same seed)."""
    from course_utils import build_torchvision_detector

    torch.manual_seed(0)
    model = build_torchvision_detector(num_classes=3).train()
    images = list(torch.rand(2, 3, 128, 128))
    boxes = [torch.tensor([[10.0, 10.0, 60.0, 50.0], [0.0, 0.0, 120.0, 120.0]]), torch.tensor([[5.0, 5.0, 30.0, 30.0]])]
    with_crowd = [{"boxes": boxes[0], "labels": torch.tensor([1, 2]), "iscrowd": torch.tensor([0, 1])},
                  {"boxes": boxes[1], "labels": torch.tensor([3]), "iscrowd": torch.tensor([1])}]
    without = [{"boxes": boxes[0][:1], "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    every_box = [{"boxes": b, "labels": t["labels"]} for b, t in zip(boxes, with_crowd)]
    losses = {}
    for name, targets in (("crowd", with_crowd), ("without", without), ("every box", every_box)):
        torch.manual_seed(1)
        losses[name] = {k: v.item() for k, v in model(images, targets).items()}
    torch.manual_seed(1)
    assert {k: v.item() for k, v in model(images, targets=with_crowd).items()} == losses["crowd"]
    assert losses["crowd"] == pytest.approx(losses["without"], rel=1e-6)
    assert losses["crowd"] != pytest.approx(losses["every box"], rel=1e-3), "the crowd boxes should have changed the loss"
