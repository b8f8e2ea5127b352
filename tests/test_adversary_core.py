"""Regression tests for the adversarial review's findings in the core modules (issue 14).

Each test names the finding it pins (see the review's IDs): data, models, train,
metrics and deploy refuse inputs they used to misread silently, or crash on
obscurely, with a course_utils error naming the value and the fix.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn

from course_utils.data import SceneConfig, SyntheticShapes, collate_detection
from course_utils.metrics import bootstrap_map, seed_difference, seed_summary
from course_utils.models import TinyDetector
from course_utils.train import Hook, StepState, fit, make_finetune_optimizer, make_optimizer, train_one_epoch

CFG = SceneConfig(image_size=32, min_size=6, max_size=16, max_objects=3)


@pytest.fixture(scope="module")
def loader() -> list:
    data = [SyntheticShapes(4, config=CFG)[i] for i in range(4)]
    return [collate_detection(data[:2]), collate_detection(data[2:])]


def small(**kw) -> TinyDetector:
    torch.manual_seed(0)
    return TinyDetector(width=0.25, depth=0, **kw)


def sgd(model: nn.Module, lr: float = 1e-2) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr)


# ------------------------------------------------------------------ E23b: OrtDetector anchors
@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
def test_e23b_ort_detector_matches_pytorch_on_sizes_not_a_multiple_of_the_stride(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from course_utils.deploy import DetectorNetwork, OrtDetector, export_onnx, ort_session
    from course_utils.quant import fuse_conv_bn

    model = small(score_threshold=0.5, detections_per_image=20)
    with torch.no_grad():  # spread the scores so that detections come from all over the 13x13 map
        model.cls_out.weight.normal_(0, 2.0, generator=torch.Generator().manual_seed(1))
        model.cls_out.bias.zero_()
        model.box_out.weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(2))
    model = fuse_conv_bn(model.eval())
    x = torch.rand(2, 3, 100, 100, generator=torch.Generator().manual_seed(3))
    onnx = export_onnx(DetectorNetwork(model), x[:1], tmp_path / "n.onnx")
    ort = OrtDetector(ort_session(onnx, threads=1), model)
    with torch.no_grad():
        expected, got = model(x), ort(x)
    assert sum(len(e["boxes"]) for e in expected) > 0
    for e, g in zip(expected, got):
        assert torch.equal(e["labels"], g["labels"])
        assert torch.allclose(e["boxes"], g["boxes"], atol=1e-3) and torch.allclose(e["scores"], g["scores"], atol=1e-4)


def test_e23b_ort_detector_refuses_a_network_of_another_size() -> None:
    from course_utils.deploy import OrtDetector

    class FakeSession:  # returns the 4x4 grid of a 32x32 network whatever the input
        def run(self, _, feeds):
            batch = feeds["images"].shape[0]
            return np.zeros((batch, 16, 3), np.float32), np.zeros((batch, 16, 4), np.float32)

    with pytest.raises(ValueError, match="16 locations.*6x6 = 36"):
        OrtDetector(FakeSession(), small())(torch.rand(1, 3, 48, 48))


# ------------------------------------------------------------------ M44: seed_summary of a dict
def test_m44_seed_summary_refuses_a_dict() -> None:
    with pytest.raises(TypeError, match=r"list\(d.values\(\)\)"):
        seed_summary({0: 0.31, 1: 0.33, 2: 0.35})
    with pytest.raises(TypeError, match=r"list\(d.values\(\)\)"):
        seed_difference({0: 0.3, 1: 0.31}, {0: 0.32, 1: 0.35})
    assert seed_summary(list({0: 0.31, 1: 0.33, 2: 0.35}.values()))["mean"] == pytest.approx(0.33)


def test_m42_m43_m50_seed_values_must_be_numbers() -> None:
    with pytest.raises(TypeError, match="list of per-seed values"):
        seed_summary(0.31)
    with pytest.raises(TypeError, match="list of per-seed values"):
        seed_summary("0.31")
    with pytest.raises(ValueError, match="entry 1 is 'n/a'"):
        seed_summary(["0.31", "n/a"])
    with pytest.raises(ValueError, match="entry 1 is 'x'"):
        seed_difference(["0.3", "x"], [0.3, 0.31])
    # still accepted: tuples, arrays, tensors, bools
    assert seed_summary(torch.tensor([0.25, 0.75]))["mean"] == 0.5
    assert seed_summary(np.array([1.0, 2.0]))["runs"] == [1.0, 2.0]
    assert seed_summary([True, False])["mean"] == 0.5


def test_m30_m32_bootstrap_accepts_numpy_ints_and_checks_the_seed() -> None:
    preds = [{"boxes": [[0, 0, 9, 9]], "scores": [0.9], "labels": [1]}] * 2
    targets = [{"boxes": [[0, 0, 9, 9]], "labels": [1]}] * 2
    assert bootstrap_map(preds, targets, n_boot=np.int64(5))["n_boot"] == 5
    with pytest.raises(ValueError, match="seed=-1"):
        bootstrap_map(preds, targets, n_boot=5, seed=-1)


# ------------------------------------------------------------------ T20: stale optimizer
def test_t20_fit_refuses_an_optimizer_built_before_pruning(loader) -> None:
    from course_utils.prune import prune_detector

    model = small()
    optimizer = sgd(model, 0.1)
    model = prune_detector(model, 0.5)
    with pytest.raises(ValueError, match="none of the optimizer's .* parameters belongs to the model.*after pruning"):
        fit(model, loader, optimizer, 1, progress=False)


def test_t20_fit_refuses_layers_replaced_after_the_optimizer(loader) -> None:
    model = small()
    optimizer = sgd(model)
    model.cls_out = nn.Conv2d(model.cls_out.in_channels, 3, 1)  # replaced: the optimizer holds the old one
    with pytest.raises(ValueError, match="misses 2 of the model's .*cls_out"):
        fit(model, loader, optimizer, 1, progress=False)


def test_t20_partial_optimizers_and_hook_parameters_still_train(loader) -> None:
    model = small()
    head_only = torch.optim.SGD(list(model.cls_out.parameters()) + list(model.box_out.parameters()), lr=1e-2)
    before = model.cls_out.weight.clone()
    fit(model, loader, head_only, 1, progress=False, max_steps=1)
    assert not torch.equal(before, model.cls_out.weight)
    extra = nn.Linear(2, 2)  # e.g. a distillation adapter an earlier run added to this optimizer
    optimizer = sgd(model)
    optimizer.add_param_group({"params": list(extra.parameters())})
    fit(model, loader, optimizer, 1, progress=False, max_steps=1)


def test_t19_t22_fit_refuses_no_optimizer_and_a_frozen_model(loader) -> None:
    model = small()
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        fit(model, loader, None, 1, progress=False)
    optimizer = sgd(model)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        fit(model, loader, optimizer, 1, progress=False)


# ------------------------------------------------------------------ X02 / X31: image dtype and NaN
def test_x02_uint8_images_are_refused() -> None:
    model = small().eval()
    x8 = (torch.rand(3, 32, 32) * 255).to(torch.uint8)
    for call in (model, model.forward_raw):
        with pytest.raises(TypeError, match=r"img.float\(\) / 255"):
            call([x8])
    model.train()
    with pytest.raises(TypeError, match=r"img.float\(\) / 255"):
        model([x8], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])


def test_x31_nan_pixels_are_refused_in_eval() -> None:
    x = torch.rand(3, 32, 32)
    x[:, 5, 5] = float("nan")
    with torch.no_grad(), pytest.raises(ValueError, match="NaN pixels"):
        small(score_threshold=0.0).eval()([x])


def test_x05_x08_empty_and_unbatched_inputs() -> None:
    model = small().eval()
    with pytest.raises(ValueError, match="empty list"):
        model([])
    with pytest.raises(ValueError, match=r"pass \[image\] or image\[None\]"):
        model(torch.rand(3, 32, 32))


def test_valid_inputs_give_the_same_outputs_as_before() -> None:
    """Checks only refuse: for a valid float batch the outputs are the unchecked network's, bit for bit."""
    model = small(score_threshold=0.0).eval()
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = model.forward_raw(list(x))
        logits, deltas = model.head(model.features(x))
    assert torch.equal(raw["logits"], logits) and torch.equal(raw["deltas"], deltas)
    assert raw["anchors"].shape == (25, 4)


