"""Probes: the linear protocol against torch's own optimiser, kNN and ridge against brute force, run_probes."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from torch import nn

from mimcli.data.transfer import per_class_split, resolve_dataset
from mimcli.errors import DataNotFoundError, UsageError
from mimcli.probe import (
    LinearParams,
    Ridge,
    fit_linear,
    knn_predict,
    knn_probe,
    linear_probe,
    regression_probe,
    run_probes,
)
from mimcli.probe.stats import standardize
from mimcli.report.probe_table import print_probe_table
from mimcli.rundir import runs

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread (conftest.py)


def blobs(n: int, dim: int, classes: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 4
    labels = torch.randint(0, classes, (n,), generator=generator)
    return centres[labels] + spread * torch.randn(n, dim, generator=generator), labels


# --------------------------------------------------------------------------------------------- linear


def _torch_probe(x, y, test_x, test_y, seed, epochs, lr, batch_size, milestones, drop_last, init_std=None):
    """eval_lr.py's probe written with torch: nn.Linear (initialised as fit_linear draws it), SGD with
    momentum 0.9, MultiStepLR x0.1, a shuffled loader; test accuracy after every epoch. milestones None and
    init_std: eval_lr_imagenet.py's fc.weight.normal_(0, init_std), bias zero_(), CosineAnnealingLR(epochs)."""
    generator = torch.Generator().manual_seed(seed)
    dim, classes = x.shape[1], int(y.max()) + 1
    model = nn.Linear(dim, classes)
    with torch.no_grad():
        if init_std is None:
            initial = (torch.rand(classes, dim + 1, generator=generator) * 2 - 1) / math.sqrt(dim)
            model.weight.copy_(initial[:, :dim])
            model.bias.copy_(initial[:, dim])
        else:
            model.weight.copy_(torch.randn(classes, dim, generator=generator) * init_std)
            model.bias.zero_()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
        if milestones is None
        else torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    )
    reference = []
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for batch in order.split(batch_size):
            if drop_last and len(batch) < batch_size:
                continue
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
        schedule.step()
        with torch.no_grad():
            reference.append((model(test_x).argmax(1) == test_y).float().mean().item() * 100)
    return reference


def test_fit_linear_is_nn_linear_with_sgd_and_multistep_lr():
    x, y = blobs(300, 8, 3, spread=4.0, seed=0)  # overlapping classes: accuracy moves from epoch to epoch
    test_x, test_y = blobs(200, 8, 3, spread=4.0, seed=1)
    params = LinearParams(epochs=10, lr=0.05, batch_size=64, drop_last=False)  # the option: partial batch kept
    (ours,) = fit_linear(x, y, torch.arange(300).unsqueeze(0), [7], 3, params, [(test_x, test_y)])
    reference = _torch_probe(
        x, y, test_x, test_y, 7, epochs=10, lr=0.05, batch_size=64, milestones=[6, 8], drop_last=False
    )
    assert params.milestones == [6, 8]
    assert len(set(reference)) > 2
    assert ours[0].tolist() == pytest.approx(reference, abs=0.51)  # at most one test item may flip


def test_fit_linear_at_the_default_settings_is_the_official_probe():
    """LinearParams() against eval_lr.py (L104-L135): SGD lr 0.01 momentum 0.9, MultiStepLR [60, 80] x0.1,
    100 epochs, batch 128 with drop_last=True (300 items: two steps an epoch, 44 items left out of each)."""
    x, y = blobs(300, 8, 3, spread=4.0, seed=0)
    test_x, test_y = blobs(200, 8, 3, spread=4.0, seed=1)
    (ours,) = fit_linear(x, y, torch.arange(300).unsqueeze(0), [7], 3, LinearParams(), [(test_x, test_y)])
    reference = _torch_probe(
        x, y, test_x, test_y, 7, epochs=100, lr=0.01, batch_size=128, milestones=[60, 80], drop_last=True
    )
    assert len(set(reference)) > 2
    assert ours[0].tolist() == pytest.approx(reference, abs=0.51)  # at most one test item may flip


