"""The training loop shared by every method and regulariser: data on the device, batched views,
precision, progress, metrics, atomic checkpoints and exact resume.

Nothing in here knows which method or regulariser runs: `PretrainModel` returns the loss terms,
`Method.on_step_end` does per-step side effects.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from rich.console import Console, RenderableType
from rich.markup import escape
from torch.profiler import record_function

from mimcli import distributed, signals
from mimcli.config import RunConfig
from mimcli.data.augment import BatchAugment
from mimcli.data.batch import Batch
from mimcli.data.images import ImageData
from mimcli.data.sampler import epoch_order
from mimcli.data.source import BatchSource, build_source, load_train_data
from mimcli.data.stream import ImageIndex
from mimcli.errors import DivergedError, UsageError
from mimcli.methods.compose import PretrainModel, build_model
from mimcli.objectives.precision import resolve_precision
from mimcli.rundir import provenance, runs
from mimcli.rundir.labels import describe_model
from mimcli.rundir.run_dir import append_metrics, check_run_dir, prepare_run_dir, run_provenance
from mimcli.tables import Col, fit_table
from mimcli.train.diagnostics import Diagnostics
from mimcli.train.logging_sinks import Sink, open_sinks
from mimcli.train.optim import build_optimizer
from mimcli.train.progress import TrainingProgress, make_progress
from mimcli.train.schedules import learning_rate, target_momentum


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Every random draw of an epoch derives from (seed, epoch, rank): resume is exact without replay."""
    return (seed * 1_000_003 + epoch * 7_919 + rank * 104_729) % (2**63 - 1)


T = TypeVar("T")


def named(items: Iterable[T], name: str) -> Iterator[T]:
    """`items`, each one produced inside a profiler range called `name` (a generator's work runs at `next`)."""
    iterator = iter(items)
    while True:
        with record_function(name):
            item = next(iterator, _END)
        if item is _END:
            return
        yield cast(T, item)


_END = object()


@dataclass
class EpochResult:
    epoch: int
    terms: dict[str, float]
    seconds: float
    images: int
    lr: float

    def record(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            **self.terms,
            "lr": self.lr,
            "images_per_s": self.images / self.seconds,
            "seconds": self.seconds,
        }