# ------------------------------------------------------------------ X23-X28: constructor numbers
@pytest.mark.parametrize("kwargs, match", [
    (dict(detections_per_image=-1), "detections_per_image"),
    (dict(score_threshold=float("nan")), "score_threshold"),
    (dict(nms_threshold=1.5), "nms_threshold"),
    (dict(num_classes=2.5), "num_classes"),
    (dict(num_classes="3"), "num_classes"),
    (dict(width=float("nan")), "width"),
    (dict(anchor_scale=0), "anchor_scale"),
])
def test_x23_x28_detector_constructor_refuses_bad_numbers(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        TinyDetector(**kwargs)


def test_detector_constructor_accepts_numpy_numbers() -> None:
    model = TinyDetector(num_classes=np.int64(2), width=np.float32(0.25), depth=np.int64(0),
                         detections_per_image=np.int64(5))
    assert type(model.num_classes) is int and type(model.detections_per_image) is int
    assert model.cls_out.out_channels == 2


# ------------------------------------------------------------------ fit's arguments (T06, T10-T12, T14, T15, T17, T18, T21)
def test_t17_fit_accepts_a_device_string(loader) -> None:
    model = small()
    assert "loss" in fit(model, loader, sgd(model), 1, device="cpu", progress=False, max_steps=1)


def test_t18_fit_refuses_a_single_hook(loader) -> None:
    from course_utils.clipping import GradientClipping

    model = small()
    with pytest.raises(TypeError, match=r"hooks=\[GradientClipping\(...\)\]"):
        fit(model, loader, sgd(model), 1, hooks=GradientClipping(), progress=False)


def test_t06_scheduler_too_short_for_the_run_is_refused_up_front(loader) -> None:
    model = small()
    optimizer, scheduler = make_optimizer(model, 1e-3, total_steps=len(loader))
    before = model.cls_out.weight.clone()
    with pytest.raises(ValueError, match=r"total_steps=2.*epochs \* len\(loader\) = 2 \* 2"):
        fit(model, loader, optimizer, 2, scheduler=scheduler, progress=False)
    assert torch.equal(before, model.cls_out.weight)  # refused before training
    fit(model, loader, optimizer, 2, scheduler=scheduler, progress=False, max_steps=2)  # fits with max_steps


@pytest.mark.parametrize("make, kwargs, match", [
    (make_optimizer, dict(lr=-1e-3, total_steps=10), "lr"),
    (make_optimizer, dict(lr=1e-3, total_steps=0), "total_steps"),
    (make_optimizer, dict(lr=1e-3, total_steps=10, warmup=15), "warmup"),
    (make_finetune_optimizer, dict(lr=1e-3, total_steps=0), "total_steps"),
    (make_finetune_optimizer, dict(lr="1e-3", total_steps=10), "lr"),
])
def test_t07_t11_optimizer_factories_check_their_numbers(make, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        make(small(), **kwargs)


@pytest.mark.parametrize("value, match", [
    (None, "must return a dict"),
    ({"loss_vec": torch.ones(3, requires_grad=True)}, r"shape \(3,\)"),
    ({"loss_const": 0.1}, "got float"),
])
def test_t12_t14_t15_extra_losses_must_be_scalar_tensors(loader, value, match) -> None:
    class Bad(Hook):
        def extra_losses(self, state):
            return value

    model = small()
    with pytest.raises(TypeError, match=f"Bad.extra_losses.*{match}"):
        fit(model, loader, sgd(model), 1, hooks=[Bad()], progress=False)


def test_t21_train_one_epoch_refuses_max_steps_zero(loader) -> None:
    model = small()
    state = StepState(model=model, optimizer=sgd(model))
    with pytest.raises(ValueError, match="max_steps"):
        train_one_epoch(model, state.optimizer, loader, torch.device("cpu"), state, max_steps=0, progress=False)


# ------------------------------------------------------------------ data (D22, D73, D76b, D82-D84, D86, D87, D89, D92, D94)
def test_d76b_d92_numpy_seeds_and_indices(tmp_path) -> None:
    from torch.utils.data import Subset

    from course_utils.data import render_scene, write_coco_split

    pixels, objects = render_scene(np.int64(3), CFG)
    expected = render_scene(3, CFG)
    assert np.array_equal(pixels, expected[0]) and objects == expected[1]
    ds = SyntheticShapes(10, config=CFG)
    image, target = Subset(ds, np.arange(4))[2]
    assert torch.equal(image, ds[2][0]) and type(target["image_id"]) is int
    write_coco_split(tmp_path / "np", [np.int64(5)], CFG)  # json-serialisable seeds


def test_d82_d84_synthetic_shapes_indexing() -> None:
    ds = SyntheticShapes(5, config=CFG)
    assert torch.equal(ds[-1][0], ds[4][0]) and ds[-1][1]["image_id"] == 4
    with pytest.raises(IndexError, match="out of range"):
        ds[5]
    for bad in (1.5, slice(2, 4)):
        with pytest.raises(TypeError, match="index must be an int"):
            ds[bad]


def test_d73_sub_pixel_objects_are_refused() -> None:
    with pytest.raises(ValueError, match="min_size=0.001.*below one pixel"):
        SceneConfig(min_size=0.001, max_size=0.004)
    SceneConfig(image_size=1, min_size=1, max_size=1)  # a 1-pixel object is still fine


def test_d94_write_coco_split_does_not_overwrite_a_dataset(tmp_path) -> None:
    from course_utils.data import write_coco_split

    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "annotations.json").write_text('{"my": "labels"}')
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_coco_split(root, [5], CFG)
    assert (root / "annotations.json").read_text() == '{"my": "labels"}'
    write_coco_split(root, [5], CFG, overwrite=True)
    write_coco_split(tmp_path / "fresh", [5], CFG)  # a new folder (or an empty one) needs no flag


def test_d22_crowd_annotations_are_carried_and_bad_flags_refused(tmp_path) -> None:
    """Crowd regions (iscrowd=1) were refused until the metric could ignore them; now they are carried in the
    targets (issue 16) and a flag other than 0/1 is refused clearly."""
    import json

    from PIL import Image

    from course_utils.data import CocoDetection, DatasetError

    root = tmp_path / "crowd"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(root / "images/a.png")
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 5, 5], "iscrowd": 1, "area": 20.5},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [8, 8, 4, 4]}]
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 16, "height": 16}], "annotations": anns, "categories": [{"id": 1}]}
    (root / "annotations.json").write_text(json.dumps(data))
    target = CocoDetection(root / "annotations.json")[0][1]
    assert target["iscrowd"].tolist() == [1, 0] and target["area"].tolist() == [20.5, 16.0]
    for bad, match in ((2, "iscrowd=2"), ("yes", "iscrowd='yes'"), (0.5, "iscrowd=0.5")):
        anns[0]["iscrowd"] = bad
        (root / "annotations.json").write_text(json.dumps(data))
        with pytest.raises(DatasetError, match=match):
            CocoDetection(root / "annotations.json")
    anns[0]["iscrowd"], anns[0]["area"] = 1, -3
    (root / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="area=-3"):
        CocoDetection(root / "annotations.json")


