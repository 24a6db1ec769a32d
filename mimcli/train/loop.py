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
from collections.abc import Callable, Iterable, Iterator
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
    """Everything one run trains with (made by `build_trainer`) and where it stands; `fit()` trains from the
    current epoch to the last."""

    config: RunConfig  # with the values `adjusted` lists
    run_dir: Path
    console: Console
    device: torch.device
    autocast_dtype: torch.dtype | None
    data: ImageData | ImageIndex
    model: PretrainModel
    memory_format: torch.memory_format
    per_rank_batch: int
    adjusted: dict[str, Any]  # {key: {requested, used, why}}: see adjustments()
    optimizer: torch.optim.Optimizer
    steps_per_epoch: int
    augment: BatchAugment
    source: BatchSource
    train_model: torch.nn.Module  # the model, wrapped for DDP under torchrun
    step_fn: Callable[..., Any]  # train_model, compiled with train.compile
    diagnostics: Diagnostics | None  # the main rank's, else None
    epoch: int = 0
    step: int = 0  # optimiser steps done inside the current epoch (non-zero only mid-epoch)
    epoch_state: dict[str, Any] = field(default_factory=dict)  # mid-epoch: RNG states and partial loss sums
    saved: tuple[int, int] | None = None  # (epoch, step) that checkpoint.pt holds, once known
    provenance: dict[str, Any] = field(default_factory=dict)  # merged into every run.json write (see pretrain)

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
        """One epoch, or what is left of it after a mid-epoch resume. A step reads straight down: its learning
        rate and target momentum, the batch, forward, backward, the optimiser and the method's update, the loss
        sums; then a mid-epoch checkpoint and a log point, when due."""
        cfg, epoch, sinks = self.config, self.epoch, sinks or []
        seed = epoch_seed(cfg.train.seed, epoch, distributed.rank())
        augment_rng, sums = self.random_streams(seed)
        resumed = bool(self.step and self.epoch_state)
        grad_sums: dict[str, float] = dict(self.epoch_state.get("grad_sums", {})) if resumed else {}
        self.train_model.train()
        batches = self.batches(epoch)
        steps, first = len(batches), self.step
        grad_steps = sampled_steps(steps, cfg.train.grad_norm_steps)  # train.grad_norm_steps: summed over these
        images_per_step = self.per_rank_batch * distributed.world_size()
        if progress is not None:
            progress.start_epoch(epoch)
        start = time.perf_counter()
        source = named(self.source.batches(batches, seed, augment_rng, first), "mim.data")
        lr = math.nan  # then each step's; the epoch's record logs its last step's
        # The phases are named for the profiler (benchmarks/gpu_profile.py); unprofiled, each costs microseconds.
        for step, (views, labels) in enumerate(source, start=first + 1):
            global_step = epoch * self.steps_per_epoch + step - 1  # 0 for the run's first step
            lr = learning_rate(cfg.train, images_per_step, global_step, self.steps_per_epoch)
            momentum = target_momentum(
                self.model.method.base_momentum, global_step, self.steps_per_epoch, cfg.train.epochs
            )
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with record_function("mim.data"):
                batch = Batch(views.contiguous(memory_format=self.memory_format), labels, self.model.method.n_views)
            with self.autocast(), record_function("mim.forward"):
                terms = self.step_fn(batch)
            if step in grad_steps:  # same graph as the step's backward: no extra forward, no random draw
                for name, value in self.model.gradient_norms(terms).items():
                    grad_sums[name] = grad_sums.get(name, 0.0) + value
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
            save = step < steps and (
                stop or bool(cfg.train.checkpoint_steps and step % cfg.train.checkpoint_steps == 0)
            )
            log = (progress is not None or bool(sinks)) and self.is_log_point(step, steps)
            running = running_mean(sums, step) if save or log else {}  # the only host sync of a step
            if save:
                self.save_mid_epoch(running, augment_rng, sums, grad_sums, stop)
            if log:
                rate = (step - first) * images_per_step / (time.perf_counter() - start)
                values = {**running, "lr": lr, "images_per_s": rate}
                if progress is not None:
                    progress.values(running)
                for sink in sinks:
                    sink.step(epoch * steps + step, values)
            if progress is not None:
                progress.step()
        seconds = time.perf_counter() - start
        means = distributed.mean_over_ranks(torch.stack(list(sums.values()))) if sums else torch.zeros(0)
        terms_mean = {name: value / max(steps, 1) for name, value in zip(sums, means.tolist())}
        self.check_finite(terms_mean, epoch)
        terms_mean |= {name: value / len(grad_steps) for name, value in grad_sums.items()}
        self.epoch += 1
        self.step, self.epoch_state = 0, {}
        return EpochResult(self.epoch, terms_mean, seconds, (steps - first) * images_per_step, lr)

    def random_streams(self, seed: int) -> tuple[torch.Generator, dict[str, torch.Tensor]]:
        """The epoch's augmentation generator and loss sums, and the global RNG (regulariser noise): from `seed`,
        or where a mid-epoch checkpoint left them."""
        augment_rng = torch.Generator(self.device).manual_seed(seed)
        if self.step and self.epoch_state:  # resumed mid-epoch
            torch.set_rng_state(self.epoch_state["torch"].cpu())
            augment_rng.set_state(self.epoch_state["augment"].cpu())
            return augment_rng, {name: value.to(self.device) for name, value in self.epoch_state["sums"].items()}
        torch.manual_seed(seed)
        return augment_rng, {}

    def save_mid_epoch(
        self,
        running: dict[str, float],
        augment_rng: torch.Generator,
        sums: dict[str, torch.Tensor],
        grad_sums: dict[str, float],
        stop: bool,
    ) -> None:
        """Checkpoint the step just done with the epoch's random streams and loss sums (train.checkpoint_steps, or
        a signal: SIGTERM and co. inside signals.deferred() stop here, once it is saved)."""
        self.check_finite(running, self.epoch)
        self.epoch_state = {
            "torch": torch.get_rng_state(),
            "augment": augment_rng.get_state(),
            "sums": {name: value.cpu() for name, value in sums.items()},
            "grad_sums": grad_sums,
        }
        self.save_checkpoint()
        if stop:
            signals.stop_if_requested()

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

    def write_status(self, status: str, **extra: Any) -> None:
        """run.json, the only place it is written: the run's provenance, its status and epochs done, and `extra`."""
        runs.write_json(
            self.run_dir / runs.STATUS, {**self.provenance, "status": status, "epochs_done": self.epoch, **extra}
        )

    def measure(self) -> dict[str, Any]:
        """Information-plane estimates for metrics.jsonl when due (mimcli.train.diagnostics), else {}."""
        return self.diagnostics.measure(self.model.backbone, self.epoch) if self.diagnostics else {}

    def record_epoch(self, result: EpochResult, sinks: list[Sink]) -> None:
        """After an epoch, on the main rank: its metrics.jsonl record (with the diagnostics when due), the
        trackers, the checkpoint and run.json."""
        record = result.record() | self.measure()
        self.check_space()  # a full disk leaves every file of the last epoch as it was
        append_metrics(self.run_dir, record)
        for sink in sinks:
            sink.epoch(self.epoch * self.steps_per_epoch, record)
        self.save_checkpoint()
        self.write_status("running")

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
                        self.record_epoch(result, sinks)
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


