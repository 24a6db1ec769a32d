"""DistributedDataParallel on the CPU: 2 processes, gloo, a free TCP port on 127.0.0.1.

What must hold: a 2-rank step with B samples per rank has the loss and the gradients of a
1-process step with the 2B samples (loss level: SimCLR, Barlow Twins, LBE with fixed features;
end to end: DDP + global BatchNorm through the Trainer); feature extraction shards and gathers in
order; only rank 0 writes; a 2-rank run resumes exactly; `--gpus N` re-launches under torchrun.

Each spawn costs a few seconds of process start-up, so one spawn checks several things and the
module-scoped fixtures share it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from mimcli import distributed
from mimcli.config import ShapesSection, load_config
from mimcli.data.batch import Batch
from mimcli.data.shapes import generate_shapes
from mimcli.methods.compose import build_model
from mimcli.objectives import contrastive
from mimcli.rundir import runs
from tests.tiny import TINY_KEYS

WORLD = 2
B = 6  # samples per rank
TINY = [*TINY_KEYS, "train.batch_size=16", "train.channels_last=false"]
# (method, regulariser, train.bn_stats): per_view (the official default) is global per view under DDP
END_TO_END = [
    ("simclr", "rc", "per_view"),
    ("barlow", "lbe", "per_view"),
    ("byol", "none", "per_view"),
    ("byol", "none", "joint"),
]
CLOSE = {"rtol": 1e-4, "atol": 1e-6}


def tiny(method: str, kind: str = "none", *extra: str):
    return load_config(
        None, [*TINY, f"method.name={method!r}", f"regularizer.kind={kind!r}", "regularizer.sigma=0.0", *extra]
    )


# --------------------------------------------------------------------------------------------- harness


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, fn, port: int, out: Path, args: tuple) -> None:
    """One rank: torchrun's env vars, then fn(rank, out, *args) (which brings the process group up)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_WORLD_SIZE=str(WORLD),
    )
    torch.set_num_threads(1)
    result = fn(rank, out, *args)
    torch.save(result, out / f"rank{rank}.pt")


def spawn(fn, out: Path, *args) -> list:
    """fn's result on every rank (returned by fn, saved by the worker)."""
    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(fn, free_port(), out, args), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def rows(rank: int) -> slice:
    return slice(rank * B, (rank + 1) * B)


# --------------------------------------------------------------------------------------------- loss level


def global_inputs() -> dict[str, torch.Tensor]:
    """2B samples' worth of fixed features: z1, z2 (projections) and per-block clean/noisy views."""
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "z1": torch.randn(WORLD * B, 16, generator=generator),
        "z2": torch.randn(WORLD * B, 16, generator=generator),
    }
    regularizer = build_model(tiny("simclr", "lbe"), 10).regularizer
    for name in regularizer.block_weights:
        dim = {"layer2": 16, "layer3": 32, "layer4": 64}[name]
        for view in (1, 2):
            clean = torch.randn(WORLD * B, dim, generator=generator)
            inputs[f"clean.{name}.{view}"] = clean
            inputs[f"noisy.{name}.{view}"] = clean + 0.1 * torch.randn(clean.shape, generator=generator)
    return inputs


def losses(inputs: dict[str, torch.Tensor], take: slice) -> dict[str, tuple]:
    """SimCLR, Barlow and LBE as the methods call them (gathered), on the rows `take` of every input."""
    leaves = {k: v[take].clone().requires_grad_() for k, v in inputs.items()}
    g = distributed.gather_with_grad
    regularizer = build_model(tiny("simclr", "lbe"), 10).regularizer
    views = {
        kind: {
            name: torch.cat([leaves[f"{kind}.{name}.1"], leaves[f"{kind}.{name}.2"]])
            for name in regularizer.block_weights
        }
        for kind in ("clean", "noisy")
    }
    values = {
        "simclr": contrastive.nt_xent(g(leaves["z1"]), g(leaves["z2"]), 0.5),
        "barlow": contrastive.barlow_twins_loss(g(leaves["z1"]), g(leaves["z2"])),
        "lbe": regularizer.loss(views["clean"], views["noisy"], None)["reg"],
    }
    result = {}
    for name, value in values.items():
        for leaf in leaves.values():
            leaf.grad = None
        value.backward(retain_graph=True)
        result[name] = (
            value.detach(),
            {k: leaf.grad.clone() if leaf.grad is not None else None for k, leaf in leaves.items()},
        )
    return result


