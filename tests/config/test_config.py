"""Config: presets, overrides and every bad-input case gives one line and exit 2."""

from __future__ import annotations

import pytest

from mimcli.config import RunConfig, list_presets, load_config, to_toml
from mimcli.errors import UsageError


def test_every_preset_validates_and_round_trips():
    presets = list_presets()
    for name in [
        "simclr",
        "byol",
        "barlow",
        "simclr-rc",
        "simclr-lbe",
        "byol-rc",
        "byol-lbe",
        "barlow-rc",
        "barlow-lbe",
        "simclr-mib",
        "simclr-ip",
        "simclr-noise",
        "simclr-stl10",
        "supervised",
        "cpu-tiny",
    ]:
        assert name in presets
    import tomllib

    for name in presets:
        config = load_config(name)
        assert config.run.name == name
        again = RunConfig.model_validate(tomllib.loads(to_toml(config.to_dict())))
        assert again == config


def test_every_preset_round_trips_through_a_run_directory(tmp_path):
    """load preset -> config.toml (what --resume, probe and report read) -> identical config."""
    from mimcli.rundir import runs

    for name in list_presets():
        config = load_config(name)
        runs.save_config(tmp_path / name, config)
        assert runs.load_run_config(tmp_path / name) == config, name


def test_multi_line_description_and_quotes_survive_config_toml(tmp_path):
    """A preset with a multi-line description (quotes, backslash, tab) is written and read back unchanged."""
    from mimcli.rundir import runs

    preset = tmp_path / "mine.toml"
    preset.write_text(
        '[run]\ndescription = """\nfirst line\nsecond "quoted" line \\\\ backslash\n\ttab"""\n[train]\nepochs = 1\n'
    )
    config = load_config(str(preset))
    assert config.run.description == 'first line\nsecond "quoted" line \\ backslash\n\ttab'
    runs.save_config(tmp_path / "run", config)
    assert runs.load_run_config(tmp_path / "run") == config


def test_preset_lambdas_follow_reference():
    assert load_config("simclr-rc").regularizer.lam == 1.0
    assert load_config("byol-lbe").regularizer.lam == 0.1
    assert load_config("simclr-mib").regularizer.lam == 5e-4
    assert load_config("supervised-rc").regularizer.lam == 0.001
    lbe = load_config("supervised-lbe").regularizer
    assert (lbe.lam, lbe.sigma) == (0.1, 0.01)
    assert load_config("byol").train.batch_size == 128


def test_overrides_are_typed_and_validated():
    config = load_config(
        "simclr",
        [
            "train.epochs=3",
            "data.subset=100",
            "regularizer.lambda=0.5",
            "data.root=/tmp/x",
            "probe.datasets=['cifar10','dtd']",
        ],
    )
    assert config.train.epochs == 3
    assert config.data.subset == 100
    assert config.regularizer.lam == 0.5
    assert config.data.root == "/tmp/x"
    assert config.probe.datasets == ["cifar10", "dtd"]


