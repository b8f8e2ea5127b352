"""Regression tests for the adversarial review's findings in quant, prune, distill and clipping.

Each test names the finding it covers (IDs from the review report). Before the fixes
these calls returned wrong numbers silently, or crashed with an unrelated message.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from course_utils import distill as S
from course_utils import prune as P
from course_utils import quant as Q
from course_utils.data import SceneConfig, SyntheticShapes, collate_detection
from course_utils.models import TinyDetector
from course_utils.train import fit

CFG = SceneConfig(image_size=32, min_size=6, max_size=16, max_objects=3)


def _det(**kw: object) -> TinyDetector:
    return TinyDetector(width=0.25, **kw)


@pytest.fixture(scope="module")
def data() -> list:
    return [SyntheticShapes(4, config=CFG)[i] for i in range(4)]


@pytest.fixture(scope="module")
def loader(data: list) -> list:
    return [collate_detection(data[:2]), collate_detection(data[2:])]


@pytest.fixture(scope="module")
def images(data: list) -> torch.Tensor:
    return torch.stack([d[0] for d in data])


def _sgd(model: nn.Module, lr: float = 1e-3) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr)


# ===================================================================== quant: silent wrong results
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_q16_fake_quantize_equals_torch_in_every_float_dtype(dtype: torch.dtype) -> None:
    x = (torch.randn(2000, generator=torch.Generator().manual_seed(1)) * 2).to(dtype)
    got = Q.fake_quantize(x, 0.0173, 7, 0, 255)
    want = torch.fake_quantize_per_tensor_affine(x, 0.0173, 7, 0, 255)
    assert got.dtype == want.dtype == dtype
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_q16_fake_quantize_per_channel_equals_torch_in_every_float_dtype(dtype: torch.dtype) -> None:
    x = (torch.randn(4, 500, generator=torch.Generator().manual_seed(2)) * 2).to(dtype)
    s = torch.tensor([0.0173, 0.02, 0.011, 0.03])
    z = torch.tensor([7, 0, 100, 128], dtype=torch.int32)
    got = Q.fake_quantize_per_channel(x, s, z, 0, 0, 255)
    want = torch.fake_quantize_per_channel_affine(x, s, z, 0, 0, 255)
    assert got.dtype == want.dtype == dtype
    assert torch.equal(got, want)


def test_q16_half_gradient_is_the_ste_mask() -> None:
    x = (torch.randn(100, generator=torch.Generator().manual_seed(3)) * 3).half().requires_grad_()
    Q.fake_quantize(x, 0.02, 128, 0, 255).sum().backward()
    xr = x.detach().clone().requires_grad_()
    torch.fake_quantize_per_tensor_affine(xr, 0.02, 128, 0, 255).sum().backward()
    assert x.grad.dtype == torch.float16 and torch.equal(x.grad, xr.grad)


def test_q01_calc_qparams_refuses_swapped_range() -> None:
    with pytest.raises(ValueError, match="swapped"):
        Q.calc_qparams(5.0, -5.0)
    with pytest.raises(ValueError, match="swapped"):
        Q.calc_qparams(torch.tensor([-1.0, 2.0]), torch.tensor([1.0, 1.0]))
    scale, zp = Q.calc_qparams(0.0, 0.0)  # an empty range stays allowed (all-zero tensor)
    assert float(scale) > 0 and int(zp) == 0


def test_q05_calc_qparams_refuses_mismatched_channel_counts() -> None:
    with pytest.raises(ValueError, match="same shape"):
        Q.calc_qparams(-torch.ones(3), torch.ones(4))


def test_q01_observers_unaffected_and_calc_qparams_unchanged_for_valid_ranges() -> None:
    obs = Q.MinMaxObserver()
    obs(torch.linspace(-2, 3, 50))
    s, z = obs.calculate_qparams()
    s2, z2 = Q.calc_qparams(torch.tensor(-2.0), torch.tensor(3.0))
    assert torch.equal(s, s2.reshape(())) and torch.equal(z, z2.reshape(()))


def test_q34_lsq_refuses_negative_q_n() -> None:
    q_min, q_max = Q.qrange(4, True)
    with pytest.raises(ValueError, match="q_n=-q_min"):
        Q.lsq_fake_quantize(torch.linspace(-1, 1, 9), torch.tensor(0.1), q_min, q_max)
    out = Q.lsq_fake_quantize(torch.linspace(-1, 1, 9), torch.tensor(0.1), -q_min, q_max)
    assert float(out.min()) < 0 < float(out.max())


@pytest.mark.parametrize("step", [0.0, -0.1, float("nan"), float("inf")])
def test_q35_lsq_refuses_bad_step(step: float) -> None:
    with pytest.raises(ValueError, match="step must be finite and > 0"):
        Q.lsq_fake_quantize(torch.tensor([0.0, 0.5]), torch.tensor(step), 8, 7)


def test_lsq_quantizer_still_trains() -> None:
    quantizer = Q.LSQQuantizer(4)
    v = torch.randn(64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    quantizer(v).pow(2).sum().backward()
    assert quantizer.step.grad is not None and torch.isfinite(quantizer.step.grad)


@pytest.mark.parametrize("fn", [Q.quant_mse, Q.sqnr_db])
def test_q40_q41_error_measures_refuse_shape_mismatch(fn: object) -> None:
    x = torch.randn(100)
    with pytest.raises(ValueError, match="same shape"):
        fn(x, (x + 0.01)[:, None])
    assert fn(x, x + 0.01) == fn(x.clone(), x + 0.01)  # same-shape inputs still work


@pytest.mark.parametrize("fn", [Q.quant_mse, Q.sqnr_db])
def test_q42_error_measures_refuse_empty(fn: object) -> None:
    with pytest.raises(ValueError, match="empty"):
        fn(torch.zeros(0), torch.zeros(0))


def test_q30_mse_observer_refuses_no_candidates() -> None:
    with pytest.raises(ValueError, match="num_candidates"):
        Q.MSEObserver(num_candidates=0)
    with pytest.raises(ValueError, match="min_ratio"):
        Q.MSEObserver(min_ratio=0.0)
    Q.MSEObserver(num_candidates=np.int64(10))  # numpy integers are integers


def test_q48_range_tradeoff_refuses_negative_x() -> None:
    with pytest.raises(ValueError, match="x >= 0"):
        Q.range_tradeoff(torch.tensor([-1.0, 0.5]), 8, [1.0])


@pytest.mark.parametrize("top", [-1.0, 0.0, float("nan")])
def test_q49_range_tradeoff_refuses_bad_top(top: float) -> None:
    with pytest.raises(ValueError, match="top"):
        Q.range_tradeoff(torch.rand(100), 8, [top])


def test_range_tradeoff_accepts_a_tensor_of_tops() -> None:
    x = torch.rand(100, generator=torch.Generator().manual_seed(0))
    assert Q.range_tradeoff(x, 4, torch.linspace(0.1, 1.0, 3)) == Q.range_tradeoff(x, 4, [float(t) for t in torch.linspace(0.1, 1.0, 3)])


class _ConvReluBn(nn.Module):
    """Registered (conv, bn) but applied conv -> relu -> bn: not a foldable pair."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.relu = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.relu(self.conv(x)))