def sampled_steps(steps: int, count: int) -> set[int]:
    """`count` steps (1-based) evenly spaced over an epoch of `steps`, the first one included (it sees the
    epoch's starting weights); no random draw, so sampling changes nothing else in the run."""
    count = min(count, steps)
    return {1 + i * steps // count for i in range(count)}


def build_trainer(
    config: RunConfig, run_dir: Path, console: Console | None = None, data: ImageData | ImageIndex | None = None
) -> Trainer:
    """Everything a run trains with, built in this order (the model's initial weights depend on it): threads,
    device and precision; the training images (`data`, or loaded); the model; the batch per process and the
    values that had to be adjusted; optimiser; batch source; the (DDP-)wrapped and compiled model; diagnostics."""
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    device = distributed.resolve_device(config.train.device)
    autocast_dtype = resolve_precision(config.train.precision, device)
    if data is None:
        with distributed.main_first():  # one download, not one per rank
            data = load_train_data(config)
    model, memory_format = place_model(config, data, device)
    world = distributed.world_size()
    per_rank_batch = batch_per_rank(config, data, world)
    adjusted = adjustments(config, data, per_rank_batch, world)
    if adjusted:  # the run records (config.toml, checkpoint) and uses what it trains with
        config = runs.with_values(config, {key: change["used"] for key, change in adjusted.items()})
    optimizer = build_optimizer(model, config.train, per_rank_batch * world, device)
    augment = BatchAugment(config.augment, config.data.image_size)
    source = build_source(config, data, device, augment, model.method.n_views)
    train_model = distributed.wrap_model(
        model, device, model.method.sync_batchnorm and not config.train.bn_group_size
    )  # groups of bn_group_size rows are per process: DataParallel's per-GPU statistics
    return Trainer(
        config=config,
        run_dir=run_dir,
        console=console or Console(),
        device=device,
        autocast_dtype=autocast_dtype,
        data=data,
        model=model,
        memory_format=memory_format,
        per_rank_batch=per_rank_batch,
        adjusted=adjusted,
        optimizer=optimizer,
        steps_per_epoch=len(data) // (per_rank_batch * world),
        augment=augment,
        source=source,
        train_model=train_model,
        step_fn=torch.compile(train_model) if config.train.compile else train_model,
        diagnostics=Diagnostics.build(config, data, augment, device) if distributed.is_main() else None,
    )


def place_model(
    config: RunConfig, data: ImageData | ImageIndex, device: torch.device
) -> tuple[PretrainModel, torch.memory_format]:
    """The model, initialised from train.seed, on the device in the memory format the batches will have."""
    torch.manual_seed(config.train.seed)
    model = build_model(config, num_classes=max(len(data.classes), 1))
    if model.method.needs_labels and bool((data.labels < 0).any()):
        raise UsageError(
            f"method.name={config.method.name!r} needs labels, but {config.data.dataset} has unlabeled images"
        )
    model.to(device)
    memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    return model, memory_format


def batch_per_rank(config: RunConfig, data: ImageData | ImageIndex, world: int) -> int:
    """train.batch_size, or fewer when the images cannot fill one batch per process; at least 2 (batch norm)."""
    per_rank_batch = min(config.train.batch_size, len(data) // world)
    if per_rank_batch < 2:
        why = (
            f"train.batch_size={config.train.batch_size}: batch norm needs at least 2 images per batch"
            if config.train.batch_size < 2
            else f"{len(data)} images cannot fill a batch of 2 on each of {world} processes"
        )
        raise UsageError(why)
    return per_rank_batch


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


def running_mean(sums: dict[str, torch.Tensor], steps: int) -> dict[str, float]:
    """The mean of each loss term over the epoch's first `steps` steps on this process (reads the device)."""
    return dict(zip(sums, (torch.stack(list(sums.values())) / steps).tolist()))


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
    trainer = build_trainer(config, run_dir, console)  # config, data and model are valid before anything is deleted
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
        trainer.write_status("running")
    start = time.perf_counter()
    results = trainer.fit(show_progress)
    seconds = time.perf_counter() - start
    if distributed.is_main():
        info = trainer.measure() if config.train.epochs == 0 else {}
        if info:  # an untrained run (random init) records the estimates before any step, at epoch 0
            append_metrics(run_dir, {"epoch": 0, **info})
        if trainer.epoch == 0 or not (run_dir / runs.BACKBONE).exists():
            trainer.save_checkpoint()
        trainer.write_status("finished", train_seconds=seconds, finished_at=provenance.now())
        for renderable in summary_table(config, run_dir, results, seconds, console.width):
            console.print(renderable)
    distributed.barrier()  # the run directory is complete when any rank returns
    return results