def test_d86_d87_d89_collate_and_materialize_explain_bad_input() -> None:
    from course_utils.data import materialize

    with pytest.raises(ValueError, match="empty batch"):
        collate_detection([])
    with pytest.raises(ValueError, match=r"\(image, target\) pairs"):
        collate_detection([torch.zeros(3, 8, 8), torch.zeros(3, 8, 8)])
    with pytest.raises(TypeError, match="generator"):
        materialize(x for x in range(3))


# ------------------------------------------------------------------ deploy (E02, E03, E05, E08, E10, E31)
def test_e02_e03_e05_e08_cpuinfo_parsing(tmp_path) -> None:
    from course_utils.deploy import cpu_info, cpu_int8_features

    p = tmp_path / "cpuinfo"
    p.write_text("flags_ext\t: none\nflags\t\t: avx2 avx512f\n")
    assert cpu_int8_features(p)["avx2"] and cpu_int8_features(p)["avx512f"]
    for content in (b"\xff\xfe flags: avx2\n", b"flags avx2 avx512f\n", b"model name Intel\n"):
        p.write_bytes(content)
        assert not any(cpu_int8_features(p).values())
        assert cpu_info(p)["model"] == "unknown"


def test_e10_e31_file_size_and_ort_threads(tmp_path) -> None:
    from course_utils.deploy import file_size, ort_session

    (tmp_path / "dir").mkdir()
    with pytest.raises(FileNotFoundError, match="is a folder"):
        file_size(tmp_path / "dir")
    (tmp_path / "f.bin").write_bytes(b"1234")
    assert file_size(tmp_path / "f.bin") == 4
    pytest.importorskip("onnxruntime")
    with pytest.raises(ValueError, match="threads"):
        ort_session(tmp_path / "f.bin", threads=-1)
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        ort_session(tmp_path / "missing.onnx")