def test_fit_linear_with_the_imagenet_recipe_is_eval_lr_imagenet():
    """imagenet_params (eval_lr_imagenet.py L140-L144): N(0, 0.01) weights, zero bias, SGD 0.3 momentum 0.9,
    CosineAnnealingLR over the epochs, batch 128 with drop_last."""
    from mimcli.config import ProbeSection
    from mimcli.probe.imagenet import imagenet_params

    params = imagenet_params(ProbeSection(epochs=12))
    assert (params.lr, params.schedule, params.init_std, params.batch_size, params.drop_last) == (
        0.3,
        "cosine",
        0.01,
        128,
        True,
    )
    x, y = blobs(300, 8, 3, spread=4.0, seed=0)
    test_x, test_y = blobs(200, 8, 3, spread=4.0, seed=1)
    (ours,) = fit_linear(x, y, torch.arange(300).unsqueeze(0), [7], 3, params, [(test_x, test_y)])
    reference = _torch_probe(
        x, y, test_x, test_y, 7, epochs=12, lr=0.3, batch_size=128, milestones=None, drop_last=True, init_std=0.01
    )
    assert len(set(reference)) > 2
    assert ours[0].tolist() == pytest.approx(reference, abs=0.51)


def test_run_probes_uses_the_imagenet_recipe_for_a_224_px_run(tmp_path, quiet, make_run):
    """A run pretrained at 224 px is probed as eval_lr_imagenet.py: augmented train epochs (seeded, so a
    second probe repeats the numbers), Resize(256) + CenterCrop(224) test features under their own name."""
    run_dir = make_run(
        tmp_path,
        overrides=[
            "data.image_size=224",
            "data.shapes.n_train=24",
            "data.shapes.n_test=12",
            "probe.epochs=3",
            "probe.batch_size=8",
        ],
    )
    kwargs = {"datasets": ["shapes:shape"], "layers": [4], "seeds": [0], "device": "cpu", "console": quiet()}
    (record,) = run_probes(run_dir, **kwargs)["results"]
    assert record["status"] == "ok", record["message"]
    params = record["params"]
    assert (params["lr"], params["schedule"], params["init"], params["milestones"]) == (
        0.3,
        "cosine",
        "N(0, 0.01), bias 0",
        [],
    )
    assert params["recipe"].startswith("imagenet")
    assert (record["n_train"], record["n_test"]) == (24, 12)
    assert record["cache_key"].endswith("-s256c224/224px/layer4")
    assert all("-s256c224-" in p.name for p in (run_dir / "features").glob("*.h5"))
    assert len(list((run_dir / "features").glob("*.h5"))) == 2
    (again,) = run_probes(run_dir, **kwargs)["results"]
    assert again["metrics"] == record["metrics"]


def test_a_regression_set_of_a_224_px_run_keeps_the_paper_recipe(tmp_path, make_run, quiet):
    """The ImageNet recipe is a classification probe: shapes:position (a regression target) of a 224 px run
    gets the ridge regression on cached features, and its record says which recipe, instead of an error."""
    overrides = ["data.image_size=224", "data.shapes.n_train=24", "data.shapes.n_test=12"]
    run_dir = make_run(tmp_path, overrides=overrides)
    kwargs = {"datasets": ["shapes:position"], "layers": [4], "seeds": [0], "device": "cpu", "console": quiet()}
    (record,) = run_probes(run_dir, **kwargs)["results"]
    assert (record["status"], record["protocol"]) == ("ok", "regression")
    assert record["params"]["recipe"].startswith("paper")
    assert "-s256c224" not in record["cache_key"]


def test_linear_probe_separable_and_random_labels():
    x, y = blobs(600, 16, 4, spread=0.5, seed=0)
    test_x, test_y = blobs(400, 16, 4, spread=0.5, seed=1)
    metrics = linear_probe(x, y, test_x, test_y, [0, 1], LinearParams())
    assert metrics["acc_best_test"]["values"] == [100.0, 100.0]
    assert min(metrics["acc_val_selected"]["values"]) >= 99.5
    assert metrics["acc_best_test"]["std"] == 0.0

    noise = torch.randn(600, 16, generator=torch.Generator().manual_seed(2))
    shuffled = torch.randint(0, 4, (600,), generator=torch.Generator().manual_seed(3))
    test_noise = torch.randn(2000, 16, generator=torch.Generator().manual_seed(4))
    test_labels = torch.randint(0, 4, (2000,), generator=torch.Generator().manual_seed(5))
    chance = linear_probe(noise, shuffled, test_noise, test_labels, [0, 1], LinearParams())
    assert 20 < chance["acc_val_selected"]["mean"] < 30  # chance: 25 %
    assert 20 < chance["acc_best_test"]["mean"] < 31  # selected on the test set: a little optimistic
    assert chance["acc_best_test"]["mean"] >= chance["acc_val_selected"]["mean"]


