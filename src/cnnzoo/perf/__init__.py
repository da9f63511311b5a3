"""Inference optimisation and the benchmark harness.

``optimize(model)`` folds BatchNorm into convolutions and picks, by measuring on the device, the
memory layout, oneDNN-fused convolutions and micro-batches on a CPU (and optionally
``torch.compile``); ``OrtRunner`` runs a model with ONNX Runtime;
``bench_model`` times inference and training the way timm's benchmark does, with its CSV columns.
"""
from .bench import COLUMNS, BenchSettings, bench_model, count_gmacs
from .fold import find_conv_bn_pairs, fold_batchnorm
from .optimize import InferenceModel, OptimizeReport, optimize

__all__ = ["COLUMNS", "BenchSettings", "InferenceModel", "OptimizeReport", "bench_model",
           "count_gmacs", "find_conv_bn_pairs", "fold_batchnorm", "optimize"]