# ------------------------------------------------------------------ X20: a target box outside the image
def test_x20_a_box_entirely_outside_the_image_is_refused() -> None:
    model = small().train()
    far = {"boxes": torch.tensor([[500.0, 500, 600, 600]]), "labels": torch.tensor([1])}
    with pytest.raises(ValueError, match="row 0 .* entirely outside the image"):
        model([torch.rand(3, 32, 32)], [far])
    partly = {"boxes": torch.tensor([[-5.0, -5, 6, 6], [30.0, 30, 40, 40]]), "labels": torch.tensor([1, 2])}
    assert torch.isfinite(sum(model([torch.rand(3, 32, 32)], [partly]).values()))  # overlapping the edge is fine


def test_x01_x03_x04_grey_float64_and_mixed_size_images() -> None:
    model = small().eval()
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels.*expand"):
        model([torch.rand(1, 32, 32)])
    with pytest.raises(TypeError, match="torch.float64.*img.to"):
        model([torch.rand(3, 32, 32).double()])
    with pytest.raises(ValueError, match="same shape"):
        model([torch.rand(3, 32, 32), torch.rand(3, 40, 40)])
    assert len(model.double()([torch.rand(3, 32, 32).double()])) == 1  # a float64 model takes float64 images


# ------------------------------------------------------------------ checkpoints, predict, export (K05, K06, K21, T26, E21, E25, E26, E33, E34)
def test_k05_k06_k21_save_checkpoint_explains_bad_paths_and_arguments(tmp_path) -> None:
    from course_utils.train import save_checkpoint

    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        save_checkpoint(tmp_path / "f" / "m.pt", nn.Linear(2, 2))
    (tmp_path / "d.pt").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        save_checkpoint(tmp_path / "d.pt", nn.Linear(2, 2))
    with pytest.raises(TypeError, match="not model.state_dict"):
        save_checkpoint(tmp_path / "s.pt", nn.Linear(2, 2).state_dict())
    assert save_checkpoint(tmp_path / "sub" / "ok.pt", nn.Linear(2, 2)).is_file()