def test_preset_from_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[method]\nname = "byol"\n[train]\nbatch_size = 64\n')
    config = load_config(str(path))
    assert config.method.name == "byol"
    assert config.train.batch_size == 64
    assert config.run.name == "mine"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["train.epoch=3"], "train.epoch: unknown key"),
        (["nonsense.key=1"], "nonsense: unknown key"),
        (["train.epochs=abc"], "train.epochs"),
        (["train.epochs=-1"], "train.epochs"),
        (["train.batch_size=0"], "train.batch_size"),
        (["train.batch_size=1"], "at least 2 images"),
        (["regularizer.kind=rc", "data.image_size=48"], "RC decoder serves only"),
        (["regularizer.lambda=-1"], "regularizer.lambda"),
        (["regularizer.sigma=-0.1"], "regularizer.sigma"),
        (["data.dataset=imagenet21k"], "unknown dataset"),
        (["trainepochs"], "expected section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(overrides, fragment):
    with pytest.raises(UsageError, match=None) as error:
        load_config("simclr", overrides)
    assert fragment in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(UsageError) as error:
        load_config("simclr-typo")
    assert "unknown preset 'simclr-typo'" in str(error.value)
    assert "simclr-rc" in str(error.value)


def test_a_folder_or_file_named_like_a_preset_does_not_shadow_it(tmp_path, monkeypatch):
    """`--out shapes-study` leaves a folder of that name; the bare name still means the preset."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shapes-study").mkdir()
    (tmp_path / "simclr").write_text("[train]\nepochs = 7\n")
    assert load_config("shapes-study").to_dict() == load_config(str(list_presets()["shapes-study"])).to_dict()
    assert load_config("simclr").train.epochs == load_config(str(list_presets()["simclr"])).train.epochs != 7
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mine").write_text("[train]\nepochs = 7\n")
    assert load_config("configs/mine").train.epochs == 7  # a separator: a path, with or without .toml
    with pytest.raises(UsageError, match=r"preset file not found: shapes-study/x\.toml"):
        load_config("shapes-study/x.toml")
    (tmp_path / "mine").write_text("[train]\nepochs = 7\n")
    with pytest.raises(UsageError, match=r"unknown preset 'mine' \(a file is read when the name ends in .toml"):
        load_config("mine")


def test_unreadable_toml_names_the_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[train]\nepochs = 3\nbatch_size = = 2\n")
    with pytest.raises(UsageError) as error:
        load_config(str(path))
    assert "line 3" in str(error.value)


@pytest.mark.parametrize(
    "args",
    [
        ["pretrain", "--preset", "nope"],
        ["pretrain", "--preset", "simclr", "--set", "train.epochz=1"],
        ["pretrain", "--preset", "simclr", "--set", "train.batch_size=1"],
        ["pretrain", "--preset", "simclr-rc", "--set", "data.image_size=40"],
        ["pretrain", "--preset", "simclr", "--set", "train.epochs=-2"],
    ],
)
def test_cli_bad_input_is_one_line_exit_2(cli, tmp_path, args):
    code, _, err = cli(*args, "--out", str(tmp_path / "run"))
    assert code == 2
    assert err.strip().count("\n") == 0
    assert err.startswith("error:")
    assert not (tmp_path / "run").exists()


def test_presets_command_lists_descriptions(cli):
    code, out, _ = cli("presets")
    assert code == 0
    assert "simclr-rc" in out
    assert "lambda 1" in out


def test_every_preset_says_what_it_reproduces_and_paper_presets_name_their_length():
    presets = list_presets()
    for name in presets:
        config = load_config(name)
        assert config.run.reproduces, name
        if name.startswith("paper-"):
            assert "200 epochs" in config.run.reproduces, name
            assert config.train.epochs == 200, name
            short = load_config(name.removeprefix("paper-"))
            assert f"preset {name}" in short.run.reproduces, name
            assert short.train.epochs == 30, name
    paper = [n for n in presets if n.startswith("paper-")]
    assert len(paper) == 27  # Table 1 (3 methods x 3 variants x CIFAR-10 / STL-10) + IP, MIB, noise + 6 supervised
    assert load_config("paper-barlow-lbe-stl10").run.reproduces == (
        "paper Table 1 (STL-10 pretraining), row Barlow + LBE, 200 epochs"
    )


def test_switching_the_method_with_set_drops_the_keys_the_new_method_lacks():
    # quickstart is SimCLR with temperature 0.2: the supervised method has no temperature
    assert load_config("quickstart", ["method.name=supervised"]).method.name == "supervised"
    # rc -> lbe keeps the preset's lambda (both regularisers have one) and the rest of the recipe
    switched = load_config("quickstart-rc", ["regularizer.kind=lbe"])
    assert (switched.regularizer.kind, switched.regularizer.lam, switched.train.lr) == ("lbe", 1.0, 2e-3)
    # the same name leaves the section alone; a foreign key set after the switch is still an error
    assert load_config("quickstart", ["method.name=simclr"]).method.temperature == 0.2
    with pytest.raises(UsageError, match="temperature"):
        load_config("quickstart", ["method.name=supervised", "method.temperature=0.1"])


def test_every_preset_resolves_to_its_recorded_config():
    """tests/config/resolved_presets.json (written by the script beside it) holds each preset's resolved config:
    rewriting a preset (or extending another with `base`) must not change what it runs."""
    import json
    from pathlib import Path

    recorded = json.loads((Path(__file__).parent / "resolved_presets.json").read_text())
    assert sorted(list_presets()) == sorted(recorded)
    for name in recorded:
        assert json.loads(json.dumps(load_config(name).to_dict())) == recorded[name], name


def _preset(folder, name, text):
    (folder / f"{name}.toml").write_text(text)
    return str(folder / f"{name}.toml")


def test_a_preset_extends_its_base_section_by_section(tmp_path):
    """`base` names a preset or a neighbouring file; chains resolve; only the keys written differ."""
    _preset(tmp_path, "middle", 'base = "simclr-rc"\n[run]\ndescription = "mine"\n[train]\nepochs = 3\n')
    leaf = _preset(tmp_path, "leaf", 'base = "middle.toml"\n[regularizer]\nlambda = 0.5\n')
    expected = load_config("simclr-rc").to_dict()
    expected["run"].update(name="leaf", description="mine")
    expected["train"]["epochs"] = 3
    expected["regularizer"]["lambda"] = 0.5
    assert load_config(leaf).to_dict() == expected


def test_a_preset_switching_the_method_drops_the_base_keys_the_new_one_lacks(tmp_path):
    # quickstart is SimCLR with temperature 0.2; supervised has no temperature
    mine = _preset(tmp_path, "mine", 'base = "quickstart"\n[method]\nname = "supervised"\n')
    assert load_config(mine).method.model_dump() == {"name": "supervised"}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a": 'base = "b.toml"\n', "b": 'base = "a.toml"\n'}, "base chain returns to"),
        ({"a": 'base = "a.toml"\n'}, "base chain returns to"),
        ({"a": 'base = "no-such-preset"\n'}, "unknown preset 'no-such-preset'"),
        ({"a": "base = 3\n"}, "base: must be a preset name"),
    ],
)
def test_a_bad_base_is_one_line_and_exit_2(cli, tmp_path, files, message):
    for name, text in files.items():
        _preset(tmp_path, name, text)
    code, _, err = cli("pretrain", "--preset", str(tmp_path / "a.toml"), "--out", str(tmp_path / "run"))
    assert code == 2
    assert err.strip().count("\n") == 0
    assert message in err
    assert not (tmp_path / "run").exists()


def test_presets_command_lists_every_preset_with_its_own_description(cli):
    """Presets that extend another still show their own description (and one they inherit, if they have none)."""
    import re

    code, out, _ = cli("presets")
    assert code == 0
    flat = re.sub(r"[\s│|]+", " ", out)
    for name in list_presets():
        assert name in out, name
    assert "200-epoch paper run: SimCLR + RC" in flat
