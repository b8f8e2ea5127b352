"""course_utils -- the reusable code of the Efficient Detection Course.

One module per concept, each taught in a notebook:

========================  ===========================================  ===================================
module                    what                                         taught in
========================  ===========================================  ===================================
``data``                  synthetic shapes, COCO files, loader         00_setup_and_tour, 02_training_a_tiny_detector
``boxes``                 box formats, IoU, NMS, anchors, box coding   01_detection_basics
``metrics``               COCO mAP (= pycocotools), bootstrap CIs      01_detection_basics, 02_training_a_tiny_detector
``models``                TinyDetector, a torchvision Faster R-CNN     02_training_a_tiny_detector
``train``                 one training loop with hooks, evaluation     02_training_a_tiny_detector
``clipping``              gradient clipping (value, norm, AGC), hooks  03_gradient_clipping
``quant``                 fake quantization, observers, LSQ, PTQ/QAT   04_quantization_math, 05_qat_and_int8,
                          integer-only inference, QDQ export,          09_integer_inference,
                          mixed 4/8-bit allocation                     11_when_int8_goes_wrong
``deploy``                ONNX export, int8 in ONNX Runtime, timing    05_qat_and_int8
``int8_debug``            scales in a QDQ file, SQNR per tensor,       11_when_int8_goes_wrong
                          the profiler, a packed-output export
``keep_float``            sensitivity scan, keep-in-float search       11_when_int8_goes_wrong
``distill``               KD losses, detection distillation hooks      06_knowledge_distillation
``prune``                 magnitude and channel pruning, FLOPs         07_pruning
``viz``                   boxes on images, curves                      all
``widgets``               live controls with a static fallback         00_setup_and_tour
``exercises``             auto-checks for the exercises                all
``cli``                   ``python -m course_utils`` train/evaluate/   (your own data)
                          export/predict on any COCO folder
========================  ===========================================  ===================================
"""

from .boxes import batched_nms, box_area, box_convert, box_iou, decode_boxes, encode_boxes, make_anchors, nms
from .clipping import GradientClipping, GradNormMonitor, adaptive_clip_grad_, clip_grad_norm_, clip_grad_value_
from .data import CATEGORIES, CocoDetection, DatasetError, SyntheticShapes, collate_detection, materialize, render_scene
from .metrics import bootstrap_map, mean_average_precision, paired_bootstrap_map, seed_difference, seed_summary
from .models import TinyDetector, build_torchvision_detector, count_parameters
from .distill import Distiller, kd_loss
from .prune import count_flops, magnitude_masks, prune_detector
from .quant import calc_qparams, fake_quantize, fake_quantize_per_channel, post_training_quantize, prepare_qat
from .train import (
    Hook,
    NonFiniteLossError,
    StepState,
    evaluate,
    fit,
    get_device,
    load_checkpoint,
    predict,
    save_checkpoint,
    seed_everything,
)

__version__ = "0.1.0"

__all__ = [
    "CATEGORIES", "CocoDetection", "DatasetError", "Distiller", "GradNormMonitor", "GradientClipping", "Hook", "NonFiniteLossError", "StepState", "SyntheticShapes",
    "TinyDetector", "adaptive_clip_grad_", "batched_nms", "box_area", "box_convert", "box_iou", "build_torchvision_detector",
    "calc_qparams", "fake_quantize", "fake_quantize_per_channel", "post_training_quantize", "prepare_qat",
    "kd_loss", "count_flops", "magnitude_masks", "prune_detector",
    "clip_grad_norm_", "clip_grad_value_", "collate_detection", "count_parameters", "decode_boxes", "encode_boxes", "evaluate", "fit", "get_device",
    "load_checkpoint", "make_anchors", "materialize", "mean_average_precision", "nms", "predict",
    "bootstrap_map", "paired_bootstrap_map", "seed_summary", "seed_difference",
    "render_scene", "save_checkpoint", "seed_everything",
]