class _ConvBnRelu(_ConvReluBn):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def test_q50_fuse_conv_bn_does_not_fold_across_a_relu() -> None:
    torch.manual_seed(0)
    block = _ConvReluBn().eval()
    block.bn.bias.data.fill_(1.0)
    x = torch.randn(1, 3, 8, 8)
    assert Q.conv_bn_pairs(block) == []
    assert torch.allclose(Q.fuse_conv_bn(block)(x), block(x))


def test_q50_fuse_conv_bn_still_folds_a_direct_pair_in_a_plain_module() -> None:
    torch.manual_seed(0)
    block = _ConvBnRelu().eval()
    block.bn.bias.data.fill_(1.0)
    x = torch.randn(1, 3, 8, 8)
    fused = Q.fuse_conv_bn(block)
    assert isinstance(fused.bn, nn.Identity)
    assert torch.allclose(fused(x), block(x), atol=1e-5)


def test_q62_calibrate_refuses_a_float_model(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="quantize_model"):
        Q.calibrate(_det(), [images])


# ===================================================================== quant: obscure crashes
def test_q19_per_channel_on_a_0dim_tensor() -> None:
    with pytest.raises(ValueError, match="0-dim"):
        Q.fake_quantize_per_channel(torch.tensor(1.0), torch.tensor([0.1]), torch.tensor([0]), 0, -128, 127)


