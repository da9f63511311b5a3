"""The training loop: one epoch after another, checkpointing after each, resumable exactly.

Exact resume rests on three things: the data order is a function of (seed, epoch) alone
(``data.loaders.EpochSampler``), every random number generator is saved with the checkpoint and
restored, and the schedule is a function of the step count the scheduler stores. On CPU in
deterministic mode an interrupted-and-resumed run then ends with bit-identical weights, whether it
stopped at an epoch's end or inside one (``--save-every N``, Ctrl-C, SIGTERM: the sampler skips
the items already trained on). That holds with loader workers too: each image's augmentation is
seeded by (seed, epoch, image), whichever worker loads it (``data.loaders``).

Images are decoded where they are read, in the loader's workers. Those that cannot be are named
in the run folder (``skipped.txt`` and config.json) and in a line at the end of the epoch.

A run also stops, keeping its last good checkpoint, when the loss stops being a finite number.
"""
from __future__ import annotations

import itertools
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..data import build_transform, load_source, make_loader, make_split
from ..data.folders import default_workers, unusable_classes
from ..data.transforms import BatchAffine
from ..errors import CnnzooError, DataError
from ..perf.training import for_training
from . import checkpoint as ckpt
from . import run_dir as rd
from .build import DEFAULT_LR, TrainConfig, build_model, check_choice
from .distributed import DistInfo, all_sum, all_sum_tensor, barrier
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


# Steps between host reads of the loss and accuracy off a CPU. Each read waits until the device
# has run everything queued; reading every step would keep the host from queueing the next step
# while the device runs this one. On a CPU nothing is queued, so the bar moves every step there.
SYNC_STEPS = 16


def sync_every(device: torch.device) -> int:
    return 1 if device.type == "cpu" else SYNC_STEPS


class TrainingDiverged(CnnzooError):
    """The loss became NaN or infinite; the run stops with its last good checkpoint kept."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the run stopped cleanly after saving a checkpoint to resume from."""

    def __init__(self, message: str, signum: int | None = None):
        super().__init__(message)
        self.signum = int(signum or signal.SIGINT)