# --------------------------------------------------------------------------------------------- kNN


def brute_force_knn(train_x, train_y, test_x, k, temperature, classes):
    predictions = []
    for query in test_x.tolist():
        scored = []
        for item, label in zip(train_x.tolist(), train_y.tolist()):
            cosine = sum(a * b for a, b in zip(query, item)) / (math.hypot(*query) * math.hypot(*item))
            scored.append((cosine, label))
        votes = [0.0] * classes
        for cosine, label in sorted(scored, reverse=True)[:k]:
            votes[label] += math.exp(cosine / temperature)
        predictions.append(max(range(classes), key=votes.__getitem__))
    return predictions


def test_knn_equals_brute_force():
    train_x, train_y = blobs(40, 5, 3, spread=6.0, seed=0)
    test_x, test_y = blobs(25, 5, 3, spread=6.0, seed=1)
    for k in (1, 7, 200):
        expected = brute_force_knn(train_x, train_y, test_x, k, 0.1, 3)
        assert knn_predict(train_x, train_y, test_x, 3, k=k, chunk=4).tolist() == expected
    expected_acc = (
        sum(p == t for p, t in zip(brute_force_knn(train_x, train_y, test_x, 200, 0.1, 3), test_y.tolist())) / 25 * 100
    )
    assert knn_probe(train_x, train_y, test_x, test_y)["acc"]["values"] == [pytest.approx(expected_acc)]


# --------------------------------------------------------------------------------------------- ridge


def test_ridge_matches_the_normal_equations():
    x, _ = blobs(50, 6, 2, spread=1.0, seed=0)
    y = torch.randn(50, 2, generator=torch.Generator().manual_seed(1))
    ridge = Ridge(x, y)
    xd, yd = x.double(), y.double()
    xc, yc = xd - xd.mean(0), yd - yd.mean(0)
    alpha = 0.1 * ridge.scale
    coef = torch.linalg.solve(xc.T @ xc + alpha * torch.eye(6, dtype=torch.float64), xc.T @ yc)
    expected = (xd - xd.mean(0)) @ coef + yd.mean(0)
    assert torch.allclose(ridge.predict(x, 0.1), expected, atol=1e-9)


def test_regression_probe_on_linear_and_noise_targets():
    x, _ = blobs(800, 12, 3, spread=2.0, seed=0)
    test_x, _ = blobs(400, 12, 3, spread=2.0, seed=1)
    mixing = torch.randn(12, 2, generator=torch.Generator().manual_seed(2))
    target, test_target = x @ mixing + 3, test_x @ mixing + 3
    exact = regression_probe(x, target, test_x, test_target, [0, 1])
    assert exact["r2"]["mean"] > 0.999
    assert exact["mse"]["mean"] < 1e-3 * test_target.var().item()

    noise = torch.randn(800, 2, generator=torch.Generator().manual_seed(3))
    test_noise = torch.randn(400, 2, generator=torch.Generator().manual_seed(4))
    nothing = regression_probe(x, noise, test_x, test_noise, [0])
    assert -0.05 < nothing["r2"]["mean"] < 0.02
    assert nothing["mse"]["mean"] == pytest.approx(1.0, abs=0.15)


# --------------------------------------------------------------------------------------------- run_probes


@pytest.fixture
def run(tmp_path, make_image_folder, make_run):
    run_dir = make_run(tmp_path, overrides=["probe.epochs=20"])
    folder = make_image_folder(tmp_path / "images", per_class=6)
    (tmp_path / "empty").mkdir()
    return run_dir, folder, str(tmp_path / "empty")


def never():
    raise AssertionError("the backbone must not be loaded: the features are cached")


