"""The sections of a run's configuration and the RunConfig that holds them.

Every key is validated and unknown keys are errors, so a typo in a preset or an override can never
be silently ignored (a complaint users have about other SSL toolkits).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import (
    Field,
    SerializeAsAny,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from mimcli.config.base import Section, check_folder_name, own_keys
from mimcli.config.datasets import pretraining_names
from mimcli.config.registry import load_builtins, pick_section, plugin_entry, reading

DEFAULT_METHOD = "simclr"
DEFAULT_REGULARIZER = "none"
IMAGENET_SIZE = 224  # from this resolution on, the official ImageNet settings apply (LBE rho, blocks)


class MethodSection(Section):
    """Base of every method's section. A method module subclasses it with `name: Literal["<name>"]`, its own
    keys and ClassVars, and registers it; `RunConfig.method` then picks the subclass by `name`."""

    name: str = DEFAULT_METHOD
    label: ClassVar[str] = ""  # the report's row label ("SimCLR")
    uses: ClassVar[tuple[str, ...]] = ()  # keys that change what the method computes (the report splits rows on them)
    min_batch: ClassVar[int] = 2  # images per batch it needs (a contrastive loss needs two)

    def check_run(self, config: RunConfig) -> None:
        """Raise ValueError when the rest of the config cannot serve this method (most methods: never)."""


class RegularizerSection(Section):
    """Base of every regulariser's section: lambda weighs the term in `method + lambda * reg` and sigma is the
    stochastic encoder's noise, both shared by the composition; subclasses add their own keys."""

    kind: str = DEFAULT_REGULARIZER
    lam: float = Field(1.0, alias="lambda", ge=0, description="Weight of the I(z, v) term.")
    sigma: float = Field(0.1, ge=0, description="Noise on pooled features (lbe, mib, noise).")
    label: ClassVar[str] = ""  # the report's suffix ("RC" in "SimCLR + RC"); empty for none
    uses: ClassVar[tuple[str, ...]] = ()

    def check_run(self, config: RunConfig) -> None:
        """Raise ValueError when the rest of the config cannot serve this regulariser (RC: the image size)."""


# name -> section class, in registration order (the report's row order); filled by the method and regulariser
# modules through mimcli.methods.register_method / mimcli.regularizers.register_regularizer.
METHOD_SECTIONS: dict[str, type[MethodSection]] = {}
REGULARIZER_SECTIONS: dict[str, type[RegularizerSection]] = {}
# The built-in methods and regularisers are plugins that ship with mim: loaded by name (like any plugin) the
# first time a section is looked up, because config sits below them in the import order (docs/extending.md).


def method_sections() -> dict[str, type[MethodSection]]:
    """Every registered method section, built-ins first."""
    load_builtins()
    return METHOD_SECTIONS


def regularizer_sections() -> dict[str, type[RegularizerSection]]:
    """Every registered regulariser section, built-ins first."""
    load_builtins()
    return REGULARIZER_SECTIONS


def drop_foreign_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """A config.toml written before methods had their own sections holds every method's and regulariser's keys
    (defaults the run never read): keep only the selected section's own keys."""
    sections: tuple[tuple[str, str, dict[str, Any], str], ...] = (
        ("method", "name", dict(method_sections()), DEFAULT_METHOD),
        ("regularizer", "kind", dict(regularizer_sections()), DEFAULT_REGULARIZER),
    )
    for section, key, registry, default in sections:
        values = raw.get(section)
        if isinstance(values, dict) and values.get(key, default) in registry:
            own = own_keys(registry[values.get(key, default)])
            raw[section] = {name: value for name, value in values.items() if name in own}
    return raw


