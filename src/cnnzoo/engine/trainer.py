"""The training loop: one epoch after another, checkpointing after each, resumable exactly.

Exact resume rests on three things: the data order is a function of (seed, epoch) alone
(``data.loaders.EpochSampler``), every random number generator is saved with the checkpoint and
restored, and the schedule is a function of the step count the scheduler stores. On CPU in
deterministic mode an interrupted-and-resumed run then ends with bit-identical weights.
"""
from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..data import build_transform, load_source, make_loader, make_split
from ..data.transforms import BatchAffine
from ..errors import CnnzooError
from . import checkpoint as ckpt
from . import run_dir as rd
from .build import DEFAULT_LR, TrainConfig, build_model, check_choice
from .distributed import DistInfo, all_sum, barrier
from .evaluate import autocast, evaluate, logits_of
from .freeze import counts, freeze, set_train_mode, unfreeze
from .optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler
from .progress import EpochProgress


def compute_loss(output, labels: torch.Tensor, criterion, aux_weights) -> torch.Tensor:
    """Main loss plus the weighted auxiliary-head losses (GoogLeNet 0.3 each, Inception-v3 0.4).

    Models with auxiliary classifiers return a NamedTuple ``(logits, aux_logits)`` in training
    and name their papers' weights in ``model.aux_loss_weights``.
    """
    if isinstance(output, torch.Tensor):
        return criterion(output, labels)
    loss = criterion(output.logits if hasattr(output, "logits") else output[0], labels)
    aux = getattr(output, "aux_logits", None)
    if aux is None:
        return loss
    aux = (aux,) if isinstance(aux, torch.Tensor) else tuple(aux)
    weights = tuple(aux_weights or ()) or (0.3,) * len(aux)
    for w, a in zip(weights, aux):
        if a is not None:
            loss = loss + w * criterion(a, labels)
    return loss