def test_run_probes_records_missing_merges_and_reuses_the_cache(run, quiet):
    run_dir, folder, empty = run
    images = f"imagefolder:{folder}"
    console = quiet()
    result = run_probes(
        run_dir,
        datasets=["cifar10", images, "shapes:position"],
        protocol="linear",
        layers=[4],
        seeds=[0, 1],
        data_root=empty,
        device="cpu",
        console=console,
    )
    written = json.loads((run_dir / "probe.json").read_text())
    assert written == result
    assert set(written) == {"format", "run", "checkpoint", "results"}
    assert written["format"] == 1
    assert written["run"] == "run"
    assert written["checkpoint"]["path"] == "backbone.pt"
    assert len(written["checkpoint"]["sha256"]) == 64
    cifar, folder_linear, position = written["results"]
    assert cifar["status"] == "missing"
    assert cifar["metrics"] == {}
    assert "cifar10" in cifar["message"]
    assert empty in cifar["message"]
    assert folder_linear["status"] == "ok"
    assert folder_linear["message"] is None
    assert set(folder_linear["metrics"]) == {"acc_best_test", "acc_val_selected"}
    assert len(folder_linear["metrics"]["acc_best_test"]["values"]) == 2
    assert folder_linear["params"]["epochs"] == 20
    assert folder_linear["params"]["milestones"] == [12, 16]
    assert folder_linear["params"]["seeds"] == [0, 1]
    assert folder_linear["params"]["val_fraction"] == 0.1
    assert (folder_linear["n_train"], folder_linear["n_test"], folder_linear["layers"]) == (12, 12, [4])
    assert folder_linear["cache_key"].endswith("/32px/layer4")
    assert position["task"] == "regression"
    assert position["protocol"] == "regression"  # whatever protocol said
    assert set(position["metrics"]) == {"r2", "mse"}
    assert (position["n_train"], position["n_test"]) == (200, 100)
    print_probe_table(result, console)  # the rich table lives in report/, printed by the callers of run_probes
    table = console.file.getvalue()
    assert "missing" in table
    assert "acc_val_selected" in table
    assert "r2" in table

    # kNN and a different layer set on the same cached features: the backbone is never loaded.
    knn_console = quiet()
    run_probes(
        run_dir,
        datasets=[images],
        protocol="knn",
        layers=[2, 3, 4],
        data_root=empty,
        device="cpu",
        console=knn_console,
        backbone_loader=never,
    )
    assert "kNN k=200 adjusted to 12, the train split's size" in knn_console.file.getvalue()
    again = run_probes(
        run_dir,
        datasets=[images],
        protocol="linear",
        layers=[4],
        seeds=[5],
        data_root=empty,
        device="cpu",
        console=quiet(),
        backbone_loader=never,
    )
    records = {(r["dataset"], r["protocol"], tuple(r["layers"])): r for r in again["results"]}
    assert len(again["results"]) == 4
    assert records[(images, "knn", (2, 3, 4))]["metrics"]["acc"]["mean"] >= 0
    assert records[(images, "knn", (2, 3, 4))]["params"]["k"] == 12  # the k used; k_requested: 200
    assert records[(images, "knn", (2, 3, 4))]["params"]["k_requested"] == 200
    assert records[(images, "linear", (4,))]["params"]["seeds"] == [5]  # replaced, not appended
    assert records[("cifar10", "linear", (4,))]["status"] == "missing"


def test_a_partial_probe_exits_non_zero_and_keeps_what_it_could_probe(run, cli):
    run_dir, folder, empty = run
    code, _, err = cli(
        "probe", str(run_dir), "--datasets", f"cifar10,imagefolder:{folder}", "--data-root", empty, "--device", "cpu"
    )
    assert code == 1
    assert "1 of 2 data sets could not be probed" in err
    assert "cifar10" in err
    statuses = {r["dataset"]: r["status"] for r in json.loads((run_dir / "probe.json").read_text())["results"]}
    assert statuses == {"cifar10": "missing", f"imagefolder:{folder}": "ok"}
    code, _, err = cli("probe", str(run_dir), "--datasets", f"imagefolder:{folder}", "--device", "cpu")
    assert code == 0
    assert err == ""


