"""Typed run configuration: pydantic models for every section, preset lookup and `--set` overrides.

Every key is validated and unknown keys are errors, so a typo in a preset or an override can never
be silently ignored (a complaint users have about other SSL toolkits).
"""

from __future__ import annotations

import ast
import importlib.util
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mimcli.errors import UsageError


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are re-validated, and
    inf/nan are refused in every float (an infinite lambda or lr trains to NaN and exits 0 otherwise)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, allow_inf_nan=False)


def check_folder_name(value: str) -> str:
    """A single folder name: not empty, no path separator, not `.` or `..` (it must stay inside --out)."""
    if not value.strip() or "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError("must be a plain folder name (not empty, no '/', '\\', '.' or '..')")
    return value


class RunSection(Section):
    name: str = Field("run", description="Run name; the default output directory is runs/<name>.")
    description: str = Field("", description="One line shown by `mim presets`.")
    reproduces: str = Field(
        "",
        description="Which table and row of the paper / report this recipe reproduces, "
        "at what length (shown by `mim presets`).",
    )
    out: str | None = Field(None, description="Run directory (default runs/<name>).")

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        return check_folder_name(value)


class ShapesSection(Section):
    """Size and seed of the generated `shapes` data set (only read when data.dataset = 'shapes')."""

    n_train: int = Field(20_000, gt=0)
    n_test: int = Field(5_000, gt=0)
    seed: int = 0
    background: Literal["textured", "plain"] = Field(
        "textured",
        description="textured: tinted grey, low-frequency colour field and pixel noise (shared nuisances); "
        "plain: one flat grey level (docs/shapes.md).",
    )


class DataSection(Section):
    dataset: str = Field(
        "cifar10",
        description="cifar10 | cifar100 | stl10 | imagefolder | shapes",
    )
    root: str = Field("data", description="Where torchvision data sets live, or the image-folder root.")
    subset: int | None = Field(None, gt=0, description="Train on a fixed, seeded subset of N images.")
    image_size: int = Field(32, gt=0, description="Training crop size in pixels (32 CIFAR, 64 STL-10).")
    download: bool = Field(True, description="Download torchvision data sets on first use.")
    stl10_split: Literal["unlabeled", "unlabeled+train"] = Field(
        "unlabeled", description="STL-10 pretraining images: unlabeled (official, 100k) or unlabeled+train (105k)."
    )
    loader: Literal["auto", "memory", "stream"] = Field(
        "auto",
        description="memory: decode once into RAM; stream: decode per batch from the files (imagefolder); "
        "auto: stream when the decoded set would exceed data.memory_gb.",
    )
    memory_gb: float = Field(8.0, gt=0, description="auto's budget for the decoded uint8 set, in GiB.")
    workers: int = Field(4, ge=0, description="Stream mode: decoding processes per rank (0: in the training process).")
    shapes: ShapesSection = Field(default_factory=ShapesSection)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        known = {"cifar10", "cifar100", "stl10", "imagefolder", "shapes"}
        if value not in known:
            raise ValueError(f"unknown dataset {value!r}; choose one of {sorted(known)}")
        return value


