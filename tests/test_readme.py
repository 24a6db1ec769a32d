"""Every `mim` command in the README's code blocks runs as written, at tiny sizes, in the order given.

The README is what a newcomer types first; an example that breaks silently is the first thing they meet.
Each command keeps its own options; the test only adds `--set` keys that shrink the work (narrow network,
one epoch, generated `shapes` data where the command names no data set), shortens swept value lists and
probes the generated data instead of the downloaded sets (this machine is offline); a SLURM submission
runs through the local launcher, and a checkpoint file the README names is the earlier run's weights.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from mimcli.config.datasets import dataset_records
from mimcli.data.transfer import describe_downloads, pending_downloads

ROOT = Path(__file__).resolve().parents[1]
TINY_SET = [
    "model.width=8",
    "train.precision=fp32",
    "train.batch_size=32",
    "train.epochs=1",
    "train.diagnostics_every=0",
    "train.threads=1",
]
SHAPES_SET = [
    "data.dataset=shapes",
    "data.shapes.n_train=64",
    "data.shapes.n_test=32",
    'probe.datasets=["shapes:shape"]',
]
SHAPES_PROBES = "shapes:shape,shapes:hue"
SLURM_ONLY = {"--partition", "--account", "--cpus", "--mem", "--sbatch"}  # options the local launcher refuses


def readme_commands() -> list[list[str]]:
    """The `mim ...` commands of the README's bash blocks, in order, as argument lists (comments dropped,
    `\\` continuations joined, `&&` chains split)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            chain: list[list[str]] = [[]]
            for word in words:
                if word == "&&":
                    chain.append([])
                else:
                    chain[-1].append(word)
            commands += [command[1:] for command in chain if command[:1] == ["mim"]]
    return commands


def shrink(args: list[str]) -> list[str]:
    """The same command at tiny sizes: `--set` keys first (the command's own win), short value lists, and
    the generated data probed instead of downloaded sets."""
    out = []
    words = iter(args)
    for word in words:  # a SLURM submission runs through the same machinery on this machine (--launcher local)
        if word in SLURM_ONLY:
            next(words, None)
        else:
            out.append("local" if out[-1:] == ["--launcher"] and word == "slurm" else word)
    epochs_sweep = args[:2] == ["sweep", "epochs"]
    for i, word in enumerate(out[:-1]):
        if word == "--values":  # one point per preset; an epochs sweep trains once to its last value
            out[i + 1] = "1,2" if epochs_sweep else out[i + 1].split(",")[0]
        if word == "--datasets":
            out[i + 1] = SHAPES_PROBES
    if out[0] not in ("pretrain", "supervised", "sweep") or out[:2] == ["sweep", "status"]:
        return out
    own = {args[i + 1].split("=")[0] for i, word in enumerate(args[:-1]) if word in ("--set", "-s")}
    keys = [key for key in TINY_SET if not (epochs_sweep and key.startswith("train.epochs="))]
    keys += [] if "data.dataset" in own else SHAPES_SET
    tiny = [arg for key in keys for arg in ("--set", key)]
    position = 2 if out[0] == "sweep" else 1
    return [*out[:position], *tiny, *out[position:], "--no-progress"]


def write_image_folder(root: Path, per_class: int) -> None:
    """Two classes of 8 px PNGs in train/ and test/ (the layout the README's image-folder example names)."""
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", per_class), ("test", 8)):
        for label, name in enumerate(("dark", "light")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = torch.randint(0, 128, (8, 8, 3), generator=generator, dtype=torch.uint8) + 127 * label
                Image.fromarray(pixels.numpy()).save(folder / f"{i:03d}.png")


def test_the_readme_has_the_commands_this_test_runs():
    verbs = [command[0] for command in readme_commands()]
    assert verbs[0] == "sweep"  # the main job comes first, and shows what training adds to random init
    assert "--random-init" in readme_commands()[0]
    assert {"pretrain", "probe", "sweep", "report"} <= set(verbs)


@pytest.mark.slow
def test_every_readme_command_runs_as_written(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image_folder(tmp_path / "path" / "to" / "cifar10-jpeg", per_class=32)
    for args in readme_commands():
        for checkpoint in [Path(word) for word in args if word.endswith(".pt")]:  # "another code base's" weights
            if not checkpoint.exists():
                shutil.copy(tmp_path / "runs" / "simclr-rc" / "backbone.pt", checkpoint)
        code, out, err = cli(*shrink(args))
        assert code == 0, f"`mim {shlex.join(args)}` exited {code}: {err.strip()[-500:]}"
        if "--random-init" in args:  # the main job's closing table: the untrained row and trained - random init
            assert "random init" in out
            assert "SimCLR - random init (n 1 vs 1" in " ".join(out.split())


def test_an_image_folder_run_probes_its_own_test_split_and_nothing_else(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image_folder(tmp_path / "photos", per_class=16)
    keys = [*TINY_SET, "data.dataset=imagefolder", "data.root=photos", "data.image_size=16"]
    code, out, err = cli("pretrain", "--preset", "simclr", *(a for k in keys for a in ("--set", k)), "--no-progress")
    assert code == 0, err
    assert "download" not in out
    probed = json.loads((tmp_path / "runs" / "simclr" / "probe.json").read_text())
    assert [record["dataset"] for record in probed["results"]] == ["imagefolder:photos"]


def test_an_image_folder_without_a_test_split_probes_nothing(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image_folder(tmp_path / "photos", per_class=16)
    shutil.rmtree(tmp_path / "photos" / "test")
    keys = [*TINY_SET, "data.dataset=imagefolder", "data.root=photos", "data.image_size=16"]
    code, _, err = cli("pretrain", "--preset", "simclr", *(a for k in keys for a in ("--set", k)), "--no-progress")
    assert code == 0, err
    assert not (tmp_path / "runs" / "simclr" / "probe.json").exists()


def test_probe_sets_that_need_downloads_are_announced_with_their_sizes(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()  # already there: not announced
    pending = pending_downloads(["cifar10", "dtd", "mnist", "shapes:shape", "imagefolder:x"], tmp_path)
    assert pending == [("dtd", 625), ("mnist", 12)]
    line = describe_downloads(pending, "data")
    assert line == "probing will first download dtd (about 625 MB), mnist (about 12 MB) into data: about 0.6 GB in all"


@pytest.mark.parametrize("name", sorted(n for n, record in dataset_records().items() if record.loader is not None))
def test_every_downloadable_probe_set_has_a_size(name):
    download = dataset_records()[name].download
    assert download is not None
    folder, megabytes = download
    assert folder
    assert megabytes > 0