class _StopRequests:
    """SIGINT/SIGTERM handlers for the length of a run: the first signal asks the loop to stop
    after the step in flight (and save); a second Ctrl-C stops at once, as usual."""

    def __init__(self):
        self.signal: int | None = None
        self._old: dict[int, object] = {}

    def _handle(self, signum, _frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self) -> "_StopRequests":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class Trainer:
    def __init__(self, cfg: TrainConfig, run: Path, dist: DistInfo, *, resume: bool = False,
                 log: Callable[[str], None] = print, val_indices: list[int] | None = None):
        self.cfg, self.run, self.dist = cfg, run, dist
        self.log = log if dist.is_main else (lambda *_: None)
        check_choice(cfg.opt, OPTIMIZERS, "optimizer")
        check_choice(cfg.sched, SCHEDULES, "schedule")
        check_choice(cfg.amp, ("none", "bf16", "fp16"), "--amp mode")
        cfg.validate()
        if cfg.amp == "fp16" and dist.device.type != "cuda":
            raise CnnzooError("--amp fp16 needs a GPU (its gradient scaler is CUDA-only); "
                              "use --amp bf16 on the CPU")
        if cfg.batch_size % dist.world:
            raise CnnzooError(f"--batch-size {cfg.batch_size} does not split evenly over "
                              f"{dist.world} processes")
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        torch.manual_seed(cfg.seed)

        def load(spec: str, held_out: bool = False):
            return load_source(spec, root=cfg.data_root, download=cfg.download,
                               check_images=cfg.check_images,
                               workers=cfg.workers or default_workers(),
                               skip_bad_shards=cfg.skip_bad_shards, held_out=held_out)

        self.source = load(cfg.data)
        self.val_source = load(cfg.val_data, held_out=True) if cfg.val_data else None
        if cfg.workers is None:  # resolved once and recorded: a resumed run reads as this one
            cfg.workers = default_workers() if self.source.kind == "photo" else 0
        for src in filter(None, (self.source, self.val_source)):
            self._report("unreadable image(s)", src.spec, src.skipped)
            self._report("bad shard(s)", src.spec, src.bad_shards)
        # file -> (reason, label) of images found unreadable while training and validating
        self.skipped: dict[str, dict[str, tuple[str, int]]] = {"train": {}, "val": {}}
        self.bad_shards_read: set[str] = set()
        # A resumed run takes every weight from its checkpoint, not from --pretrained again.
        self.model, notes = build_model(cfg, self.source.num_classes, load_pretrained=not resume)
        for note in notes:
            self.log(f"pretrained: {note}")
        mcfg = self.model.default_cfg
        train_tf = build_transform(mcfg, train=True, kind=self.source.kind, augment=cfg.augment)
        val_tf = build_transform(mcfg, train=False, kind=self.source.kind)
        held_tf = (build_transform(mcfg, train=False, kind=self.val_source.kind)
                   if self.val_source is not None else None)
        recorded = rd.read_split(run) if resume else val_indices
        self.split = make_split(self.source, train_tf, val_tf, val_fraction=cfg.val_split,
                                seed=cfg.seed, val_indices=recorded, val_source=self.val_source,
                                held_out_tf=held_tf)
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
        if cfg.train_speedups:
            # After the move: it picks the layout for the device the model trains on.
            for_training(self.model)
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
        self.start_step = 0  # steps of start_epoch already trained (a mid-epoch checkpoint)
        self.partial: dict | None = None  # that epoch's running sums at the checkpoint
        self.stops = _StopRequests()
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

    def restore_skipped(self) -> None:
        """Files a resumed run already found unreadable, so that they are not reported again."""
        for f, reason in rd.read_skipped(self.run):
            self.skipped["train"].setdefault(f, (reason, -1))

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
        self.start_step, self.partial = info.get("step", 0), info.get("partial")
        where = (f"at epoch {self.start_epoch}, step {self.start_step}" if self.start_step else
                 f"after epoch {info['epoch']}")
        self.log(f"resuming {self.run} {where}")

    # -- one epoch ----------------------------------------------------------------------------
    def train_epoch(self, epoch: int, start_step: int = 0, partial: dict | None = None) -> dict:
        cfg, dev = self.cfg, self.dist.device
        if (cfg.freeze and cfg.unfreeze_at and epoch >= cfg.unfreeze_at
                and not all(p.requires_grad for p in self.model.parameters())):
            unfreeze(self.model)
            self.forward = self._wrap()  # DDP hooks only the parameters trainable when wrapped
            self.log(f"epoch {epoch}: unfrozen, {counts(self.model)[0]:,} trainable parameters")
        self.train_loader.set_epoch(epoch, start_step)
        if self.train_loader.generator is not None:
            self.train_loader.generator.manual_seed(cfg.seed * 100003 + epoch)
        set_train_mode(self.model, True)
        aux_weights = getattr(self.model, "aux_loss_weights", None)
        params = [p for p in self.model.parameters() if p.requires_grad]
        bar = EpochProgress(self.steps, epoch, cfg.epochs, enabled=self.dist.is_main)
        sums = dict(partial or {"loss_sum": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0})
        start = time.perf_counter() - sums["seconds"]
        batches = itertools.islice(self.train_loader, self.steps - start_step)
        every = sync_every(dev)
        pending: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []  # step, n, loss, correct
        for step, (images, labels) in enumerate(batches, start=start_step + 1):
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
            pending.append((step, labels.shape[0], loss.detach(),
                            (logits_of(output).detach().argmax(1) == labels).sum()))
            save = step < self.steps and cfg.save_every and step % cfg.save_every == 0
            # One process acts on a signal at the next step; processes of a group agree at the
            # steps they all read at, so that they stop together.
            asked = self.stops.signal is not None and not self.dist.enabled
            if not (step % every == 0 or step == self.steps or save or asked):
                continue
            stop = self._drain(pending, sums, epoch, step, bar)
            bar.update(step, sums["loss_sum"] / sums["seen"], 100 * sums["correct"] / sums["seen"],
                       int(sums["seen"] * self.dist.world))
            if step < self.steps and (stop or save):
                sums["seconds"] = time.perf_counter() - start
                self._checkpoint(epoch - 1, step, dict(sums))
                if stop:
                    bar.close()
                    raise Interrupted(f"stopped at epoch {epoch}, step {step} with a checkpoint; "
                                      f"continue with `cnnzoo train --resume {self.run}`",
                                      self.stops.signal)
        if pending:  # a loader that ended early
            self._drain(pending, sums, epoch, step, bar)
        bar.close()
        seconds = time.perf_counter() - start
        loss_sum, correct, seen = all_sum(self.dist, [sums[k] for k in ("loss_sum", "correct",
                                                                         "seen")])
        row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": loss_sum / max(1, seen), "train_acc": 100 * correct / max(1, seen),
               "images_per_s": seen / max(1e-9, seconds), "seconds": seconds}
        scored = self.ema.module if self.ema is not None else self.model
        result = evaluate(scored, self.val_loader, self.source.num_classes, device=dev,
                          dist_info=self.dist, amp=cfg.amp, channels_last=cfg.channels_last)
        row.update(val_loss=result.loss, val_acc=result.top1, val_top5=result.top5,
                   val_count=result.count)
        bar.line(row)
        self._note_skipped()
        return row

    # -- unreadable images ---------------------------------------------------------------------
    def _report(self, what: str, spec: str, items: list[tuple[str, str]], where: str = "") -> None:
        if items:
            more = len(items) - 1
            self.log(f"skipped {len(items)} {what} of {spec}: {items[0][0]} ({items[0][1]})"
                     f"{f' and {more} more, listed in {where or rd.CONFIG}' if more else ''}")

    def _note_skipped(self) -> None:
        """Gather the files the loaders could not decode (from every process), report those new
        this epoch, record them in the run, and stop where a class has no readable image."""
        found = {"train": dict(self.train_loader.skipped), "val": dict(self.val_loader.skipped)}
        if self.dist.enabled:
            parts: list = [None] * self.dist.world
            torch.distributed.all_gather_object(parts, found)
            for part in parts:
                for side in found:
                    found[side].update(part[side])
        new = {f: r for side in found for f, r in found[side].items()
               if f not in self.skipped["train"] and f not in self.skipped["val"]}
        for side in found:
            self.skipped[side].update(found[side])
        labels_of = getattr(self.split.train, "file_labels", None)
        if labels_of is not None and (self.skipped["train"] or self.skipped["val"]):
            train = labels_of()
            classes = self.source.classes
            bad = [label for _, label in self.skipped["train"].values()]
            unusable = unusable_classes(classes, train, bad)
            if not unusable and self.split.val_indices is not None:
                unusable = unusable_classes(classes, train + self.split.val.file_labels(), bad + [
                    label for _, label in self.skipped["val"].values()])
            if unusable:
                example = next(iter(self.skipped["train"].items()), None) or next(
                    iter(self.skipped["val"].items()))
                raise DataError(f"no readable image in class folder(s) {', '.join(unusable[:5])} "
                                f"of {self.source.spec} ({len(self.skipped['train'])} unreadable, "
                                f"e.g. {example[0]}: {example[1][0]})")
        for loader in (self.train_loader, self.val_loader):  # damaged after the start
            for shard, reason in loader.bad_shards.items():
                if shard not in self.bad_shards_read:
                    self.bad_shards_read.add(shard)
                    self.log(f"skipped bad shard {shard} ({reason}) while reading it")
        if new and self.dist.is_main:
            listed = self.all_skipped()
            self._report("unreadable image(s)", self.cfg.data, listed, rd.SKIPPED)
            rd.write_skipped(self.run, listed)

    def all_skipped(self) -> list[tuple[str, str]]:
        """(file, reason) of every image left out: up front (--check-images) and while read."""
        listed = list(self.source.skipped) + list(getattr(self.val_source, "skipped", []))
        seen = {f for f, _ in listed}
        for side in ("train", "val"):
            listed += [(f, r) for f, (r, _) in self.skipped[side].items() if f not in seen]
            seen |= set(self.skipped[side])
        return listed

    def _drain(self, pending: list, sums: dict, epoch: int, step: int, bar) -> bool:
        """Read the losses and hit counts of the steps since the last read (one wait for the
        device), add them to ``sums`` in step order, and stop the run at the first that is not a
        number. Returns whether a stop was asked for (on any process)."""
        losses = torch.stack([p[2].float() for p in pending]).tolist()
        hits = torch.stack([p[3] for p in pending]).tolist()
        bad = None
        for (at, n, _, _), loss_value, hit in zip(pending, losses, hits):
            if not math.isfinite(loss_value):
                bad = (at, loss_value)
                break
            sums["loss_sum"] += loss_value * n
            sums["correct"] += float(hit)
            sums["seen"] += n
        pending.clear()
        diverged, stop = self._agree(bad is not None, self.stops.signal is not None)
        if diverged:
            bar.close()
            at, value = bad or (step, 0.0)
            raise TrainingDiverged(self._diverged(epoch, at, value))
        return stop

    # -- checkpoints ---------------------------------------------------------------------------
    def _agree(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag raised on any process, so that all processes stop at the same step."""
        if not self.dist.enabled:
            return flags
        t = torch.tensor([float(f) for f in flags], device=self.dist.device)
        return tuple(bool(v > 0) for v in all_sum_tensor(self.dist, t).tolist())

    def _diverged(self, epoch: int, step: int, value: float) -> str:
        kept = ckpt.has_checkpoint(self.run)
        last = ckpt.read_metadata(self.run / "last.safetensors") if kept else {}
        where = (f"the last good checkpoint (epoch {last.get('epoch')}"
                 f"{', step ' + last['step'] if last.get('step', '0') != '0' else ''}) is kept in "
                 f"{self.run}" if kept else "no checkpoint had been written yet")
        value = ("NaN" if math.isnan(value) else "infinite" if math.isinf(value) else
                 "NaN or infinite on another process")
        return (f"the loss became {value} at epoch {epoch}, step {step}; training stopped and "
                f"{where}; lower --lr, add --clip-grad or --warmup-epochs and train again")

    def _checkpoint(self, epoch: int, step: int = 0, partial: dict | None = None) -> None:
        """Save what a resume needs: ``epoch`` whole epochs, then ``step`` steps of the next."""
        if not self.dist.is_main:
            return
        ema_state = self.ema.state_dict() if self.ema is not None else None
        info = {"epoch": epoch, "step": step, "partial": partial, "history": self.history,
                "best_acc": self.best_acc}
        ckpt.save_checkpoint(self.run, "last", model_state=self.model.state_dict(),
                             optimizer=self.optimizer, scheduler=self.scheduler,
                             scaler=self.scaler, ema_state=ema_state, info=info)

    def _save(self, epoch: int, row: dict) -> None:
        self.history.append(row)
        improved = row["val_acc"] > self.best_acc
        self.best_acc = max(self.best_acc, row["val_acc"])
        self._checkpoint(epoch)
        if not self.dist.is_main:
            return
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
        with self.stops:
            for epoch in range(self.start_epoch, self.cfg.epochs + 1):
                first = epoch == self.start_epoch
                row = self.train_epoch(epoch, self.start_step if first else 0,
                                       self.partial if first else None)
                self._save(epoch, row)
                barrier(self.dist)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, row)
                if epoch < self.cfg.epochs and self._agree(self.stops.signal is not None)[0]:
                    raise Interrupted(f"stopped after epoch {epoch} with a checkpoint; continue "
                                      f"with `cnnzoo train --resume {self.run}`",
                                      self.stops.signal)
        last = self.history[-1] if self.history else {}
        return {"val_acc": last.get("val_acc"), "val_loss": last.get("val_loss"),
                "best_acc": self.best_acc, "val_count": last.get("val_count", 0),
                "epochs": self.cfg.epochs}


def write_run_header(trainer: Trainer) -> None:
    """config.json and split.json of a new run (rank 0)."""
    if not trainer.dist.is_main:
        return
    src = trainer.source
    rd.write_json(trainer.run / rd.CONFIG, {
        "train": trainer.cfg.to_dict(), "classes": src.classes, "data_kind": src.kind,
        "input_size": list(trainer.model.default_cfg.input_size), "world_size": trainer.dist.world,
        "train_images": len(trainer.split.train), "val_images": len(trainer.split.val),
        "skipped_images": [{"file": f, "reason": r} for f, r in trainer.all_skipped()],
        "skipped_shards": [{"shard": f, "reason": r} for source in (src, trainer.val_source)
                           if source is not None for f, r in source.bad_shards]})
    if trainer.split.val_indices is not None:
        rd.write_json(trainer.run / rd.SPLIT, trainer.split.record())


def train(cfg: TrainConfig, run: Path, dist: DistInfo, *, resume: bool = False, force: bool = False,
          on_epoch_end: Callable[[int, dict], None] | None = None,
          log: Callable[[str], None] = print) -> dict:
    """Train into ``run`` (a new folder, or an existing run with ``resume``); returns the final
    validation numbers."""
    restart = False
    if resume:
        rd.require_run(run)
        if not ckpt.has_checkpoint(run):
            # Stopped before its first checkpoint: the run starts over, on its recorded split.
            log(f"{run} stopped before its first checkpoint: starting it over")
            resume, restart = False, True
    else:
        rd.check_new(run, force)  # before anything is written: bad data must not cost a run
    trainer = Trainer(cfg, run, dist, resume=resume, log=log,
                      val_indices=rd.read_split(run) if restart else None)
    if restart:
        write_run_header(trainer)
    elif not resume:
        barrier(dist)  # every rank has checked the folder before rank 0 writes to it
        if dist.is_main:
            rd.prepare_new(run, force)
        write_run_header(trainer)
    else:
        trainer.restore_skipped()
    try:
        return trainer.fit(on_epoch_end)
    except DataError:
        # Data found unusable before the first checkpoint (a class of unreadable images): bad
        # data must not cost a run, nor leave a half-made one behind.
        if not resume and dist.is_main and not ckpt.has_checkpoint(run):
            rd.remove_new(run)
        raise

