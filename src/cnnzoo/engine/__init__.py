"""Training, evaluation and prediction: loops, optimizers, checkpoints, distributed runs."""
from .build import TrainConfig, build_model, load_run_model
from .evaluate import EvalResult, evaluate
from .trainer import Trainer, compute_loss, train

__all__ = ["EvalResult", "TrainConfig", "Trainer", "build_model", "compute_loss", "evaluate",
           "load_run_model", "train"]
