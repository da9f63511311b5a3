"""Speed as passes a user asks for; the models themselves stay plain.

- :func:`optimize` (``optimize.py``): a copy of a model for inference, its passes chosen by
  measuring on the device; ``result.report.passes`` lists what it runs.
- :func:`quantize` (``quantize.py``): int8 on the CPU, ONNX Runtime's QDQ or PyTorch's PT2E,
  whichever measures faster; ``result.report`` says which and what stays in float.
- :func:`for_training` (``training.py``): conv twins with faster weight gradients on a CPU,
  and NHWC, in place on the model a training loop will step.
- :func:`tune_memory` (``cnnzoo.memory``): transparent huge pages and a kept glibc heap for the
  whole process, for a program that owns its process (the ``cnnzoo`` command does).
- :func:`bench_model` (``bench.py``): inference and training timed as timm's benchmark does.

Each pass is a module of its own, whose docstring says what it changes and what it measured.
"""
from ..memory import tune_memory
from .bench import COLUMNS, BenchSettings, bench_model, count_gmacs
from .fold import find_conv_bn_pairs, fold_batchnorm
from .inference_model import InferenceModel, OptimizeReport
from .optimize import optimize
from .quantize import QuantizedModel, QuantizeReport, quantize
from .training import for_training

__all__ = ["COLUMNS", "BenchSettings", "InferenceModel", "OptimizeReport", "bench_model",
           "count_gmacs", "find_conv_bn_pairs", "fold_batchnorm", "for_training", "optimize",
           "quantize", "QuantizedModel", "QuantizeReport", "tune_memory"]
