"""Learning rate and target momentum as functions of the global step, against hand-computed values; the loop
uses and logs exactly those values."""

from __future__ import annotations

import math

import pytest
import torch

from mimcli.config import load_config
from mimcli.data.shapes import generate_shapes
from mimcli.train.logging_sinks import Sink
from mimcli.train.loop import build_trainer
from mimcli.train.schedules import base_lr, learning_rate, target_momentum

TINY = ["model.width=8", "data.dataset=shapes", "train.precision=fp32", "train.diagnostics_every=0"]


def train(*sets: str):
    return load_config(None, [*TINY, *sets]).train


def test_constant_schedule_is_the_configured_lr_at_every_step():
    cfg = train("train.lr=0.1", "train.epochs=4")
    assert [learning_rate(cfg, 32, step, 10) for step in (0, 9, 10, 39)] == [0.1, 0.1, 0.1, 0.1]


def test_cosine_schedule_holds_for_an_epoch_then_follows_the_epoch_index():
    cfg = train("train.lr=0.1", "train.epochs=4", "train.schedule=cosine")
    # epoch e of 4: 0.1 * (1 + cos(pi e / 4)) / 2
    assert learning_rate(cfg, 32, 0, 10) == pytest.approx(0.1)
    assert learning_rate(cfg, 32, 9, 10) == pytest.approx(0.1)
    assert learning_rate(cfg, 32, 10, 10) == pytest.approx(0.1 * (1 + math.sqrt(0.5)) / 2)
    assert learning_rate(cfg, 32, 19, 10) == pytest.approx(0.1 * (1 + math.sqrt(0.5)) / 2)
    assert learning_rate(cfg, 32, 20, 10) == pytest.approx(0.05)
    assert learning_rate(cfg, 32, 39, 10) == pytest.approx(0.1 * (1 - math.sqrt(0.5)) / 2)


def test_warmup_cosine_ramps_per_step_then_decays_per_step():
    # 2 epochs of 10 steps, half an epoch (5 steps) of warm-up, then 15 steps of cosine
    cfg = train("train.lr=0.1", "train.epochs=2", "train.schedule=warmup_cosine", "train.warmup_epochs=0.5")
    warmup = [learning_rate(cfg, 32, step, 10) for step in range(6)]
    assert warmup == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08, 0.1])
    assert learning_rate(cfg, 32, 10, 10) == pytest.approx(0.1 * (1 + math.cos(math.pi / 3)) / 2)  # 0.075
    assert learning_rate(cfg, 32, 20, 10) == pytest.approx(0.0)


def test_lars_lr_is_per_256_images():
    cfg = train("train.lr=0.3", "train.optimizer=lars")
    assert base_lr(cfg, 1024) == pytest.approx(1.2)
    assert learning_rate(cfg, 512, 7, 10) == pytest.approx(0.6)


def test_target_momentum_rises_per_epoch_from_its_base_to_one():
    assert target_momentum(0.996, 0, 10, 30) == pytest.approx(0.996)
    assert target_momentum(0.996, 150, 10, 30) == pytest.approx(0.998)  # epoch 15 of 30
    assert target_momentum(0.996, 159, 10, 30) == pytest.approx(0.998)  # still epoch 15
    assert target_momentum(0.996, 300, 10, 30) == pytest.approx(1.0)
    assert target_momentum(1.0, 42, 10, 30) == 1.0  # a method without a target


class Recorder(Sink):
    def __init__(self) -> None:
        self.steps: dict[int, float] = {}

    def step(self, global_step: int, values: dict[str, float]) -> None:
        self.steps[global_step] = values["lr"]


def test_logged_lr_is_the_lr_each_step_used(tmp_path):
    config = load_config(
        None,
        [
            *TINY,
            "train.batch_size=16",
            "train.epochs=2",
            "train.log_every=1",
            "train.lr=0.01",
            "train.schedule=warmup_cosine",
            "train.warmup_epochs=1",
        ],
    )
    trainer = build_trainer(config, tmp_path, data=generate_shapes(64, seed=0))  # 4 steps per epoch
    used: list[float] = []
    optimizer_step = trainer.optimizer.step

    def step(*args: object, **kwargs: object) -> None:
        used.append(trainer.optimizer.param_groups[0]["lr"])
        optimizer_step(*args, **kwargs)

    trainer.optimizer.step = step  # type: ignore[method-assign]
    sink = Recorder()
    results = [trainer.train_epoch(None, [sink]) for _ in range(2)]
    assert used == pytest.approx(
        [
            0.0,
            0.0025,
            0.005,
            0.0075,
            0.01,
            0.01 * (1 + math.cos(math.pi / 4)) / 2,
            0.005,
            0.01 * (1 - math.cos(math.pi / 4)) / 2,
        ]
    )
    assert [sink.steps[step] for step in sorted(sink.steps)] == used
    assert sorted(sink.steps) == list(range(1, 9))
    assert [result.lr for result in results] == [used[3], used[7]]  # an epoch's record: its last step's


def test_resumed_run_continues_the_schedule_from_its_step_count(tmp_path):
    sets = [*TINY, "train.batch_size=16", "train.epochs=2", "train.schedule=cosine", "train.lr=0.01"]
    trainer = build_trainer(load_config(None, sets), tmp_path, data=generate_shapes(64, seed=0))
    trainer.train_epoch(None)
    trainer.save_checkpoint()
    resumed = build_trainer(load_config(None, sets), tmp_path, data=generate_shapes(64, seed=0))
    resumed.load_checkpoint(tmp_path / "checkpoint.pt")
    result = resumed.train_epoch(None)
    assert result.lr == pytest.approx(0.005)  # epoch 1 of 2 of the cosine
    assert torch.equal(torch.tensor(resumed.optimizer.param_groups[0]["lr"]), torch.tensor(result.lr))