class AugmentSection(Section):
    """The paper's view recipe; the defaults are REFERENCE.md's contrastive augmentation."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = Field(0.5, ge=0, le=1)
    jitter_p: float = Field(0.8, ge=0, le=1)
    brightness: float = Field(0.8, ge=0)
    contrast: float = Field(0.8, ge=0)
    saturation: float = Field(0.8, ge=0)
    hue: float = Field(0.2, ge=0, le=0.5)
    grayscale_p: float = Field(0.2, ge=0, le=1)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @field_validator("crop_scale", "crop_ratio")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError(f"must be a range 0 < low <= high, got {list(value)}")
        return value


class ModelSection(Section):
    backbone: Literal["resnet18", "resnet50"] = "resnet18"
    width: int = Field(64, gt=0, description="Base channels (64 is the standard ResNet; 16 runs fast on a CPU).")
    stem: Literal["auto", "cifar", "stl", "imagenet"] = Field(
        "auto", description="auto: cifar below 64 px, stl at 64-95 px, imagenet from 96 px."
    )


class MethodSection(Section):
    name: Literal["simclr", "byol", "barlow", "supervised"] = "simclr"
    temperature: float = Field(0.5, gt=0, description="SimCLR NT-Xent temperature.")
    hidden_dim: int = Field(512, gt=0, description="Projector hidden width.")
    proj_dim: int | None = Field(None, gt=0, description="Projector output (default 128; 1024 for Barlow).")
    base_momentum: float = Field(0.996, ge=0, le=1, description="BYOL EMA base momentum.")
    offdiag_weight: float = Field(0.01, ge=0, description="Barlow Twins off-diagonal weight.")


IMAGENET_SIZE = 224  # from this resolution on, the official ImageNet settings apply (LBE rho, blocks)


class RegularizerSection(Section):
    kind: Literal["none", "rc", "lbe", "mib", "ip", "noise"] = "none"
    lam: float = Field(1.0, alias="lambda", ge=0, description="Weight of the I(z, v) term.")
    sigma: float = Field(0.1, ge=0, description="Noise on pooled features (lbe, mib, noise).")
    rho: float | None = Field(
        None,
        gt=0,
        description="LBE distance scale exp(-rho * ||z_k - f(v_l)||^2); default as the official "
        "code: 1/20 (0.05), 1/80 (0.0125) at 224 px (ImageNet).",
    )
    block_weights: dict[str, float] | None = Field(
        None,
        description="LBE weight per pooled block; default as the official code: layer2 0.25, layer3 0.5, "
        "layer4 1 (224 px / ImageNet: layer4 only).",
    )

    def lbe_rho(self, image_size: int) -> float:
        """rho, or the official default for the resolution (the reference divides by 20, by 80 on ImageNet)."""
        if self.rho is not None:
            return self.rho
        return 1 / 80 if image_size >= IMAGENET_SIZE else 1 / 20

    def lbe_block_weights(self, image_size: int) -> dict[str, float]:
        """block_weights, or the official default for the resolution."""
        if self.block_weights is not None:
            return self.block_weights
        if image_size >= IMAGENET_SIZE:
            return {"layer4": 1.0}
        return {"layer2": 0.25, "layer3": 0.5, "layer4": 1.0}


class TrainSection(Section):
    epochs: int = Field(30, ge=0, description="0 saves the randomly initialised backbone (a baseline for probes).")
    batch_size: int = Field(256, gt=0)
    lr: float = Field(3e-4, gt=0)
    optimizer: Literal["adam", "sgd", "lars"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    schedule: Literal["constant", "cosine", "warmup_cosine"] = Field(
        "constant", description="cosine: per epoch; warmup_cosine: linear warm-up then cosine, per step (LARS recipe)."
    )
    warmup_epochs: float = Field(0.0, ge=0, description="warmup_cosine: epochs of linear warm-up.")
    checkpoint_steps: int = Field(
        0, ge=0, description="Also checkpoint every N steps inside an epoch (0: at epoch ends)."
    )
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    channels_last: bool = True
    bn_stats: Literal["per_view", "joint"] = Field(
        "per_view",
        description="BatchNorm statistics in pretraining: per_view (official: each view on its own, "
        "computed in one pass) or joint (all views as one batch).",
    )
    loss_precision: Literal["fp32", "autocast"] = Field(
        "fp32", description="fp32: losses outside autocast (official); autocast: loss matmuls in the autocast dtype."
    )
    compile: bool = False
    log_every: int = Field(50, gt=0, description="Steps between loss read-backs (no host sync otherwise).")
    print_every: int = Field(0, ge=0, description="Without a terminal: also print a line every N steps (0: per epoch).")
    log: list[Literal["jsonl", "tensorboard"]] = Field(
        default_factory=lambda: ["jsonl"],  # type: ignore[arg-type]  # pydantic validates the literal
        description="Where metrics go: jsonl (metrics.jsonl, always) and optionally tensorboard (mim[tensorboard]).",
    )
    save_epochs: list[int] = Field(default_factory=list, description="Also keep backbone weights at these epochs.")
    threads: int | None = Field(None, gt=0, description="CPU threads for torch (default: torch's choice).")
    diagnostics_every: int | None = Field(
        None, ge=0, description="Epochs between information-plane estimates (0 off; default: 1 on shapes, else 0)."
    )
    diagnostics_images: int = Field(256, ge=8, description="Images in the fixed diagnostics batch.")

    @field_validator("log")
    @classmethod
    def _jsonl_always(cls, value: list[str]) -> list[str]:
        if "jsonl" not in value:
            raise ValueError("must include 'jsonl': metrics.jsonl is what resume and `mim report` read")
        return list(dict.fromkeys(value))


class ProbeSection(Section):
    datasets: list[str] = Field(default_factory=list, description="Probed when training ends.")
    protocol: Literal["linear", "knn", "regression"] = "linear"
    layers: list[int] = Field(default_factory=lambda: [4])
    seeds: list[int] = Field(default_factory=lambda: [0])
    epochs: int = Field(100, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(0.01, gt=0)
    normalize: Literal["official", "train_stats"] = Field(
        "official",
        description="Probe image normalisation: official (the reference's per-data-set constants; "
        "CIFAR and shapes with the training (0.5, 0.5)) or train_stats (each set's train-split statistics).",
    )


class RunConfig(Section):
    run: RunSection = Field(default_factory=RunSection)
    data: DataSection = Field(default_factory=DataSection)
    augment: AugmentSection = Field(default_factory=AugmentSection)
    model: ModelSection = Field(default_factory=ModelSection)
    method: MethodSection = Field(default_factory=MethodSection)
    regularizer: RegularizerSection = Field(default_factory=RegularizerSection)
    train: TrainSection = Field(default_factory=TrainSection)
    probe: ProbeSection = Field(default_factory=ProbeSection)

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.method.name != "supervised" and self.train.batch_size < 2:
            raise ValueError(
                f"train.batch_size={self.train.batch_size}: a contrastive method needs at least 2 images per batch"
            )
        if self.regularizer.kind == "rc":
            from mimcli.models.decoders import SUPPORTED_SIZES

            if self.data.image_size not in SUPPORTED_SIZES:
                raise ValueError(
                    f"data.image_size={self.data.image_size}: the RC decoder serves only {sorted(SUPPORTED_SIZES)} px"
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with the user-facing key names (`lambda`, not `lam`), None values dropped."""
        return self.model_dump(by_alias=True, exclude_none=True)