def test_t26_predict_refuses_bare_image_batches(loader) -> None:
    from course_utils.train import predict

    with pytest.raises(ValueError, match=r"\(images, targets\)"):
        predict(small(), [[torch.rand(3, 32, 32), torch.rand(3, 32, 32)]])
    preds, targets = predict(small(), loader)
    assert len(preds) == len(targets) == 4


def test_e21_e25_e26_e33_e34_export_and_runner_arguments(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from course_utils.deploy import DetectorNetwork, export_onnx, ort_network_runner, quantize_onnx

    with pytest.raises(ValueError, match="1 channels.*takes 3"):
        export_onnx(DetectorNetwork(small()), torch.rand(1, 1, 32, 32), tmp_path / "bad.onnx")
    with pytest.raises(TypeError, match="torch.stack"):
        quantize_onnx(tmp_path / "x.onnx", tmp_path / "q.onnx", [torch.rand(3, 32, 32)])
    with pytest.raises(ValueError, match="batch_size"):
        quantize_onnx(tmp_path / "x.onnx", tmp_path / "q.onnx", torch.rand(2, 3, 32, 32), batch_size=0)
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "q.onnx", torch.rand(2, 3, 32, 32))
    for kwargs in (dict(batch=1.5), dict(image_size=(128, 128))):
        with pytest.raises(ValueError, match="must be an int >= 1"):
            ort_network_runner(small(), **kwargs)