def test_probe_features_choice_reuses_the_cache_and_keeps_the_raw_record_beside_it(run, cli, tmp_path, quiet):
    run_dir, folder, _ = run
    images = f"imagefolder:{folder}"
    code, _, err = cli("probe", str(run_dir), "--datasets", images, "--device", "cpu", "--features", "raw")
    assert code == 0, err
    cached = {p: p.read_bytes() for p in (run_dir / "features").rglob("*") if p.is_file()}
    assert cached
    # a preset that standardises: the same run with probe.features = "standardized" in its config
    twin = tmp_path / "twin"
    shutil.copytree(run_dir, twin)
    runs.save_config(twin, runs.with_values(runs.load_run_config(twin), {"probe.features": "standardized"}))
    code, _, err = cli("probe", str(run_dir), "--datasets", images, "--device", "cpu", "--features", "standardized")
    assert code == 0, err
    # nothing was extracted again: the cache is byte for byte what the raw probe wrote
    assert {p: p.read_bytes() for p in (run_dir / "features").rglob("*") if p.is_file()} == cached
    records = json.loads((run_dir / "probe.json").read_text())["results"]
    by_features = {r["params"]["features"]: r for r in records}
    assert sorted(by_features) == ["raw", "standardized"]
    assert len(records) == 2
    preset = run_probes(twin, datasets=[images], device="cpu", console=quiet(), backbone_loader=never)
    assert by_features["standardized"]["metrics"] == preset["results"][-1]["metrics"]
    code, _, err = cli("probe", str(run_dir), "--features", "whitened")
    assert code == 2
    assert err.strip() == "error: --features 'whitened': choose standardized or raw"


def test_run_probes_on_an_epoch_checkpoint_and_a_new_checkpoint(run, tmp_path, quiet, make_run):
    run_dir, folder, empty = run
    images = f"imagefolder:{folder}"
    (run_dir / "backbones").mkdir()
    shutil.copy(run_dir / "backbone.pt", run_dir / "backbones" / "epoch-1.pt")
    epoch = run_probes(
        run_dir,
        datasets=[images],
        protocol="knn",
        data_root=empty,
        device="cpu",
        console=quiet(),
        weights="backbones/epoch-1.pt",
        out_name="probe-epoch-1.json",
    )
    assert epoch["checkpoint"]["path"] == "backbones/epoch-1.pt"
    assert (run_dir / "probe-epoch-1.json").is_file()
    assert not (run_dir / "probe.json").exists()

    first = run_probes(
        run_dir,
        datasets=[images],
        protocol="knn",
        data_root=empty,
        device="cpu",
        console=quiet(),
        backbone_loader=never,
    )
    assert first["results"][0]["cache_key"] == epoch["results"][0]["cache_key"]  # same bytes, same features
    make_run(tmp_path, seed=5, overrides=["probe.epochs=20"])  # retrained: other weights, same run dir
    console = quiet()
    second = run_probes(run_dir, datasets=[images], protocol="linear", data_root=empty, device="cpu", console=console)
    assert second["checkpoint"]["sha256"] != first["checkpoint"]["sha256"]
    assert [r["protocol"] for r in second["results"]] == ["linear"]  # the stale kNN record is dropped
    assert "another checkpoint" in console.file.getvalue()


def test_run_probes_rejects_bad_requests_before_any_work(run, quiet):
    run_dir, folder, empty = run
    with pytest.raises(UsageError, match="unknown probe dataset 'cifar11'"):
        run_probes(run_dir, datasets=["cifar10", "cifar11"], data_root=empty, device="cpu", console=quiet())
    with pytest.raises(UsageError, match="classification"):
        run_probes(
            run_dir,
            datasets=[f"imagefolder:{folder}"],
            protocol="regression",
            data_root=empty,
            device="cpu",
            console=quiet(),
        )
    with pytest.raises(UsageError, match="layers"):
        run_probes(run_dir, datasets=["cifar10"], layers=[1], data_root=empty, device="cpu", console=quiet())
    with pytest.raises(UsageError, match="nothing to probe"):
        run_probes(run_dir, data_root=empty, device="cpu", console=quiet())
    assert not (run_dir / "probe.json").exists()
    assert not (run_dir / "features").exists()


# --------------------------------------------------------------------------------------------- data sets


def _save_image(path, colour, size=(20, 14)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_per_class_split_is_seeded_and_stratified():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 3)
    train, test = per_class_split(labels)
    assert torch.equal(torch.cat([train, test]).sort().values, torch.arange(18))
    assert [int((labels[train] == c).sum()) for c in range(3)] == [8, 4, 2]  # int(0.8 n): 8, 4, 2
    again, _ = per_class_split(labels)
    other, _ = per_class_split(labels, seed=7)
    assert torch.equal(train, again)
    assert not torch.equal(train, other)