class Trainer:
    def __init__(self, cfg: TrainConfig, run: Path, dist: DistInfo, *, resume: bool = False,
                 log: Callable[[str], None] = print, val_indices: list[int] | None = None):
        self.cfg, self.run, self.dist = cfg, run, dist
        self.log = log if dist.is_main else (lambda *_: None)
        check_choice(cfg.opt, OPTIMIZERS, "optimizer")
        check_choice(cfg.sched, SCHEDULES, "schedule")
        check_choice(cfg.amp, ("none", "bf16", "fp16"), "--amp mode")
        if cfg.amp == "fp16" and dist.device.type != "cuda":
            raise CnnzooError("--amp fp16 needs a GPU (its gradient scaler is CUDA-only); "
                              "use --amp bf16 on the CPU")
        for name in ("epochs", "batch_size"):
            if getattr(cfg, name) < 1:
                raise CnnzooError(f"--{name.replace('_', '-')} must be at least 1, "
                                  f"got {getattr(cfg, name)}")
        if cfg.batch_size % dist.world:
            raise CnnzooError(f"--batch-size {cfg.batch_size} does not split evenly over "
                              f"{dist.world} processes")
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        torch.manual_seed(cfg.seed)

        self.source = load_source(cfg.data, root=cfg.data_root, download=cfg.download)
        # A resumed run takes every weight from its checkpoint, not from --pretrained again.
        self.model, skipped = build_model(cfg, self.source.num_classes, load_pretrained=not resume)
        if skipped:
            self.log(f"new head for {self.source.num_classes} classes: {', '.join(skipped)}")
        mcfg = self.model.default_cfg
        train_tf = build_transform(mcfg, train=True, kind=self.source.kind, augment=cfg.augment)
        val_tf = build_transform(mcfg, train=False, kind=self.source.kind)
        recorded = rd.read_split(run) if resume else val_indices
        self.split = make_split(self.source, train_tf, val_tf, val_fraction=cfg.val_split,
                                seed=cfg.seed, val_indices=recorded)
        self.batch_augment = BatchAffine() if self.split.batch_augment and cfg.augment else None
        per_rank = cfg.batch_size // dist.world
        pin = dist.device.type == "cuda"
        self.train_loader = make_loader(self.split.train, batch_size=per_rank, train=True,
                                        seed=cfg.seed, rank=dist.rank, world=dist.world,
                                        workers=cfg.workers, pin_memory=pin)
        self.val_loader = make_loader(self.split.val, batch_size=per_rank, train=False,
                                      seed=cfg.seed, rank=dist.rank, world=dist.world,
                                      workers=cfg.workers, pin_memory=pin)
        self.steps = len(self.train_loader)
        if cfg.limit_batches:
            self.steps = min(self.steps, cfg.limit_batches)

        if cfg.freeze:
            frozen = freeze(self.model, cfg.freeze)
            trainable, n_frozen = counts(self.model)
            self.log(f"frozen up to {cfg.freeze}: {len(frozen)} tensors; "
                     f"trainable {trainable:,} / frozen {n_frozen:,} parameters")
        self.model.to(dist.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        lr = cfg.lr if cfg.lr is not None else DEFAULT_LR[cfg.opt]
        self.optimizer = build_optimizer(self.model, cfg.opt, lr=lr, weight_decay=cfg.weight_decay,
                                         momentum=cfg.momentum, nesterov=cfg.nesterov)
        self.scheduler = build_scheduler(self.optimizer, cfg.sched, epochs=cfg.epochs,
                                         steps_per_epoch=self.steps,
                                         warmup_epochs=cfg.warmup_epochs,
                                         step_epochs=cfg.step_epochs, gamma=cfg.gamma)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
        self.ema = None
        if cfg.ema_decay:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay),
                                     use_buffers=True)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.history: list[dict] = []
        self.best_acc = -1.0
        self.start_epoch = 1
        self._plotted = time.monotonic()
        self.forward = self._wrap()
        if resume:
            self._restore()

    # -- model wrappers ------------------------------------------------------------------------
    def _wrap(self) -> nn.Module:
        fwd: nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.dist.device] if self.dist.device.type == "cuda" else None
            fwd = DDP(self.model, device_ids=ids)
        if self.cfg.compile:
            fwd = torch.compile(fwd)
        return fwd

    def _restore(self) -> None:
        weights, tensors, meta = ckpt.load_checkpoint(self.run, "last")
        self.model.load_state_dict(weights)
        ckpt.restore_optimizer(self.optimizer, meta, tensors)
        if meta.get("scheduler"):
            self.scheduler.load_state_dict(meta["scheduler"])
        if meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict({k[4:]: v.to(self.dist.device) for k, v in tensors.items()
                                      if k.startswith("ema.")})
        ckpt.set_rng_state(tensors, meta["rng"])
        info = meta["info"]
        self.history = info["history"]
        self.best_acc = info["best_acc"]
        self.start_epoch = info["epoch"] + 1
        self.log(f"resuming {self.run} after epoch {info['epoch']}")

    # -- one epoch ----------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict:
        cfg, dev = self.cfg, self.dist.device
        if (cfg.freeze and cfg.unfreeze_at and epoch >= cfg.unfreeze_at
                and not all(p.requires_grad for p in self.model.parameters())):
            unfreeze(self.model)
            self.forward = self._wrap()  # DDP hooks only the parameters trainable when wrapped
            self.log(f"epoch {epoch}: unfrozen, {counts(self.model)[0]:,} trainable parameters")
        self.train_loader.sampler.set_epoch(epoch)
        self.train_loader.generator.manual_seed(cfg.seed * 100003 + epoch)
        set_train_mode(self.model, True)
        aux_weights = getattr(self.model, "aux_loss_weights", None)
        params = [p for p in self.model.parameters() if p.requires_grad]
        bar = EpochProgress(self.steps, epoch, cfg.epochs, enabled=self.dist.is_main)
        loss_sum = correct = seen = 0.0
        start = time.perf_counter()
        batches = itertools.islice(self.train_loader, self.steps)
        for step, (images, labels) in enumerate(batches, start=1):
            images = images.to(dev, non_blocking=True)
            labels = labels.to(dev, non_blocking=True)
            if self.batch_augment is not None:
                images = self.batch_augment(images)
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(dev, cfg.amp):
                output = self.forward(images)
                loss = compute_loss(output, labels, self.criterion, aux_weights)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.clip_grad:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            n = labels.shape[0]
            loss_sum += float(loss.detach()) * n
            correct += float((logits_of(output).detach().argmax(1) == labels).sum())
            seen += n
            bar.update(step, loss_sum / seen, 100 * correct / seen, int(seen * self.dist.world))
        bar.close()
        seconds = time.perf_counter() - start
        loss_sum, correct, seen = all_sum(self.dist, [loss_sum, correct, seen])
        row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": loss_sum / max(1, seen), "train_acc": 100 * correct / max(1, seen),
               "images_per_s": seen / max(1e-9, seconds), "seconds": seconds}
        scored = self.ema.module if self.ema is not None else self.model
        result = evaluate(scored, self.val_loader, self.source.num_classes, device=dev,
                          dist_info=self.dist, amp=cfg.amp, channels_last=cfg.channels_last)
        row.update(val_loss=result.loss, val_acc=result.top1, val_top5=result.top5)
        bar.line(row)
        return row

    # -- checkpoints ---------------------------------------------------------------------------
    def _save(self, epoch: int, row: dict) -> None:
        self.history.append(row)
        improved = row["val_acc"] > self.best_acc
        self.best_acc = max(self.best_acc, row["val_acc"])
        if not self.dist.is_main:
            return
        ema_state = self.ema.state_dict() if self.ema is not None else None
        info = {"epoch": epoch, "history": self.history, "best_acc": self.best_acc}
        ckpt.save_checkpoint(self.run, "last", model_state=self.model.state_dict(),
                             optimizer=self.optimizer, scheduler=self.scheduler,
                             scaler=self.scaler, ema_state=ema_state, info=info)
        if improved:
            best = self.ema.module if self.ema is not None else self.model
            ckpt.save_weights(self.run / "best.safetensors", best.state_dict(),
                              {"epoch": str(epoch), "val_acc": f"{row['val_acc']:.4f}"})
        rd.write_metrics(self.run, self.history)
        # Drawing takes about half a second: short epochs redraw at most every 30 s, and always
        # at the end of the run.
        now = time.monotonic()
        if epoch == self.cfg.epochs or now - self._plotted > 30:
            rd.plot_curves(self.run, self.history, f"{self.cfg.model} on {self.source.spec}")
            self._plotted = now

    def fit(self, on_epoch_end: Callable[[int, dict], None] | None = None) -> dict:
        for epoch in range(self.start_epoch, self.cfg.epochs + 1):
            row = self.train_epoch(epoch)
            self._save(epoch, row)
            barrier(self.dist)
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
        last = self.history[-1] if self.history else {}
        return {"val_acc": last.get("val_acc"), "val_loss": last.get("val_loss"),
                "best_acc": self.best_acc, "val_count": len(self.split.val),
                "epochs": self.cfg.epochs}