def preset_dirs() -> list[Path]:
    """Where named presets live: the checkout's presets/ first, then the installed package data."""
    dirs = [Path(__file__).resolve().parent.parent / "presets"]
    try:  # installed: mimcli.presets is a data-only (namespace) package; take every folder it spans
        spec = importlib.util.find_spec("mimcli.presets")
        dirs += [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    except ModuleNotFoundError:
        pass
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def list_presets() -> dict[str, Path]:
    """Preset name -> file, first directory wins."""
    found: dict[str, Path] = {}
    for directory in preset_dirs():
        for path in sorted(directory.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def resolve_preset(name_or_path: str) -> Path:
    """A preset name (`simclr-rc`) or a path to a TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        if not candidate.is_file():
            raise UsageError(f"preset file not found: {candidate}")
        return candidate
    presets = list_presets()
    if name_or_path not in presets:
        raise UsageError(f"unknown preset {name_or_path!r}; known presets: {', '.join(sorted(presets)) or 'none'}")
    return presets[name_or_path]


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read {path}: {error}") from None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key=value` -> (["section", "key"], value); the value is parsed as TOML, else kept as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or "." not in key:
        raise UsageError(f"--set {text!r}: expected section.key=value")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Nested-dict update; validation happens afterwards, so an unknown key is reported by name."""
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"--set {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return raw


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line naming each offending key and value."""
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item["loc"] if p != "__root__") or "config"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        value = item.get("input")
        shown = "" if item["type"] == "extra_forbidden" or isinstance(value, dict) else f" (got {value!r})"
        parts.append(f"{location}: {message}{shown}")
    return f"invalid config from {source}: " + "; ".join(parts)


def build_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as error:
        raise UsageError(format_validation_error(error, source)) from None


def load_config(preset: str | None, overrides: list[str] | None = None) -> RunConfig:
    """Preset (or defaults) + `--set` overrides -> validated RunConfig; the run name defaults to the preset's."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if preset:
        path = resolve_preset(preset)
        raw = read_toml(path)
        source = str(path)
        raw.setdefault("run", {}).setdefault("name", path.stem)
    raw = apply_overrides(raw, list(overrides or []))
    return build_config(raw, source + (" with --set overrides" if overrides else ""))


def to_toml(data: dict[str, Any]) -> str:
    """TOML text for a config dict, via tomli-w (the writer paired with tomllib: any string, multi-line
    descriptions included, reads back as written)."""
    import tomli_w

    return tomli_w.dumps(data)