def test_q51_fuse_conv_bn_without_affine() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False))
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    fused = Q.fuse_conv_bn(model)
    assert isinstance(fused[1], nn.Identity)
    assert torch.allclose(fused(x), model(x), atol=1e-5)


def test_q52_fuse_conv_bn_leaves_a_bn_without_running_stats() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    x = torch.randn(2, 3, 8, 8)
    fused = Q.fuse_conv_bn(model)
    assert isinstance(fused[1], nn.BatchNorm2d)
    assert torch.allclose(fused(x), model(x))
    with pytest.raises(ValueError, match="running statistics"):
        Q.fold_bn(model[0], model[1])


def test_q55_skip_as_a_bare_string_is_refused() -> None:
    with pytest.raises(ValueError, match=r"skip=\['stem.0'\]"):
        Q.quantize_model(_det(), skip="stem.0")
    with pytest.raises(ValueError, match=r"skip=\['stem.0'\]"):
        Q.prepare_qat(_det(), skip="stem.0")


# ===================================================================== prune
def test_p33_count_flops_of_quantized_copies(images: torch.Tensor) -> None:
    model = _det().eval()
    float_macs = P.count_flops(model, (32, 32))
    ptq = Q.post_training_quantize(model, [images])
    qat = Q.calibrate(Q.prepare_qat(model), [images], lambda m, b: m.forward_raw(b))
    assert float_macs > 0
    assert P.count_flops(ptq, (32, 32)) == float_macs
    assert P.count_flops(qat, (32, 32)) == float_macs


def test_p19_channel_masks_refuse_nan_weights() -> None:
    model = _det()
    with torch.no_grad():
        model.stem[0].weight[3] = float("nan")
    with pytest.raises(ValueError, match="'stem'.*NaN"):
        P.channel_masks(model, 0.5)


@pytest.mark.parametrize("strength", [float("nan"), float("inf"), -1.0, "1e-4"])
def test_p43_p45_slimming_penalty_validates_strength(strength: object) -> None:
    with pytest.raises(ValueError, match="strength"):
        P.SlimmingPenalty(strength)


def test_p37_sensitivity_scan_refuses_a_bare_string() -> None:
    with pytest.raises(ValueError, match=r"groups=\['stem'\]"):
        P.sensitivity_scan(_det(), lambda m: 0.0, ratios=[0.5], groups="stem")


def test_p41_iterative_prune_refuses_a_generator(loader: list) -> None:
    with pytest.raises(ValueError, match="list\\(batches\\)"):
        P.iterative_prune(_det(), (b for b in loader), [0.5])


def test_channel_masks_accept_numpy_integers() -> None:
    model = _det()
    assert P.channel_masks(model, 0.5, multiple_of=np.int64(2)).keys() == P.channel_masks(model, 0.5, multiple_of=2).keys()