def write_run_header(trainer: Trainer) -> None:
    """config.json and split.json of a new run (rank 0)."""
    if not trainer.dist.is_main:
        return
    src = trainer.source
    rd.write_json(trainer.run / rd.CONFIG, {
        "train": trainer.cfg.to_dict(), "classes": src.classes, "data_kind": src.kind,
        "input_size": list(trainer.model.default_cfg.input_size), "world_size": trainer.dist.world,
        "train_images": len(trainer.split.train), "val_images": len(trainer.split.val)})
    if trainer.split.val_indices is not None:
        rd.write_json(trainer.run / rd.SPLIT, trainer.split.record())


def train(cfg: TrainConfig, run: Path, dist: DistInfo, *, resume: bool = False, force: bool = False,
          on_epoch_end: Callable[[int, dict], None] | None = None,
          log: Callable[[str], None] = print) -> dict:
    """Train into ``run`` (a new folder, or an existing run with ``resume``); returns the final
    validation numbers."""
    if resume:
        rd.require_run(run)
        if not (run / "last.state.safetensors").exists():
            raise rd.RunFolderError(f"{run} has no checkpoint to resume from (no "
                                    f"last.state.safetensors)")
    else:
        rd.check_new(run, force)  # before anything is written: bad data must not cost a run
    trainer = Trainer(cfg, run, dist, resume=resume, log=log)
    if not resume:
        barrier(dist)  # every rank has checked the folder before rank 0 writes to it
        if dist.is_main:
            rd.prepare_new(run, force)
        write_run_header(trainer)
    return trainer.fit(on_epoch_end)

