"""Per-epoch progress: a rich bar (loss, accuracy, images/s, ETA) on a terminal, plain lines
elsewhere (logs, CI, pipes), and nothing on ranks other than 0."""
from __future__ import annotations

import sys
import time


class EpochProgress:
    def __init__(self, total_steps: int, epoch: int, epochs: int, *, enabled: bool = True,
                 stream=None):
        self.total, self.epoch, self.epochs = total_steps, epoch, epochs
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()
        self._bar = None
        if enabled and self.stream.isatty():
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            self._bar = Progress(TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 transient=True)
            self._task = self._bar.add_task("train", total=total_steps, stats="")
            self._bar.start()

    def update(self, step: int, loss: float, acc: float, images: int) -> None:
        if self._bar is not None:
            rate = images / max(1e-9, time.perf_counter() - self.start)
            self._bar.update(self._task, completed=step,
                             stats=f"loss {loss:.4f} acc {acc:.1f}% {rate:,.0f} img/s")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()

    def line(self, row: dict) -> None:
        """The epoch's summary, one line, on every kind of output."""
        if not self.enabled:
            return
        val = (f"  val loss {row['val_loss']:.4f} top-1 {row['val_acc']:.2f}%"
               if row.get("val_loss") is not None else "")
        eta = (self.epochs - self.epoch) * row["seconds"]
        print(f"epoch {self.epoch}/{self.epochs}  train loss {row['train_loss']:.4f} "
              f"acc {row['train_acc']:.2f}%{val}  {row['images_per_s']:,.0f} img/s  "
              f"{row['seconds']:.1f}s  ETA {eta:.0f}s", file=self.stream, flush=True)