# --------------------------------------------------------------------------------------------- end to end

DATA = generate_shapes(64, seed=0)


def global_batch(n_views: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n_views, WORLD * B, 3, 32, 32, generator=generator), DATA.labels[: WORLD * B]


@contextlib.contextmanager
def float64():
    """The end-to-end comparison runs in float64: the equality is exact in the mathematics, and fp32
    rounding through BatchNorm over 12 samples alone moves the RC decoder's gradients by ~2e-3."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)


def one_step(trainer, take: slice) -> dict:
    """Forward + backward of one batch (rows `take` of the global batch) through the trainer's model."""
    views, labels = global_batch()
    batch = Batch(torch.cat(list(views[:, take])), labels[take], 2)
    trainer.train_model.train()
    terms = trainer.step_fn(batch)
    terms["loss"].backward()
    return {
        "loss": terms["loss"].detach(),
        "grads": {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None},
        "buffers": {n: b.clone() for n, b in trainer.model.named_buffers()},
        "global_bn": [
            type(m).__name__
            for m in trainer.model.modules()
            if type(m) is distributed.GlobalBatchNorm or getattr(m, "synced", False)
        ],
    }


# --------------------------------------------------------------------------------------------- features


def feature_setup(root: Path):
    """A random width-8 backbone saved as ROOT/backbone.pt, 37 random images, two data sets sharing images."""
    from mimcli.data.transfer import resolve_dataset
    from mimcli.models.resnet import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("resnet18", 8, 32, "cifar")
    torch.save(backbone.state_dict(), root / runs.BACKBONE)
    images = torch.randint(0, 256, (37, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    datasets = [
        resolve_dataset(
            f"shapes:{task}", root=root, image_size=32, download=False, shapes=ShapesSection(n_train=37, n_test=21)
        )
        for task in ("shape", "hue")
    ]
    return backbone, images, datasets


def extract_features(backbone, images) -> dict[str, torch.Tensor]:
    from mimcli.probe.extract import extract

    return extract(backbone, images, [0.5] * 3, [0.25] * 3, torch.device("cpu"), batch_size=8)


# --------------------------------------------------------------------------------------------- one spawn, many checks


def _checks(rank: int, out: Path) -> dict:
    """Everything that needs a process group but no CLI."""
    from mimcli.probe.cache import FeatureCache
    from mimcli.train.loop import build_trainer

    result = {}
    with distributed.process_group("cpu"):
        assert distributed.world_size() == WORLD
        assert distributed.rank() == rank
        result["losses"] = losses(global_inputs(), rows(rank))
        with float64():
            for method, kind, bn in END_TO_END:
                trainer = build_trainer(tiny(method, kind, f"train.bn_stats={bn!r}"), out / f"{method}-{bn}", data=DATA)
                result[f"{method}-{kind}-{bn}"] = one_step(trainer, rows(rank))
        supervised = build_trainer(tiny("supervised"), out / "supervised", data=DATA).model
        result["supervised_bn"] = [
            type(m).__name__ for m in supervised.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        ]
        backbone, images, datasets = feature_setup(out)
        result["extract"] = extract_features(backbone, images)
        writes, write = [], FeatureCache._write

        def recording_write(self, path, features):
            writes.append(path.name)
            write(self, path, features)

        FeatureCache._write = recording_write
        cache = FeatureCache(out, device="cpu", backbone_loader=lambda: backbone)
        result["cached"] = [cache.get(dataset)[0].layers["layer4"] for dataset in datasets]
        result["writes"] = writes
    return result


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    return spawn(_checks, tmp_path_factory.mktemp("checks"))


@pytest.mark.parametrize("loss", ["simclr", "barlow", "lbe"])
def test_gathered_loss_and_gradient_equal_one_process_with_the_global_batch(checks, loss):
    """Each rank's loss is the global one; its slice's gradient, averaged over ranks as DDP does
    (divided by the world size), is the 1-process gradient of those rows."""
    expected_value, expected_grads = losses(global_inputs(), slice(None))[loss]
    for rank, result in enumerate(checks):
        value, grads = result["losses"][loss]
        torch.testing.assert_close(value, expected_value, **CLOSE)
        for key, grad in grads.items():
            if expected_grads[key] is None:
                assert grad is None, key
            else:
                torch.testing.assert_close(grad / WORLD, expected_grads[key][rows(rank)], **CLOSE, msg=key)


@pytest.mark.parametrize("method, kind, bn", END_TO_END)
def test_ddp_step_equals_one_process_step_on_the_global_batch(checks, tmp_path, method, kind, bn):
    """DDP + global BatchNorm through the Trainer: the mean of the ranks' losses, the (averaged)
    gradients of every parameter and the BatchNorm running statistics match one process with 2B."""
    from mimcli.train.loop import build_trainer

    with float64():
        reference = one_step(
            build_trainer(tiny(method, kind, f"train.bn_stats={bn!r}"), tmp_path, data=DATA), slice(None)
        )
    ranks = [result[f"{method}-{kind}-{bn}"] for result in checks]
    assert ranks[0]["global_bn"], "BatchNorm converted only under DDP"
    assert not reference["global_bn"], "BatchNorm converted only under DDP"
    torch.testing.assert_close(sum(r["loss"] for r in ranks) / WORLD, reference["loss"], rtol=1e-12, atol=0)
    assert reference["grads"].keys() == ranks[0]["grads"].keys()
    # biases in front of a BatchNorm have a gradient of exactly 0 up to rounding: an absolute floor
    scale = max(grad.abs().max().item() for grad in reference["grads"].values())
    for name, grad in reference["grads"].items():
        torch.testing.assert_close(ranks[0]["grads"][name], grad, rtol=1e-8, atol=1e-10 * scale, msg=name)
        assert torch.equal(ranks[0]["grads"][name], ranks[1]["grads"][name]), name
    for name, buffer in reference["buffers"].items():
        torch.testing.assert_close(ranks[0]["buffers"][name], buffer, rtol=1e-12, atol=1e-14, msg=name)


def test_supervised_keeps_per_rank_batchnorm(checks):
    assert checks[0]["supervised_bn"]
    assert "GlobalBatchNorm" not in checks[0]["supervised_bn"]


def test_feature_extraction_shards_and_gathers_in_order(checks, tmp_path):
    backbone, images, _ = feature_setup(tmp_path)
    expected = extract_features(backbone, images)
    for result in checks:
        for name, values in expected.items():
            torch.testing.assert_close(result["extract"][name], values, **CLOSE)
    # the cache: rank 0 alone writes (train and test); the second data set shares the images: a hit
    assert len(checks[0]["writes"]) == 2
    assert checks[1]["writes"] == []
    for result in checks:
        assert len(result["cached"][0]) == 37
        torch.testing.assert_close(result["cached"][1], result["cached"][0])
        torch.testing.assert_close(result["cached"][0], checks[0]["cached"][0])


# --------------------------------------------------------------------------------------------- the CLI

CLI_TINY = [arg for item in TINY for arg in ("--set", item)]


def _commands(rank: int, out: Path, commands: list[list[str]]) -> dict:
    """Run `mim` command lines in turn, as torchrun's workers would (each brings its own process group up),
    recording which files each rank writes and what each run directory holds after each command."""
    from mimcli.cli import main

    writes = []
    write_bytes, torch_save = runs.atomic_write_bytes, runs.atomic_torch_save

    def recording_write_bytes(path, data):
        writes.append(str(path))
        write_bytes(path, data)

    def recording_torch_save(obj, path):
        writes.append(str(path))
        torch_save(obj, path)

    runs.atomic_write_bytes, runs.atomic_torch_save = recording_write_bytes, recording_torch_save
    codes, listings = [], []
    for argv in commands:
        sys.argv = ["mim", *argv]
        try:
            main()
            codes.append(0)
        except SystemExit as exit_:
            codes.append(exit_.code)
        run_dir = Path(argv[argv.index("--out") + 1])
        listings.append(sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")))
        assert not distributed.is_distributed(), "the command must destroy its process group"
    return {"codes": codes, "listings": listings, "writes": writes}


@pytest.mark.slow
def test_two_rank_pretrain_writes_on_rank_0_only_and_resumes_exactly(tmp_path):
    halves, straight = tmp_path / "halves", tmp_path / "straight"
    base = ["pretrain", "--preset", "simclr", *CLI_TINY, "--no-progress"]
    commands = [
        [*base, "--out", str(halves)],
        [*base, "--out", str(halves), "--resume", "--set", "train.epochs=2"],
        [*base, "--out", str(straight), "--set", "train.epochs=2"],
    ]
    ranks = spawn(_commands, tmp_path / "spawn", commands)
    assert [r["codes"] for r in ranks] == [[0, 0, 0]] * WORLD
    assert ranks[1]["writes"] == []
    assert ranks[0]["writes"]
    assert all(str(halves) in w or str(straight) in w for w in ranks[0]["writes"]), ranks[0]["writes"]
    after_one = ranks[0]["listings"][0]
    written = ["backbone.pt", "checkpoint.pt", "config.toml", "metrics.jsonl", "requirements.txt", "run.json"]
    assert after_one == sorted(written)
    assert json.loads((halves / "run.json").read_text())["epochs_done"] == 2
    a = torch.load(halves / runs.CHECKPOINT, weights_only=True)
    b = torch.load(straight / runs.CHECKPOINT, weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for name, tensor in b["model"].items():
        assert torch.equal(a["model"][name], tensor), name
    metrics_a, metrics_b = runs.read_metrics(halves), runs.read_metrics(straight)
    assert len(metrics_a) == 2
    assert [m["loss"] for m in metrics_a] == [m["loss"] for m in metrics_b]
    # 64 images, 16 per rank: 2 steps of 32 images per epoch
    assert metrics_a[0]["images_per_s"] * metrics_a[0]["seconds"] == pytest.approx(64)


def test_gpus_relaunches_the_same_command_under_torchrun(monkeypatch, cli):
    from mimcli import signals

    calls = []
    monkeypatch.setattr(signals, "run_forwarding_signals", lambda command: calls.append(command) or 3)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["--preset", "simclr", "--set", "train.epochs=1", "--no-progress"]
    code, _, err = cli("pretrain", "--gpus", "2", *args)
    assert code == 3, err  # torchrun's exit status
    assert calls == [
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "mimcli",
            "pretrain",
            *args,
        ]
    ]
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = cli("pretrain", *args, "--gpus=2")
    assert code == 2
    assert "leave it out" in err
    assert len(calls) == 1


@pytest.mark.slow
def test_gpus_2_trains_and_probes_through_torchrun(tmp_path):
    """The real launcher: `mim pretrain --gpus 2` on the CPU (gloo), post-training probe included:
    every rank extracts a share of the probe features, rank 0 caches them and probes on the cache."""
    import subprocess

    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "mimcli",
        "pretrain",
        "--preset",
        "simclr",
        "--gpus",
        "2",
        *CLI_TINY,
        "--set",
        "probe.datasets=['shapes:shape']",
        "--set",
        "probe.protocol='knn'",
        "--no-progress",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert len(list((out / "features").glob("*.h5"))) == 2
    assert done.stdout.count("extracting") == 2  # train + test once; rank 0's probe read the cache
    assert [r["status"] for r in json.loads((out / "probe.json").read_text())["results"]] == ["ok"]