def _official_vgg_flower_split(labels, train):
    """vgg_flower.py load_images (L27-L54) of the official code, transcribed: file paths from the
    labels' order, a defaultdict by label, one RandomState(42) shuffling each class's indexer in turn."""
    import os
    from collections import defaultdict

    import numpy as np

    rs = np.random.RandomState(42)
    all_filepaths = defaultdict(list)
    for i, label in enumerate(labels):
        all_filepaths[label].append(os.path.join("root", "jpg", f"image_{i + 1:05d}.jpg"))
    split_filepaths = []
    for _label, paths in all_filepaths.items():
        num = len(paths)
        paths = np.array(paths)
        indexer = np.arange(num)
        rs.shuffle(indexer)
        paths = paths[indexer].tolist()
        paths = paths[: int(0.8 * num)] if train else paths[int(0.8 * num) :]
        split_filepaths.extend(paths)
    return split_filepaths


def test_flowers_and_gtsrb_split_equal_the_official_procedure():
    """The split indices against the official procedure: labels in file order with classes first met out
    of order (as imagelabels.mat), sizes whose 0.8 n rounds differently from int (n = 3, 8, 13, 2, 7)."""
    generator = torch.Generator().manual_seed(0)
    sizes = {77: 3, 5: 8, 40: 13, 1: 2, 12: 7}
    labels = [label for label, n in sizes.items() for _ in range(n)]
    labels = [labels[i] for i in torch.randperm(len(labels), generator=generator).tolist()]
    train, test = per_class_split(labels)
    names = [f"image_{i + 1:05d}.jpg" for i in range(len(labels))]
    assert sorted(names[i] for i in train.tolist()) == sorted(
        path.rsplit("/", 1)[-1] for path in _official_vgg_flower_split(labels, train=True)
    )
    assert sorted(names[i] for i in test.tolist()) == sorted(
        path.rsplit("/", 1)[-1] for path in _official_vgg_flower_split(labels, train=False)
    )
    assert len(train) == sum(int(0.8 * n) for n in sizes.values()) == 2 + 6 + 10 + 1 + 5
    # GTSRB: traffic_sign.py L29-L50 is the same procedure with classes 0..42 in ascending order
    gtsrb = [c for c in range(43) for _ in range(5 + c % 4)]
    train, _ = per_class_split(gtsrb)
    assert [gtsrb[i] for i in train.tolist()].count(3) == int(0.8 * 8)
    expected = _official_vgg_flower_split(gtsrb, train=True)
    assert sorted(int(p[-9:-4]) - 1 for p in expected) == train.tolist()


def _official_traffic_sign_split(root, train, listing):
    """traffic_sign.py load_images (L29-L50) of the official code, transcribed, over torchvision's folder
    layout, with its `glob(join(class_dir_i, "*.ppm"))` replaced by `listing(class_dir_i)`."""
    from os.path import join

    import numpy as np

    rs = np.random.RandomState(42)
    all_filepaths = []
    for class_i in range(43):
        class_dir_i = join(root, "gtsrb", "GTSRB", "Training", f"{class_i:05d}")
        image_paths = np.array(listing(class_dir_i))
        num = len(image_paths)
        indexer = np.arange(num)
        rs.shuffle(indexer)
        image_paths = image_paths[indexer].tolist()
        image_paths = image_paths[: int(0.8 * num)] if train else image_paths[int(0.8 * num) :]
        all_filepaths.extend(image_paths)
    return all_filepaths


def test_gtsrb_split_is_the_official_procedure_over_files_in_name_order(tmp_path):
    """mim's GTSRB split is traffic_sign.py's with each class folder listed in name order (sorted glob).
    The files are written in a shuffled order, so a listing by creation order would differ; the official
    glob() order is the file system's, and another listing puts other files in the split (last assert)."""
    from glob import glob

    sizes = {0: 7, 1: 10, 2: 13}
    colours = {}
    generator = torch.Generator().manual_seed(0)
    for label, n in sizes.items():
        for i in torch.randperm(n, generator=generator).tolist():  # written out of name order
            path = tmp_path / "gtsrb" / "GTSRB" / "Training" / f"{label:05d}" / f"{i // 5:05d}_{i % 5:05d}.ppm"
            colours[(label, 40 * label + 3 * i)] = path.name
            _save_image(path, (40 * label + 3 * i, 0, 0))
    train, test = resolve_dataset("gtsrb", root=tmp_path, image_size=8, download=False).load()

    def files(data):  # the split's file names, found by colour (a split's own order is irrelevant: shuffled)
        return sorted(colours[(label, int(red))] for label, red in zip(data.labels.tolist(), data.images[:, 0, 4, 4]))

    def official(train, listing):
        return sorted(p.rsplit("/", 1)[-1] for p in _official_traffic_sign_split(tmp_path, train, listing))

    def by_name(folder):
        return sorted(glob(f"{folder}/*.ppm"))

    assert files(train) == official(True, by_name)
    assert files(test) == official(False, by_name)
    assert train.labels.tolist() == [0] * 5 + [1] * 8 + [2] * 10
    assert files(train) != official(True, lambda folder: by_name(folder)[::-1])