def test_t23_default_collate_loader_is_refused_up_front() -> None:
    from torch.utils.data import DataLoader

    from course_utils.train import predict

    model = small()
    plain = DataLoader(SyntheticShapes(4, config=CFG), batch_size=2)
    with pytest.raises(ValueError, match="collate_fn=collate_detection"):
        fit(model, plain, sgd(model), 1, progress=False)
    with pytest.raises(ValueError, match="collate_fn=collate_detection"):
        predict(model, plain)


def test_d79_huge_canvas_is_refused_and_numpy_total_steps_accepted(loader) -> None:
    with pytest.raises(ValueError, match="supersample.*8192"):
        SceneConfig(supersample=100000)
    model = small()
    optimizer, scheduler = make_optimizer(model, 1e-3, total_steps=np.int64(4))
    fit(model, loader, optimizer, np.int64(2), scheduler=scheduler, progress=False)


def test_t13_a_hook_cannot_silently_replace_the_models_loss():
    from course_utils import Hook, SyntheticShapes, TinyDetector, collate_detection, fit, materialize
    from torch.utils.data import DataLoader

    class Replacer(Hook):
        def extra_losses(self, state):
            return {"loss_cls": 0 * state.losses["loss_cls"]}

    torch.manual_seed(0)
    model = TinyDetector(width=0.25)
    loader = DataLoader(materialize(SyntheticShapes(4, seed=0), progress=False), batch_size=2, collate_fn=collate_detection)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match=r"loss_cls.*replaces_losses"):
        fit(model, loader, optimizer, 1, hooks=[Replacer()], progress=False)

    class DeliberateReplacer(Replacer):
        replaces_losses = ("loss_cls",)

    history = fit(model, loader, optimizer, 1, hooks=[DeliberateReplacer()], progress=False)
    assert history["loss_cls"] == [0.0, 0.0]


def test_rerun_findings_n14_n18_n54_n58_n63():
    """Second adversary pass: iscrowd null is an ordinary object, overwrite removes the old split's extra images,
    count_flops follows the model's dtype, a learnable temperature is accepted, numpy seeds work everywhere."""
    import json as _json
    import tempfile
    from pathlib import Path

    from course_utils.data import CocoDetection, write_coco_split
    from course_utils.distill import kd_loss
    from course_utils.prune import count_flops
    from course_utils.train import seed_everything

    root = Path(tempfile.mkdtemp())
    write_coco_split(root, [1, 2, 3], SceneConfig())
    write_coco_split(root, [5], SceneConfig(), overwrite=True)
    assert sorted(p.name for p in (root / "images").iterdir()) == ["00001.jpg"]
    doc = _json.loads((root / "annotations.json").read_text())
    for ann in doc["annotations"]:
        ann["iscrowd"] = None
    (root / "annotations.json").write_text(_json.dumps(doc))
    assert len(CocoDetection(root / "annotations.json")[0][1]["boxes"]) == len(doc["annotations"])
    assert count_flops(TinyDetector(width=0.25).to(torch.bfloat16), (32, 32)) == count_flops(TinyDetector(width=0.25), (32, 32))
    t = nn.Parameter(torch.tensor(2.0))
    kd_loss(torch.randn(4, 5), torch.randn(4, 5), temperature=t).backward()
    assert t.grad is not None
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.randn(4, 5), torch.randn(4, 5), temperature=torch.tensor(float("nan")))
    seed_everything(np.int64(3))
    with pytest.raises(TypeError, match="seed must be an integer"):
        seed_everything(1.5)


