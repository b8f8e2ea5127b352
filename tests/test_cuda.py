"""The course on a GPU: run only where CUDA is present (skipped on the CPU-only CI).

Each test runs the same computation on the CPU and on CUDA and compares, so a
tensor left on the wrong device (the bugs these tests were written for) fails.
"""

from __future__ import annotations

import pytest
import torch

from course_utils import TinyDetector
from course_utils.quant import calibrate, prepare_qat, quantize_tensor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _no_tf32():
    """TF32 convolutions would differ from the CPU by ~1e-3; compare in full fp32."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def test_mse_observer_on_cuda_matches_cpu() -> None:
    x = torch.randn(16, 300, generator=torch.Generator().manual_seed(0))
    cpu = quantize_tensor(x, 4, ch_axis=0, observer="mse")
    gpu = quantize_tensor(x.to(CUDA), 4, ch_axis=0, observer="mse")
    for a, b in zip(cpu, gpu):
        assert b.device.type == "cuda" and torch.allclose(a, b.cpu(), atol=1e-5)


def test_quantized_checkpoint_loads_into_a_cuda_model_and_calibrates() -> None:
    torch.manual_seed(0)
    images = torch.rand(4, 3, 128, 128)
    saved = calibrate(prepare_qat(TinyDetector(width=0.5)), [images], lambda m, b: m.forward_raw(b))
    fresh = prepare_qat(TinyDetector(width=0.5)).to(CUDA)  # moved first, loaded second
    fresh.load_state_dict(saved.state_dict())
    assert all(b.device.type == "cuda" for b in fresh.buffers())
    calibrate(fresh, [images.to(CUDA)], lambda m, b: m.forward_raw(b))  # observers update on the GPU


def test_distiller_and_pruning_on_cuda() -> None:
    from course_utils.distill import Distiller
    from course_utils.prune import prune_detector
    from course_utils.train import fit

    torch.manual_seed(0)
    teacher, student = TinyDetector(width=1.0).eval(), TinyDetector(width=0.5)
    images = list(torch.rand(2, 3, 128, 128))
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([1])}] * 2
    hook = Distiller(teacher, {"cls": 1.0, "box": 1.0, "feature": 1.0})
    history = fit(student, [(images, targets)], torch.optim.SGD(student.parameters(), lr=1e-3), epochs=1,
                  device=CUDA, hooks=[hook], progress=False)
    assert {"kd_cls", "kd_box", "kd_feature"} <= set(history)
    pruned = prune_detector(student.eval(), 0.5).to(CUDA)
    assert pruned(torch.rand(1, 3, 128, 128, device=CUDA))[0]["boxes"].device.type == "cuda"
