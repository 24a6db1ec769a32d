"""What a person watching training sees: a live per-step bar on a terminal, plain flushed lines otherwise.

The training loop calls `step()` after every optimiser step with host-side numbers only (no
read-back from the device), and `values()` at log points with loss terms it has already synced;
so the bar advances per step while the GPU queue stays full. Without a terminal (or with
--no-progress) nothing animates: one line per epoch, and one every `every` steps when asked, each
flushed at once so a SLURM log fills as training goes.
"""

from __future__ import annotations

import time
from typing import Any, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def format_terms(terms: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:.4f}" for name, value in terms.items())


def format_duration(seconds: float) -> str:
    seconds = max(round(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TrainingProgress:
    """Counts steps and images for rates and ETAs; subclasses decide how to show them."""

    def __init__(self, console: Console, epochs: int, start_epoch: int, steps_per_epoch: int, batch_images: int):
        self.console = console
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_images = batch_images
        self.run_steps = max(epochs - start_epoch, 0) * steps_per_epoch  # steps left in this session
        self.done = 0
        self.run_start = time.perf_counter()
        self.epoch = start_epoch
        self.epoch_step = 0
        self.epoch_start = self.run_start
        self.terms: dict[str, float] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop any live display."""

    def start_epoch(self, epoch: int) -> None:
        """`epoch` counts from 0; shown as epoch+1 of epochs."""
        self.epoch, self.epoch_step, self.epoch_start = epoch, 0, time.perf_counter()

    def step(self) -> None:
        """One optimiser step was queued: host-side counters only."""
        self.epoch_step += 1
        self.done += 1

    def values(self, terms: dict[str, float]) -> None:
        """Loss terms (running means over the epoch so far) read back at a log point."""
        self.terms = terms

    def images_per_s(self) -> float:
        elapsed = time.perf_counter() - self.epoch_start
        return self.epoch_step * self.batch_images / elapsed if elapsed > 0 else 0.0

    def run_eta(self) -> float:
        """Seconds left in the run, at this session's mean step time."""
        elapsed = time.perf_counter() - self.run_start
        return elapsed / self.done * (self.run_steps - self.done) if self.done else 0.0

    def end_epoch(self, line: str) -> None:
        """An epoch finished: print its summary line (above the bar on a terminal), flushed."""
        self.console.print(line, highlight=False, soft_wrap=True, markup=False)
        self.console.file.flush()


class PlainProgress(TrainingProgress):
    """Logs and pipes: no animation; optionally a flushed line every `every` steps with rate and ETA."""

    def __init__(self, *args: Any, every: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.every = every

    def step(self) -> None:
        super().step()
        if self.every and self.epoch_step % self.every == 0 and self.epoch_step < self.steps_per_epoch:
            parts = [
                f"epoch {self.epoch + 1}/{self.epochs}",
                f"step {self.epoch_step}/{self.steps_per_epoch}",
                format_terms(self.terms),
                f"{self.images_per_s():.0f} img/s",
                f"elapsed {format_duration(time.perf_counter() - self.run_start)}",
                f"ETA {format_duration(self.run_eta())}",
            ]
            self.end_epoch("  ".join(part for part in parts if part))


class LiveProgress(TrainingProgress):
    """A rich bar for the run and one for the epoch: steps, images/s, loss, elapsed and time remaining."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[terms]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self.bar = Progress(*columns, console=self.console, transient=True, refresh_per_second=4)
        self.bar.start()
        self.run_task: TaskID = self.bar.add_task("run", total=self.run_steps, rate="", terms="")
        self.epoch_task: TaskID | None = None

    def start_epoch(self, epoch: int) -> None:
        super().start_epoch(epoch)
        if self.epoch_task is not None:
            self.bar.remove_task(self.epoch_task)
        self.epoch_task = self.bar.add_task(
            f"epoch {epoch + 1}/{self.epochs}", total=self.steps_per_epoch, rate="", terms=""
        )

    def step(self) -> None:
        super().step()
        rate = f"{self.images_per_s():.0f} img/s"
        self.bar.update(self.run_task, advance=1)
        if self.epoch_task is not None:
            self.bar.update(self.epoch_task, advance=1, rate=rate)

    def values(self, terms: dict[str, float]) -> None:
        super().values(terms)
        loss = {k: v for k, v in terms.items() if k == "loss"} or terms
        if self.epoch_task is not None:
            self.bar.update(self.epoch_task, terms=format_terms(loss))

    def close(self) -> None:
        self.bar.stop()


def make_progress(
    console: Console, live: bool, epochs: int, start_epoch: int, steps_per_epoch: int, batch_images: int, every: int = 0
) -> TrainingProgress:
    """The live bar on a terminal when wanted, plain lines otherwise."""
    args = (console, epochs, start_epoch, steps_per_epoch, batch_images)
    if live and console.is_terminal:
        return LiveProgress(*args)
    return PlainProgress(*args, every=every)


class CountProgress:
    """Progress through a counted job that is not training (feature batches, probe epochs): the same live
    bar as training, with elapsed time and time left, on a terminal; otherwise (a log, --no-progress) one
    flushed line every `every` units, each with the rate and the time left, and one at the end. A job
    done within `quiet_s` seconds logs nothing (a small probe should not fill a log)."""

    quiet_s = 5.0

    def __init__(self, console: Console | None, description: str, total: int, unit: str, live: bool, every: int):
        self.console, self.description, self.total, self.unit, self.every = console, description, total, unit, every
        self.done = 0
        self.start = time.perf_counter()
        self.logged = False
        self.bar: Progress | None = None
        if console is not None and live and console.is_terminal:
            columns = (
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(unit),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            self.bar = Progress(*columns, console=console, transient=True, refresh_per_second=4)
            self.bar.start()
            self.task = self.bar.add_task(description, total=total)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(self.task, advance=n)
        elif self.every and self.done % self.every == 0 and self.done < self.total and self.past_quiet():
            self.line()

    def past_quiet(self) -> bool:
        return time.perf_counter() - self.start >= self.quiet_s

    def line(self) -> None:
        """`description: done/total unit  rate  elapsed  ETA`, flushed (for logs)."""
        if self.console is None:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        rate = f"{self.done / elapsed:.1f} {self.unit}/s" if elapsed > 0 else ""
        parts = [f"{self.description}: {self.done}/{self.total} {self.unit}", rate]
        parts += [f"elapsed {format_duration(elapsed)}", f"ETA {format_duration(eta)}"]
        self.console.print("  ".join(p for p in parts if p), highlight=False, soft_wrap=True, markup=False)
        self.console.file.flush()
        self.logged = True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        elif self.logged:  # it logged along the way: say when it ended
            self.line()