def test_rerun_finding_n33_head_and_an_extra_tensor_train():
    from course_utils import collate_detection, materialize
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    model = TinyDetector(width=0.25)
    loader = DataLoader(materialize(SyntheticShapes(4, seed=0), progress=False), batch_size=2, collate_fn=collate_detection)
    extra = nn.Parameter(torch.zeros(()))
    head = [p for n, p in model.named_parameters() if n.startswith(("cls_out", "box_out"))]
    before = [p.clone() for p in head]
    fit(model, loader, torch.optim.SGD(head + [extra], lr=1e-2), 1, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, head))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rerun_findings_n20_n68_half_precision_detections(dtype):
    torch.manual_seed(0)
    model = TinyDetector(width=0.25).eval()
    images = torch.rand(2, 3, 32, 32)
    model.score_threshold = 0.0  # keep candidates: NMS must run
    with torch.no_grad():
        full = model(images)
        half = model.to(dtype)(images.to(dtype))
    # half precision rounds the boxes, so NMS may keep a few more or fewer; it must run and stay close
    assert all(0 < len(h["boxes"]) <= model.detections_per_image for h in half)
    assert all(abs(len(h["boxes"]) - len(f["boxes"])) <= len(f["boxes"]) // 2 for h, f in zip(half, full))
    assert half[0]["boxes"].dtype == dtype


def test_rerun_finding_n63_clip_lab_run_takes_a_numpy_seed():
    from course_utils.clipping import clip_lab_run

    assert clip_lab_run(steps=2, seed=np.int64(3)) == clip_lab_run(steps=2, seed=3)


def test_rerun_mild_crashes_now_speak_course_utils(tmp_path):
    """P28/P30/K17 (a checkpoint of another shape), E24/E32 (ONNX size and file), K18 (CUDA map_location on a CPU
    machine), N19 (a 0-dim tensor index), N46 (n_boot as a numpy integer)."""
    from course_utils.deploy import DetectorNetwork, OrtDetector, export_onnx, ort_session
    from course_utils.metrics import bootstrap_map
    from course_utils.prune import shrink_to_state_dict
    from course_utils.train import load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path / "w05.pt", TinyDetector(width=0.5))
    with pytest.raises(ValueError, match="does not fit this TinyDetector"):
        load_checkpoint(tmp_path / "w05.pt", TinyDetector(width=0.25))
    with pytest.raises(ValueError, match="wider detector"):
        shrink_to_state_dict(TinyDetector(width=0.25), TinyDetector(width=0.5).state_dict())
    with pytest.raises(ValueError, match="lacks"):
        shrink_to_state_dict(TinyDetector(width=0.25), TinyDetector(width=0.25, depth=2).state_dict())
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="map_location='cpu'"):
            load_checkpoint(tmp_path / "w05.pt", map_location="cuda:7")
    (tmp_path / "t.onnx").write_text("not a model")
    with pytest.raises(ValueError, match="cannot load this file"):
        ort_session(tmp_path / "t.onnx", threads=1)
    model = TinyDetector(width=0.25).eval()
    path = export_onnx(DetectorNetwork(model), torch.rand(1, 3, 32, 32), tmp_path / "n.onnx")
    ort = OrtDetector(ort_session(path, threads=1), model)
    shape = ort.session.get_inputs()[0].shape
    if isinstance(shape[-1], int):  # the export fixed the image size
        with pytest.raises(ValueError, match="export it again"):
            ort(torch.rand(1, 3, 48, 48))
    assert SyntheticShapes(5)[torch.tensor(2)][0].shape == SyntheticShapes(5)[2][0].shape
    preds = [{"boxes": torch.tensor([[10., 10, 50, 50]]), "scores": torch.tensor([.9]), "labels": torch.tensor([1])}] * 2
    targets = [{"boxes": torch.tensor([[10., 10, 50, 50]]), "labels": torch.tensor([1])}] * 2
    assert type(bootstrap_map(preds, targets, n_boot=np.int64(20))["n_boot"]) is int
