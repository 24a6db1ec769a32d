"""The report's vocabulary: formats, metrics and the config keys it reads (data set order, names and chance
levels come from the data set records, mimcli.config.datasets).

Method and regulariser order, labels and the keys each reads come from their config sections (registry order).
"""

from __future__ import annotations

FORMATS = ("table", "markdown", "json", "csv")
METRICS = {
    "acc_best_test": "best test accuracy over the probe's epochs (the paper's number, selected on the test set)",
    "acc_val_selected": "test accuracy at the epoch chosen on a held-out 10% of the train split (honest)",
}
COMPARE = ("paper", "report")
RECORD_FIELDS = (
    "run",
    "model",
    "method",
    "regularizer",
    "lambda",
    "epochs",
    "seed",
    "dataset",
    "task",
    "metric",
    "value",
    "protocol",
    "layers",
    "features",
)
MEAN = "transfer mean"
DAGGER = "†"
PLOTS_HINT = "plots need matplotlib: pip install 'matplotlib>=3.8'"

# Config keys that never split runs into different rows: names, paths and execution details.
IGNORED_KEYS = (
    "run.",
    "probe.",
    "train.seed",
    "train.device",
    "train.threads",
    "train.log",
    "train.print_every",
    "train.compile",
    "train.channels_last",
    "train.precision",
    "train.save_epochs",
    "data.download",
    "train.diagnostics_every",
    "train.diagnostics_images",
    "train.grad_norm_steps",
)
MODEL_PROTOCOL = ("model.backbone", "model.width", "model.stem", "data.image_size")
LAMBDA = "regularizer.lambda"
EPOCHS = "train.epochs"
