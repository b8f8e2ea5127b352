"""Quantization from first principles, one concept per module.

Taught in: 04_quantization_math, 05_qat_and_int8 and 09_integer_inference.

Everything follows the affine scheme of Jacob et al. 2018 ("Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference"):

    r = S · (q − Z)          real value r, integer q, scale S > 0, zero point Z

==============  ==================================================================
module          what
==============  ==================================================================
``affine``      qparams, quantize / dequantize, fake quantization + STE
``observers``   min-max, moving-average, percentile, MSE-optimal ranges
``lsq``         learned step size quantization (Esser et al. 2020)
``error``       squared error, SQNR, the rounding-vs-clamping trade-off
``folding``     batch-norm folding
``modules``     FakeQuantize and the fake-quantized Conv2d / Linear wrappers
``ptq``         post-training quantization: wrap, calibrate, per-layer sensitivity
``adaround``    AdaRound: learned up-or-down rounding of PTQ weights (Nagel et al. 2020)
``qat``         quantization-aware training: conv+BN folding while training, schedule
``integer``     integer-only arithmetic: int32 accumulators, fixed-point requantization
``convert``     a fake-quantized detector -> its integer-only network (own scales)
``qdq``         that network as an ONNX QDQ graph for ONNX Runtime
``codebook``    k-means (codebook) weights with trained centroids (Han et al. 2016)
``mixed``       4 or 8 bits per layer under a size budget, from measured costs (HAWQ-style)
==============  ==================================================================

``x % Q`` is *not* quantization (it wraps values around instead of rounding
them to a grid), and there is no "sub-gradient method" in QAT: the STE is the
whole trick. Every name is importable from ``course_utils.quant`` directly.
"""

from __future__ import annotations

from .affine import qrange, calc_qparams, quantize, dequantize, fake_quantize, fake_quantize_per_channel
from .observers import Observer, MinMaxObserver, MovingAverageMinMaxObserver, PercentileObserver, MSEObserver, OBSERVERS, make_observer
from .lsq import lsq_init_step, lsq_fake_quantize, LSQQuantizer
from .error import quant_mse, sqnr_db, quantize_tensor, range_tradeoff
from .folding import fold_bn, conv_bn_pairs, fuse_conv_bn
from .modules import FakeQuantize, QuantConv2d, QuantLinear
from .qat import QuantConvBn2d, prepare_qat, freeze_bn_stats, set_observing_activations, to_float_folded, QATSchedule
from .integer import IntegerAdd, IntegerConv, fixed_point_multiplier, integer_add, integer_conv2d, pairwise_int16_sums, quantize_bias, requantize, \
    rounding_shift
from .convert import IntegerDetector, integer_detector
from .qdq import conv_qdq_model, export_qdq, optimized_op_types
from .codebook import kmeans_codebook, CodebookLayer, codebook_quantize, codebook_bytes, linear_bytes, float_bytes
from .mixed import layer_weight_bytes, model_weight_bytes, allocate_bits
from .ptq import quantize_model, set_observing, calibrate, post_training_quantize, layer_sensitivity, capture_activations
from .adaround import (ZETA, GAMMA, rectified_sigmoid, rounding_regularizer, adaround_init, soft_quantized_weight,
                       adaround_beta, adaround_layer, adaround)

__all__ = [
    "layer_weight_bytes",
    "model_weight_bytes",
    "allocate_bits",
    "qrange",
    "calc_qparams",
    "quantize",
    "dequantize",
    "fake_quantize",
    "fake_quantize_per_channel",
    "Observer",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PercentileObserver",
    "MSEObserver",
    "OBSERVERS",
    "make_observer",
    "lsq_init_step",
    "lsq_fake_quantize",
    "LSQQuantizer",
    "quant_mse",
    "sqnr_db",
    "quantize_tensor",
    "range_tradeoff",
    "fold_bn",
    "fuse_conv_bn",
    "FakeQuantize",
    "QuantConv2d",
    "QuantLinear",
    "QuantConvBn2d",
    "conv_bn_pairs",
    "quantize_model",
    "prepare_qat",
    "freeze_bn_stats",
    "set_observing_activations",
    "to_float_folded",
    "QATSchedule",
    "calibrate",
    "set_observing",
    "post_training_quantize",
    "layer_sensitivity",
    "capture_activations",
    "ZETA",
    "GAMMA",
    "rectified_sigmoid",
    "rounding_regularizer",
    "adaround_init",
    "soft_quantized_weight",
    "adaround_beta",
    "adaround_layer",
    "adaround",
    "fixed_point_multiplier",
    "rounding_shift",
    "requantize",
    "quantize_bias",
    "integer_conv2d",
    "integer_add",
    "pairwise_int16_sums",
    "IntegerConv",
    "IntegerAdd",
    "IntegerDetector",
    "integer_detector",
    "export_qdq",
    "conv_qdq_model",
    "optimized_op_types",
    "kmeans_codebook",
    "CodebookLayer",
    "codebook_quantize",
    "codebook_bytes",
    "linear_bytes",
    "float_bytes",
]