def test_cub200_uses_the_official_split(tmp_path):
    folder = tmp_path / "CUB_200_2011"
    rows = [(1, "001.Albatross/a.jpg", 1, 1), (2, "001.Albatross/b.jpg", 1, 0), (3, "002.Auklet/c.jpg", 2, 1)]
    (folder / "images").mkdir(parents=True)
    (folder / "images.txt").write_text("".join(f"{i} {p}\n" for i, p, _, _ in rows))
    (folder / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c, _ in rows))
    (folder / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, t in rows))
    (folder / "classes.txt").write_text("1 001.Albatross\n2 002.Auklet\n")
    for i, path, _, _ in rows:
        _save_image(folder / "images" / path, (80 * i, 0, 0))
    train, test = resolve_dataset("cub200", root=tmp_path, image_size=32, download=False).load()
    assert train.labels.tolist() == [0, 1]
    assert test.labels.tolist() == [0]
    assert train.images.shape == (2, 3, 32, 32)
    assert train.classes == ["001.Albatross", "002.Auklet"]
    assert int(test.images[0, 0, 16, 16]) == 160
    assert int(train.images[1, 0, 16, 16]) == 240


def test_dtd_trains_on_train_and_val_of_partition_one(tmp_path):
    base = tmp_path / "dtd" / "dtd"
    lists = {"train1": ["banded/a.jpg"], "val1": ["dotted/b.jpg"], "test1": ["banded/c.jpg", "dotted/d.jpg"]}
    (base / "labels").mkdir(parents=True)
    for name, items in lists.items():
        (base / "labels" / f"{name}.txt").write_text("\n".join(items) + "\n")
        for item in items:
            _save_image(base / "images" / item, (0, 200, 0))
    train, test = resolve_dataset("dtd", root=tmp_path, image_size=32, download=False).load()
    assert (len(train), len(test)) == (2, 2)
    assert test.labels.tolist() == [0, 1]


def test_gtsrb_is_split_80_20_per_class(tmp_path):
    for label, count in enumerate((10, 5)):
        for i in range(count):
            _save_image(tmp_path / "gtsrb" / "GTSRB" / "Training" / f"{label:05d}" / f"{i:05d}.ppm", (0, 0, 9 * i))
    train, test = resolve_dataset("gtsrb", root=tmp_path, image_size=32, download=False).load()
    assert train.labels.tolist() == [0] * 8 + [1] * 4
    assert test.labels.tolist() == [0] * 2 + [1]
    with pytest.raises(DataNotFoundError, match="flowers102 not found under"):
        resolve_dataset("flowers102", root=tmp_path, image_size=32, download=False).load()


def test_standardize_uses_the_train_split_and_frees_the_probe_from_the_features_scale():
    x, y = blobs(600, 16, 4, spread=3.0, seed=0)
    test_x, test_y = blobs(400, 16, 4, spread=3.0, seed=1)
    train_s, test_s = standardize(x, test_x)
    mean, var = x.mean(0), x.var(0, unbiased=False)
    torch.testing.assert_close(train_s, (x - mean) / torch.sqrt(var + 1e-6))
    torch.testing.assert_close(test_s, (test_x - mean) / torch.sqrt(var + 1e-6))

    def accuracy(train: torch.Tensor, test: torch.Tensor) -> float:
        return linear_probe(train, y, test, test_y, [0], LinearParams())["acc_best_test"]["mean"]

    # raw SGD at lr 0.01 barely moves on features 1000x smaller; standardised, the scale no longer matters
    plain = accuracy(*standardize(x, test_x))
    assert accuracy(x * 1e-3, test_x * 1e-3) < plain - 10
    assert abs(accuracy(*standardize(x * 1e-3, test_x * 1e-3)) - plain) <= 0.5