@dataclass
class Trainer:
    """Owns model, optimiser and data for one run; `fit()` trains from the current epoch to the end."""

    config: RunConfig
    run_dir: Path
    console: Console = field(default_factory=Console)
    data: ImageData | ImageIndex | None = None

    def __post_init__(self) -> None:
        cfg = self.config
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.device = distributed.resolve_device(cfg.train.device)
        self.autocast_dtype = resolve_precision(cfg.train.precision, self.device)
        if self.data is None:
            with distributed.main_first():  # one download, not one per rank
                self.data = load_train_data(cfg)
        torch.manual_seed(cfg.train.seed)
        self.model: PretrainModel = build_model(cfg, num_classes=max(len(self.data.classes), 1))
        if self.model.method.needs_labels and bool((self.data.labels < 0).any()):
            raise UsageError(
                f"method.name={cfg.method.name!r} needs labels, but {cfg.data.dataset} has unlabeled images"
            )
        self.model.to(self.device)
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        world = distributed.world_size()
        self.per_rank_batch = min(cfg.train.batch_size, len(self.data) // world)
        if self.per_rank_batch < 2:
            why = (
                f"train.batch_size={cfg.train.batch_size}: batch norm needs at least 2 images per batch"
                if cfg.train.batch_size < 2
                else f"{len(self.data)} images cannot fill a batch of 2 on each of {world} processes"
            )
            raise UsageError(why)
        self.adjusted = adjustments(cfg, self.data, self.per_rank_batch, world)
        if self.adjusted:  # the run records (config.toml, checkpoint) and uses what it trains with
            self.config = cfg = runs.with_values(cfg, {key: a["used"] for key, a in self.adjusted.items()})
        self.optimizer = build_optimizer(self.model, cfg.train, self.per_rank_batch * world, self.device)
        self.steps_per_epoch = len(self.data) // (self.per_rank_batch * world)
        self.augment = BatchAugment(cfg.augment, cfg.data.image_size)
        self.source: BatchSource = build_source(cfg, self.data, self.device, self.augment, self.model.method.n_views)
        self.train_model: torch.nn.Module = distributed.wrap_model(
            self.model, self.device, self.model.method.sync_batchnorm and not cfg.train.bn_group_size
        )  # groups of bn_group_size rows are per process: DataParallel's per-GPU statistics
        self.step_fn = torch.compile(self.train_model) if cfg.train.compile else self.train_model
        self.diagnostics = (
            Diagnostics.build(cfg, self.data, self.augment, self.device) if distributed.is_main() else None
        )
        self.epoch = 0
        self.provenance: dict[str, Any] = {}  # merged into every run.json write (see pretrain)
        self.step = 0  # optimiser steps done inside the current epoch (non-zero only mid-epoch)
        self.epoch_state: dict[str, Any] = {}  # mid-epoch: RNG states and partial loss sums
        self.saved: tuple[int, int] | None = None  # (epoch, step) that checkpoint.pt holds, once known

    # ---- checkpointing -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "rng": rng,
            "config": self.config.to_dict(),
            "step": self.step,
            "epoch_state": self.epoch_state,
        }

    def save_checkpoint(self) -> None:
        if not distributed.is_main():
            return
        runs.atomic_torch_save(self.state(), self.run_dir / runs.CHECKPOINT)
        self.saved = (self.epoch, self.step)
        backbone_state = self.model.backbone.state_dict()
        runs.atomic_torch_save(backbone_state, self.run_dir / runs.BACKBONE)
        if self.epoch in self.config.train.save_epochs:
            runs.atomic_torch_save(backbone_state, self.run_dir / "backbones" / f"epoch-{self.epoch}.pt")

    def check_space(self) -> None:
        """Refuse (OSError ENOSPC) before an epoch's files are written to a disk without room for them."""
        needed = runs.tensor_bytes(self.state()) + runs.tensor_bytes(self.model.backbone.state_dict())
        runs.check_free_space(self.run_dir / runs.CHECKPOINT, needed)

    def load_checkpoint(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.epoch = int(state["epoch"])
            self.step = int(state.get("step", 0))
            self.epoch_state = state.get("epoch_state", {})
            self.saved = (self.epoch, self.step)
            torch.set_rng_state(state["rng"]["torch"].cpu())
            if "cuda" in state["rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
        except Exception as error:  # a checkpoint that is not ours, a torn or empty file
            raise UsageError(f"cannot resume from {path}: {runs.first_line(error)}") from None

    # ---- one epoch -------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def batches(self, epoch: int) -> torch.Tensor:
        """This rank's index batches (steps, B) for an epoch: a seeded permutation, sharded, last partial
        batch dropped."""
        assert self.data is not None  # loaded in __post_init__
        return epoch_order(
            len(self.data),
            epoch_seed(self.config.train.seed, epoch),
            self.per_rank_batch,
            distributed.world_size(),
            distributed.rank(),
        )

    def is_log_point(self, step: int, steps: int) -> bool:
        """Steps at which the running loss is read back from the device (the only host syncs in an epoch)."""
        train = self.config.train
        return step % train.log_every == 0 or step == steps or bool(train.print_every and step % train.print_every == 0)

    def train_epoch(self, progress: TrainingProgress | None = None, sinks: list[Sink] | None = None) -> EpochResult:
        cfg = self.config
        epoch = self.epoch
        sinks = sinks or []
        seed = epoch_seed(cfg.train.seed, epoch, distributed.rank())
        augment_rng = torch.Generator(self.device).manual_seed(seed)
        sums: dict[str, torch.Tensor] = {}
        if self.step and self.epoch_state:  # resumed mid-epoch: continue the epoch's random streams
            torch.set_rng_state(self.epoch_state["torch"].cpu())
            augment_rng.set_state(self.epoch_state["augment"].cpu())
            sums = {name: value.to(self.device) for name, value in self.epoch_state["sums"].items()}
        else:
            torch.manual_seed(seed)  # regulariser noise
        n_views = self.model.method.n_views
        self.train_model.train()
        batches = self.batches(epoch)
        images_per_step = self.per_rank_batch * distributed.world_size()
        if progress is not None:
            progress.start_epoch(epoch)
        start = time.perf_counter()
        first = self.step
        source = named(self.source.batches(batches, seed, augment_rng, first), "mim.data")
        lr = math.nan  # then the learning rate of the latest step, which the epoch's record logs
        # The phases are named for the profiler (benchmarks/gpu_profile.py); unprofiled, each costs microseconds.
        for step, (views, labels) in enumerate(source, start=first + 1):
            global_step = epoch * self.steps_per_epoch + step - 1  # 0 for the run's first step
            lr = learning_rate(cfg.train, images_per_step, global_step, self.steps_per_epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            momentum = target_momentum(
                self.model.method.base_momentum, global_step, self.steps_per_epoch, cfg.train.epochs
            )
            with record_function("mim.data"):
                batch = Batch(views.contiguous(memory_format=self.memory_format), labels, n_views)
            with self.autocast(), record_function("mim.forward"):
                terms = self.step_fn(batch)
            with record_function("mim.backward"):
                self.optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
            with record_function("mim.optimizer"):
                self.optimizer.step()
                self.model.method.on_step_end(self.model.backbone, momentum)
            with record_function("mim.metrics"):
                for name, value in terms.items():
                    value = value.detach().float()
                    sums[name] = sums[name] + value if name in sums else value
            self.step = step
            stop = signals.stop_requested()
            if step < len(batches) and (
                stop or (cfg.train.checkpoint_steps and step % cfg.train.checkpoint_steps == 0)
            ):
                self.check_finite(dict(zip(sums, (torch.stack(list(sums.values())) / step).tolist())), epoch)
                self.epoch_state = {
                    "torch": torch.get_rng_state(),
                    "augment": augment_rng.get_state(),
                    "sums": {name: value.cpu() for name, value in sums.items()},
                }
                self.save_checkpoint()
                if stop:  # SIGTERM and co. inside signals.deferred(): this step is saved, stop here
                    signals.stop_if_requested()
            if (progress is not None or sinks) and self.is_log_point(step, len(batches)):
                running = dict(zip(sums, (torch.stack(list(sums.values())) / step).tolist()))
                if progress is not None:
                    progress.values(running)
                rate = (step - first) * images_per_step / (time.perf_counter() - start)
                for sink in sinks:
                    sink.step(epoch * len(batches) + step, {**running, "lr": lr, "images_per_s": rate})
            if progress is not None:
                progress.step()
        seconds = time.perf_counter() - start
        means = distributed.mean_over_ranks(torch.stack(list(sums.values()))) if sums else torch.zeros(0)
        terms_mean = {name: value / max(len(batches), 1) for name, value in zip(sums, means.tolist())}
        self.check_finite(terms_mean, epoch)
        self.epoch += 1
        self.step, self.epoch_state = 0, {}
        return EpochResult(self.epoch, terms_mean, seconds, (len(batches) - first) * images_per_step, lr)

    def kept_note(self) -> str:
        """What checkpoint.pt holds, for the line a signal's stop prints."""
        if self.saved is None:
            return f"no epoch finished, so nothing was saved in {self.run_dir}"
        epoch, step = self.saved
        mid = f" and {step} of {self.steps_per_epoch} steps of epoch {epoch + 1}" if step else ""
        return f"{self.run_dir / runs.CHECKPOINT} holds epoch {epoch}{mid}"

    def check_finite(self, terms: dict[str, float], epoch: int) -> None:
        """Stop before a diverged state is saved: the last good checkpoint stays as it was."""
        bad = [name for name, value in terms.items() if not math.isfinite(value)]
        if bad:
            raise DivergedError(
                f"training diverged: {', '.join(bad)} became {terms[bad[0]]} in epoch "
                f"{epoch + 1}; {runs.CHECKPOINT} still holds epoch {epoch} or a step before "
                "(try a smaller train.lr)"
            )

    def measure(self) -> dict[str, Any]:
        """Information-plane estimates for metrics.jsonl when due (mimcli.train.diagnostics), else {}."""
        return self.diagnostics.measure(self.model.backbone, self.epoch) if self.diagnostics else {}

    def fit(self, show_progress: bool = True) -> list[EpochResult]:
        """Train to the last epoch. The main rank shows a live bar (`show_progress` and a terminal) or
        prints one flushed line per epoch, and mirrors metrics into the trackers of train.log."""
        results = []
        main = distributed.is_main()
        train = self.config.train
        steps = self.steps_per_epoch
        sinks = open_sinks(train.log, self.run_dir, purge_step=self.epoch * steps) if main else []
        progress = (
            make_progress(
                self.console,
                show_progress,
                train.epochs,
                self.epoch,
                steps,
                self.per_rank_batch * distributed.world_size(),
                train.print_every,
            )
            if main
            else None
        )
        # A signal finishes the step and saves it (one process; under torchrun the ranks would have to
        # agree on the step, so each stops at once and the last checkpoint stays): mimcli/signals.py
        defer = contextlib.nullcontext() if distributed.is_distributed() else signals.deferred()
        try:
            with signals.keeping(self.kept_note), defer:
                while self.epoch < train.epochs:
                    result = self.train_epoch(progress, sinks)
                    results.append(result)
                    if main:
                        record = result.record() | self.measure()
                        self.check_space()  # a full disk leaves every file of the last epoch as it was
                        append_metrics(self.run_dir, record)
                        for sink in sinks:
                            sink.epoch(self.epoch * steps, record)
                        self.save_checkpoint()
                        runs.write_json(
                            self.run_dir / runs.STATUS,
                            {**self.provenance, "status": "running", "epochs_done": self.epoch},
                        )
                    if progress is not None:
                        progress.end_epoch(format_epoch(result, train.epochs))
                    if self.epoch < train.epochs:  # a signal during the epoch: it is saved, stop here
                        signals.stop_if_requested()
        finally:
            if progress is not None:
                progress.close()
            for sink in sinks:
                sink.close()
        return results


def usable_cpus() -> int:
    """CPUs this process may run on (a SLURM allocation or taskset, not the whole machine's)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def adjustments(cfg: RunConfig, data: ImageData | ImageIndex, per_rank_batch: int, world: int) -> dict[str, Any]:
    """The values this run cannot use as asked, each {requested, used, why}: run.json records them, config.toml
    holds the used ones, and `pretrain` says so in one line each."""
    out: dict[str, Any] = {}
    if cfg.data.subset is not None and cfg.data.subset > len(data):
        why = f"there are only {len(data)} training images"
        out["data.subset"] = {"requested": cfg.data.subset, "used": len(data), "why": why}
    if per_rank_batch != cfg.train.batch_size:
        over = f" over {world} processes" if world > 1 else ""
        why = f"a batch cannot hold more than the {len(data)} training images{over}"
        out["train.batch_size"] = {"requested": cfg.train.batch_size, "used": per_rank_batch, "why": why}
    cpus = usable_cpus()
    if isinstance(data, ImageIndex) and cfg.data.workers > cpus:  # only streamed images are decoded by workers
        why = f"this process may use {cpus} CPUs, and more decoding processes than CPUs only compete for them"
        out["data.workers"] = {"requested": cfg.data.workers, "used": cpus, "why": why}
    return out


def format_epoch(result: EpochResult, epochs: int) -> str:
    terms = "  ".join(f"{k} {v:.4f}" for k, v in result.terms.items())
    return f"epoch {result.epoch}/{epochs}  {terms}  {result.images / result.seconds:.0f} img/s  {result.seconds:.1f}s"


def summary_table(
    config: RunConfig, run_dir: Path, results: list[EpochResult], seconds: float, width: int = 80
) -> list[RenderableType]:
    last = results[-1] if results else None
    rows = [
        ["run directory", escape(str(run_dir))],
        ["backbone", f"{config.model.backbone} width {config.model.width} ({config.data.image_size} px)"],
        ["data", f"{config.data.dataset}" + (f" subset {config.data.subset}" if config.data.subset else "")],
        ["epochs", str(config.train.epochs)],
    ]
    if last:
        rows += [[f"final {name}", f"{value:.4f}"] for name, value in last.terms.items()]
        rows.append(["images/s (last epoch)", f"{last.images / last.seconds:.0f}"])
    rows.append(["wall time", f"{seconds:.1f} s"])
    title = escape(f"{config.run.name}: {describe_model(config)}")
    return fit_table(title, (Col("key", key=True), Col("value", wrap=True)), rows, width)


def pretrain(
    config: RunConfig,
    run_dir: Path,
    resume: bool = False,
    force: bool = False,
    console: Console | None = None,
    show_progress: bool = True,
) -> list[EpochResult]:
    """Train a run to config.train.epochs in run_dir (resuming from its checkpoint if asked)."""
    console = console or Console()
    replace = check_run_dir(run_dir, config, resume, force)
    distributed.barrier()
    trainer = Trainer(config, run_dir, console)  # config, data and model are valid before anything is deleted
    if resume:
        trainer.load_checkpoint(run_dir / runs.CHECKPOINT)
    prepare_run_dir(run_dir, replace)
    config = trainer.config  # with the values it adjusted
    if distributed.is_main():
        for key, change in trainer.adjusted.items():
            console.print(
                f"note: {key}={change['requested']} adjusted to {change['used']}: {change['why']}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        runs.save_config(run_dir, config)
        if not (run_dir / runs.REQUIREMENTS).exists():  # the environment of the first start, kept on resume
            runs.atomic_write_text(run_dir / runs.REQUIREMENTS, provenance.requirements())
        # the label is recorded so that a reader without this run's plugins still names it (mim report)
        trainer.provenance = {**run_provenance(run_dir, trainer.device, resume), "label": describe_model(config)}
        if trainer.adjusted:
            trainer.provenance["adjusted"] = {**trainer.provenance.get("adjusted", {}), **trainer.adjusted}
        runs.write_json(
            run_dir / runs.STATUS, {**trainer.provenance, "status": "running", "epochs_done": trainer.epoch}
        )
    start = time.perf_counter()
    results = trainer.fit(show_progress)
    seconds = time.perf_counter() - start
    if distributed.is_main():
        if trainer.epoch == 0 or not (run_dir / runs.BACKBONE).exists():
            trainer.save_checkpoint()
        runs.write_json(
            run_dir / runs.STATUS,
            {
                **trainer.provenance,
                "status": "finished",
                "epochs_done": trainer.epoch,
                "train_seconds": seconds,
                "finished_at": provenance.now(),
            },
        )
        for renderable in summary_table(config, run_dir, results, seconds, console.width):
            console.print(renderable)
    distributed.barrier()  # the run directory is complete when any rank returns
    return results