# ===================================================================== distill
@pytest.mark.parametrize("weight", [-1.0, float("nan"), "1"])
def test_s10_s11_distiller_refuses_bad_weights(weight: object) -> None:
    with pytest.raises(ValueError, match="weights\\['cls'\\]"):
        S.Distiller(_det(), {"cls": weight})


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), float("inf"), "4"])
def test_s02_s09_temperatures_are_validated_at_construction_and_call(temperature: object) -> None:
    with pytest.raises(ValueError, match="temperature"):
        S.Distiller(_det(), {"cls": 1.0}, temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        S.kd_loss(torch.randn(4, 5), torch.randn(4, 5), temperature)
    with pytest.raises(ValueError, match="temperature"):
        S.SoftTargetDistiller(_det(), temperature=temperature)


@pytest.mark.parametrize("temperature", [0, float("nan")])
def test_s23_dense_cls_distill_loss_refuses_bad_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        S.dense_cls_distill_loss(torch.randn(2, 6, 3), torch.randn(2, 6, 3), temperature=temperature)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5])
def test_s14_s15_s19_batch_size_must_be_positive(data: list, batch_size: object) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        S.cache_teacher_outputs(_det(), data, batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size"):
        S.pseudo_label(_det(), data, batch_size=batch_size)


def test_batch_size_accepts_numpy_integers(data: list) -> None:
    assert len(S.cache_teacher_outputs(_det(), data, batch_size=np.int64(3))) == len(data)


def test_s12_teacher_with_other_classes_is_refused(loader: list) -> None:
    student = _det()
    hook = S.Distiller(TinyDetector(width=0.5, num_classes=1), {"cls": 1.0})
    with pytest.raises(ValueError, match="1 classes and the student 3"):
        fit(student, loader, _sgd(student), 1, hooks=[hook], progress=False)
    with pytest.raises(ValueError, match="differ in shape"):
        S.dense_cls_distill_loss(torch.randn(2, 6, 3), torch.randn(2, 6, 1))


def test_s30_kd_loss_refuses_1d_logits() -> None:
    with pytest.raises(ValueError, match="1-D"):
        S.kd_loss(torch.randn(8), torch.randn(8))


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
def test_s31_feature_adapter_trains_in_a_second_fit(loader: list) -> None:
    torch.manual_seed(0)
    student = _det()
    hook = S.Distiller(TinyDetector(width=0.5), {"feature": 1.0}, fg_threshold=0.0)  # every location counts
    first = _sgd(student, 1e-2)
    fit(student, loader, first, 1, hooks=[hook], progress=False)
    assert len(first.param_groups) == 2
    before = hook.adapter.proj.weight.detach().clone()
    second = _sgd(student, 1e-2)
    fit(student, loader, second, 1, hooks=[hook], progress=False)
    assert len(second.param_groups) == 2
    assert not torch.equal(before, hook.adapter.proj.weight)
    fit(student, loader, second, 1, hooks=[hook], progress=False)  # same optimizer again: not added twice
    assert len(second.param_groups) == 2


# ===================================================================== obscure crashes -> clear messages
def test_q06_calc_qparams_of_strings() -> None:
    with pytest.raises(ValueError, match="numbers or tensors"):
        Q.calc_qparams("a", "b")


@pytest.mark.parametrize("make", [lambda: Q.MovingAverageMinMaxObserver(averaging_constant="0.1"),
                                  lambda: Q.PercentileObserver(percentile="99")])
def test_q27_observer_settings_must_be_numbers(make: object) -> None:
    with pytest.raises(ValueError, match="must be a number"):
        make()


def test_q26_observer_ch_axis_is_named() -> None:
    with pytest.raises(ValueError, match="ch_axis=5"):
        Q.MinMaxObserver(ch_axis=5)(torch.randn(2, 3))
    obs = Q.MinMaxObserver(ch_axis=np.int64(0))
    obs(torch.randn(2, 3))
    assert obs.calculate_qparams()[0].shape == (2,)


def test_q58_calibrate_refuses_one_tensor_as_the_batches(images: torch.Tensor) -> None:
    with pytest.raises(TypeError, match=r"\[images\]"):
        Q.post_training_quantize(_det().eval(), images)


@pytest.mark.parametrize("epoch", ["1", -1, 1.5])
def test_q64_qat_schedule_epochs_validated(epoch: object) -> None:
    with pytest.raises(ValueError, match="freeze_bn_epoch"):
        Q.QATSchedule(freeze_bn_epoch=epoch)
    Q.QATSchedule(freeze_bn_epoch=np.int64(1), freeze_observer_epoch=None)


def test_p22_pruning_a_quantized_model_is_refused() -> None:
    with pytest.raises(TypeError, match="prune the float model first"):
        P.prune_detector(Q.prepare_qat(_det()), 0.5)


@pytest.mark.parametrize("size", [128, (0, 0), (32,), (32.0, 32.0)])
def test_p31_p32_count_flops_image_size(size: object) -> None:
    with pytest.raises(ValueError, match="image_size"):
        P.count_flops(_det(), size)


def test_count_flops_accepts_numpy_sizes_and_parameter_free_models() -> None:
    model = _det()
    assert P.count_flops(model, (np.int64(32), np.int64(32))) == P.count_flops(model, (32, 32))
    assert P.count_flops(nn.Sequential(nn.ReLU()), (8, 8)) == 0  # P35: no StopIteration


def test_p38_sensitivity_scan_evaluate_fn_returning_a_dict() -> None:
    with pytest.raises(TypeError, match=r"\['map'\]"):
        P.sensitivity_scan(_det(), lambda m: {"map": 0.1}, ratios=[0.5], groups=["stem"])


def test_s16_cache_and_pseudo_label_accept_a_dataset(data: list) -> None:
    teacher = _det()
    dataset = SyntheticShapes(4, config=CFG)
    from_list = S.cache_teacher_outputs(teacher, data, batch_size=3)
    from_dataset = S.cache_teacher_outputs(teacher, dataset, batch_size=3)
    assert len(from_dataset) == len(from_list) == 4
    for (_, a), (_, b) in zip(from_list, from_dataset):
        assert torch.equal(a["teacher_logits"], b["teacher_logits"])
    assert len(S.pseudo_label(teacher, dataset, batch_size=3)) == 4


def test_s20_pseudo_label_threshold_must_be_a_number(data: list) -> None:
    with pytest.raises(ValueError, match="score_threshold"):
        S.pseudo_label(_det(), data, score_threshold="0.5")


def test_s21_pseudo_label_with_a_classifier_teacher() -> None:
    from course_utils.models import DigitsCNN

    with pytest.raises(TypeError, match="detector teacher"):
        S.pseudo_label(DigitsCNN(), [(torch.rand(1, 8, 8), {"labels": torch.tensor(1)})])


def test_s25_s26_feature_mask_and_jitter_copies() -> None:
    with pytest.raises(ValueError, match="bool"):
        S.feature_imitation_loss(torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4), torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="copies"):
        S.jitter_boxes(torch.tensor([[0.0, 0, 10, 10]]), copies=-1)
    assert S.jitter_boxes(torch.tensor([[0.0, 0, 10, 10]]), copies=np.int64(2)).shape == (3, 4)


def test_c06_c20_clipping_arguments() -> None:
    from course_utils import clipping as C

    layer = nn.Linear(3, 3)
    layer(torch.randn(2, 3)).sum().backward()
    with pytest.raises(TypeError, match=r"model.parameters\(\)"):
        C.clip_grad_norm_(layer, 1.0)
    with pytest.raises(TypeError, match=r"model.parameters\(\)"):
        C.adaptive_clip_grad_(layer, 0.01)
    with pytest.raises(TypeError, match="torch.Tensor"):
        C.unitwise_norm("x")


def test_c25_clip_lab_run_seed() -> None:
    from course_utils import clipping as C

    with pytest.raises(ValueError, match="seed"):
        C.clip_lab_run(steps=2, seed=-1)


def test_q16_integer_input_still_gives_float32() -> None:
    x = torch.arange(-20, 20)
    got = Q.fake_quantize(x, 0.3, 0, -128, 127)
    assert got.dtype == torch.float32
    assert torch.equal(got, torch.fake_quantize_per_tensor_affine(x.float(), 0.3, 0, -128, 127))