class RunSection(Section):
    name: str = Field("run", description="Run name; the default output directory is runs/<name>.")
    description: str = Field("", description="One line shown by `mim presets`.")
    reproduces: str = Field(
        "",
        description="Which table and row of the paper / report this recipe reproduces, "
        "at what length (shown by `mim presets`).",
    )
    out: str | None = Field(None, description="Run directory (default runs/<name>).")
    plugins: list[str] = Field(
        default_factory=list,
        description="Python files (or installed 'mim.plugins' entry points) that register extra methods / "
        "regularisers; only commands that train import them (docs/extending.md).",
    )

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        return check_folder_name(value)

    @field_validator("plugins")
    @classmethod
    def _absolute_files(cls, value: list[str]) -> list[str]:
        """A plugin file is recorded by absolute path, so resume and `mim report` find it from any folder."""
        return [plugin_entry(entry) for entry in value]


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
    layout: Literal["scattered", "centred"] = Field(
        "scattered",
        description="scattered: the glyph anywhere inside the image (position is a task); centred: its centroid "
        "at the centre, so position is no shared cue for SimCLR to match views on (docs/shapes.md).",
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
        known = pretraining_names()
        if value not in known:
            raise ValueError(f"unknown dataset {value!r}; choose one of {sorted(known)}")
        return value


class AugmentSection(Section):
    """The paper's view recipe; the defaults are the official contrastive augmentation
    (docs/reference.md#augmentation)."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = Field(0.5, ge=0, le=1)
    jitter_p: float = Field(0.8, ge=0, le=1)
    brightness: float = Field(0.8, ge=0)
    contrast: float = Field(0.8, ge=0)
    saturation: float = Field(0.8, ge=0)
    hue: float = Field(0.2, ge=0, le=0.5)
    grayscale_p: float = Field(0.2, ge=0, le=1)
    translate: int = Field(
        0,
        ge=0,
        description="Largest shift of each view, in input pixels per axis (border pixels repeated): moves the "
        "content without cutting or rescaling it. 0 (the paper's recipe) draws nothing.",
    )
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


class TrainSection(Section):
    epochs: int = Field(30, ge=0, description="0 saves the randomly initialised backbone (a baseline for probes).")
    batch_size: int = Field(256, gt=0)
    lr: float = Field(3e-4, gt=0)
    optimizer: Literal["adam", "sgd", "lars"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    lars_exclude_1d: bool = Field(
        False,
        description="LARS: biases and BatchNorm parameters (ndim <= 1) get no weight decay and no trust ratio "
        "(the SimCLR paper's LARS); false: every parameter gets both, as the official code executes.",
    )
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
    bn_group_size: int = Field(
        0,
        ge=0,
        description="Backbone BatchNorm statistics per group of N rows of each view on each process, as the "
        "official ImageNet run's DataParallel (4 GPUs: 256); 0: each view's whole batch (all ranks under DDP).",
    )
    loss_precision: Literal["fp32", "autocast"] = Field(
        "fp32", description="fp32: losses outside autocast (official); autocast: loss matmuls in the autocast dtype."
    )
    compile: bool = False
    log_every: int = Field(50, gt=0, description="Steps between loss read-backs (no host sync otherwise).")
    print_every: int = Field(0, ge=0, description="Without a terminal: also print a line every N steps (0: per epoch).")
    log: list[Literal["jsonl", "tensorboard"]] = Field(
        default_factory=lambda: ["jsonl"],  # type: ignore[arg-type]  # pydantic validates the literal
        description="Where metrics go: jsonl (metrics.jsonl, always) and optionally tensorboard ([tensorboard] extra).",
    )
    save_epochs: list[int] = Field(default_factory=list, description="Also keep backbone weights at these epochs.")
    threads: int | None = Field(None, gt=0, description="CPU threads for torch (default: torch's choice).")
    diagnostics_every: int | None = Field(
        None, ge=0, description="Epochs between information-plane estimates (0 off; default: 1 on shapes, else 0)."
    )
    diagnostics_images: int = Field(256, ge=8, description="Images in the fixed diagnostics batch.")
    grad_norm_steps: int = Field(
        0,
        ge=0,
        description="Steps per epoch (evenly spaced, the first included) at which each weighted loss term's "
        "gradient norm in the backbone is measured; their mean goes into metrics.jsonl (grad_norm_*). 0: off.",
    )

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
    drop_last: bool = Field(
        True, description="Skip each epoch's last partial batch, as the official probe loader (drop_last=True)."
    )
    features: Literal["raw", "standardized"] = Field(
        "raw",
        description="raw: the pooled features as they are (the paper's probe); standardized: each dimension "
        "centred and scaled by the train split's mean and std first (MAE's BatchNorm probe), so that a "
        "probe reads what features hold, not their scale.",
    )
    normalize: Literal["official", "train_stats"] = Field(
        "official",
        description="Probe image normalisation: official (the reference's per-data-set constants; "
        "CIFAR and shapes with the training (0.5, 0.5)) or train_stats (each set's train-split statistics).",
    )
    recipe: Literal["auto", "paper", "imagenet"] = Field(
        "auto",
        description="paper: eval_lr.py (clean images at the training size, SGD 0.01, steps at 60/80); imagenet: "
        "eval_lr_imagenet.py (augmented train epochs at 224 px, Resize 256 / CenterCrop 224 test, N(0, 0.01) init, "
        "SGD 0.3 cosine); auto: imagenet for runs pretrained at 224 px or more.",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="Feature extraction: fp32 (official eval_lr.py) or bf16 autocast (faster on GPUs / AMX CPUs; "
        "rounds the features). Part of the feature cache's file name.",
    )


class RunConfig(Section):
    run: RunSection = Field(default_factory=RunSection)
    data: DataSection = Field(default_factory=DataSection)
    augment: AugmentSection = Field(default_factory=AugmentSection)
    model: ModelSection = Field(default_factory=ModelSection)
    method: SerializeAsAny[MethodSection] = Field(default_factory=lambda: method_sections()[DEFAULT_METHOD]())
    regularizer: SerializeAsAny[RegularizerSection] = Field(
        default_factory=lambda: regularizer_sections()[DEFAULT_REGULARIZER]()
    )
    train: TrainSection = Field(default_factory=TrainSection)
    probe: ProbeSection = Field(default_factory=ProbeSection)

    @field_validator("method", mode="wrap")
    @classmethod
    def _method(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> MethodSection:
        return pick_section(value, method_sections(), MethodSection, "name", "method", handler, reading(info))

    @field_validator("regularizer", mode="wrap")
    @classmethod
    def _regularizer(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> RegularizerSection:
        sections = regularizer_sections()
        return pick_section(value, sections, RegularizerSection, "kind", "regularizer", handler, reading(info))

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.train.batch_size < self.method.min_batch:
            raise ValueError(
                f"train.batch_size={self.train.batch_size}: method {self.method.name!r} needs at least "
                f"{self.method.min_batch} images per batch"
            )
        group = self.train.bn_group_size
        if group and (self.train.bn_stats != "per_view" or self.train.batch_size % group):
            raise ValueError(
                f"train.bn_group_size={group} needs train.bn_stats = 'per_view' and a train.batch_size that "
                f"it divides (got {self.train.bn_stats!r}, {self.train.batch_size})"
            )
        if self.data.shapes.layout == "centred" and "shapes:position" in self.probe.datasets:
            raise ValueError(
                "probe.datasets has 'shapes:position' but data.shapes.layout = 'centred' gives every glyph "
                "one position; probe it on a scattered layout or drop it"
            )
        self.method.check_run(self)
        self.regularizer.check_run(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with the user-facing key names (`lambda`, not `lam`), None values dropped."""
        return self.model_dump(by_alias=True, exclude_none=True)


def method_section(values: dict[str, Any] | None = None, **keys: Any) -> MethodSection:
    """The registered section for `name` (default simclr), validated: `method_section(name="byol")`."""
    return RunConfig.model_validate({"method": {**(values or {}), **keys}}).method


def regularizer_section(values: dict[str, Any] | None = None, **keys: Any) -> RegularizerSection:
    """The registered section for `kind` (default none), validated: `regularizer_section(kind="lbe", rho=0.3)`."""
    return RunConfig.model_validate({"regularizer": {**(values or {}), **keys}}).regularizer
