"""Run configuration: one frozen dataclass shared by the simulator, the launcher and the daemon.

Every field is also a command-line option (`--privacy-mode` for `privacy_mode`) and a TOML key
of the same name. Invariants are checked up front in `__post_init__`; a violation raises
`ConfigError` whose message is one sentence a user can act on.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from node.errors import ConfigError
from privacy.modes import has_formal_guarantee, secure_noise_applies

ModelName = Literal["logreg", "mlp", "cnn", "resnet10"]
MODELS: tuple[str, ...] = typing.get_args(ModelName)  # the built-in models (node.core.model.models)
# Named datasets (node.core.data); any other `dataset` is the path of one CSV or NPZ file that
# a simulated federation splits into its sites.
DATASETS: tuple[str, ...] = ("fashion-mnist", "synthetic", "breast-cancer", "kdd-attacks")
# A user's model: FILE.py:FUNC or package.module:FUNC (node.core.model.user_model).
USER_MODEL = re.compile(
    r"(?P<source>.+\.py|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<func>[A-Za-z_]\w*)")
ROBUST_MODES: tuple[str, ...] = ("off", "clip", "clip+screen")  # node.core.algorithm.robust
DEFAULT_GAMMA = 0.1  # DP-Norm's default denoising strength γ = α·η (docs/DESIGN.md §1)
PrivacyMode = Literal["gradient", "message"]  # node.core.mechanism.MECHANISMS
# The privacy modes each algorithm can run, its default first: D-PSGD sends its model, not
# duals, so only gradient noise protects it.
ALGORITHM_MODES: dict[str, tuple[PrivacyMode, ...]] = {
    "dpnorm": ("message", "gradient"), "ecl": ("message", "gradient"), "dpsgd": ("gradient",)}


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a federation computes (not where it runs)."""

    topology: str = "ring"
    nodes: int = 6
    rounds: int = 50
    algorithm: Literal["dpnorm", "ecl", "dpsgd"] = "dpnorm"
    epsilon: float = math.inf
    delta: float = 1e-5
    alpha: float | None = None
    gamma: float | None = None
    privacy_mode: PrivacyMode | None = None
    accept_no_guarantee: bool = False
    # The clipped, noise-free control: Poisson sampling and per-sample clipping, no noise and no
    # privacy claim — it measures what clipping alone costs, so privacy's cost is the rest.
    clip_only: bool = False
    # Floating-point-safe noise (privacy.discrete): the exact discrete Gaussian on an integer
    # grid, gradient mode only, with its own accountant (docs/PRIVACY.md, "Secure noise").
    secure_noise: bool = False
    local_steps: int = 1
    lr: float = 0.1
    eta: float | None = None
    theta: float = 1.0
    weight_decay: float = 0.0
    batch_size: int = 64
    clip: float = 1.0
    # A built-in name (MODELS) or a user's model, FILE.py:FUNC or package.module:FUNC.
    model: str = "cnn"
    # Swap a user's model's BatchNorm layers for GroupNorm (node.core.model.batchnorm): required for
    # one under per-sample clipping; without clipping BatchNorm is kept, its statistics local.
    fix_batchnorm: bool = False
    width: int | None = None
    # A named dataset (DATASETS) or one CSV/NPZ file split into the simulated sites.
    dataset: str = "fashion-mnist"
    # The label column of a CSV `dataset` (a daemon's own file names its own:
    # node.data_label_column).
    label_column: str = "label"
    # How a table's features are scaled (node.core.data.tables): site = on the node's own training
    # rows (no privacy claim only), public = a named table's published constants (a --dataset
    # file's own statistics, standing for its schema's), none = as given; auto = site without
    # DP, public with it (a user's file: as given).
    standardise: Literal["auto", "site", "public", "none"] = "auto"
    data_dir: str = "/usr/share/datasets/fashion-mnist"
    partition: str = "iid"
    examples_per_node: int | None = None
    # Public constants that fix the Poisson rate q before training (docs/PRIVACY.md): q itself,
    # or the node's public dataset size n̂ (then q = batch_size / n̂). Without either, a shard
    # of a public dataset declares its own size; a node's own file must declare one.
    sample_rate: float | None = None
    public_examples: int | None = None
    # The number of classes, a public constant; needed for a node's own file under DP (read
    # from its labels, one added row could change the model's size and so every message).
    classes: int | None = None
    test_examples: int | None = 2000
    # Experiments' tuning only (node.experiments.grid.tuning): hold out this fraction of every
    # node's shard (seeded) and evaluate on all nodes' held-out rows instead of the test split.
    validation_fraction: float = 0.0
    eval_every: int = 1
    primal_every: int = 5
    seed: int = 0
    noise_seed: int | None = None
    threads: int = 1
    # Where training, per-sample clipping and gradient noise run; messages leave as CPU tensors.
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    # The metric reports lead with: auto = AUROC for two classes, accuracy otherwise; auroc on a
    # multi-class task is the macro one-vs-rest AUROC.
    metric: Literal["auto", "accuracy", "auroc"] = "auto"
    # Messages on the wire: none, topk:F, randk:F (optionally :float16), int8 or int4, applied
    # after the DP noise (node.core.algorithm.compression).
    compress: str = "none"
    # Byzantine-robust aggregation of what neighbours send (node.core.algorithm.robust): off, clip
    # (self-centred clipping), clip+screen (clipping, scoring that shrinks a suspect's radius,
    # reporting).
    robust: str = "off"
    # A fixed clipping radius τ (inf = never clip); None: adaptive, robust_scale times the
    # lower median of the round's distances to the node's own reference.
    robust_radius: float | None = None
    robust_scale: float = 1.0

    def __post_init__(self) -> None:
        _check_types(self)
        positive_ints = ("nodes", "rounds", "local_steps", "batch_size", "eval_every", "threads")
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("lr", "clip", "delta"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive finite number, got {value}.")
        if not self.epsilon > 0:
            raise ConfigError(f"epsilon must be positive (or inf for no privacy), got "
                              f"{self.epsilon}.")
        if self.delta >= 1:
            raise ConfigError(f"delta must be below 1, got {self.delta}.")
        if self.eta is not None and not (self.eta > 0 and math.isfinite(self.eta)):
            raise ConfigError(f"eta must be a positive finite number, got {self.eta}.")
        if not 0 < self.theta <= 1:
            raise ConfigError(f"theta must be in (0, 1], got {self.theta}.")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be non-negative, got {self.weight_decay}.")
        if self.alpha is not None and self.gamma is not None:
            raise ConfigError("give either alpha or gamma (= alpha * eta), not both.")
        for name in ("alpha", "gamma"):
            value = getattr(self, name)
            if value is not None and not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a non-negative number, got {value}.")
        if self.gamma is not None and self.gamma >= 1:
            raise ConfigError(f"gamma = alpha*eta must be below 1 (keep it in [0, 0.5]), got "
                              f"{self.gamma}.")
        if self.algorithm == "ecl" and (self.alpha or self.gamma):
            raise ConfigError("algorithm ecl has no denoising (alpha = 0); use dpnorm to set "
                              "alpha or gamma.")
        if self.algorithm == "dpsgd" and (self.alpha or self.gamma):
            raise ConfigError("algorithm dpsgd has no dual variables, so alpha/gamma do not "
                              "apply.")
        if self.privacy_mode not in (None, *ALGORITHM_MODES[self.algorithm]):
            raise ConfigError(f"{self.algorithm} sends its model, not duals; use --privacy-mode "
                              "gradient.")
        if (self.private and not has_formal_guarantee(self.effective_privacy_mode,
                                                      self.local_steps)
                and not self.accept_no_guarantee):
            raise ConfigError(
                f"message-mode privacy has a formal guarantee only with local_steps = 1 (got "
                f"{self.local_steps}); use --local-steps 1, --privacy-mode gradient, or "
                "--accept-no-guarantee to run without a printed epsilon."
            )
        if self.clip_only and self.private:
            raise ConfigError("clip_only is the noise-free control; use it with epsilon = inf.")
        if self.secure_noise and not self.private:
            raise ConfigError("secure_noise changes how privacy noise is drawn; give a finite "
                              "epsilon (a run without privacy draws no noise).")
        if self.secure_noise and not secure_noise_applies(self.effective_privacy_mode):
            raise ConfigError("secure_noise covers gradient mode only (message mode's noise is "
                              "added to duals computed in floating point, which no integer "
                              "grid bound covers); use --privacy-mode gradient.")
        if self.examples_per_node is not None and self.examples_per_node < 1:
            raise ConfigError("examples_per_node must be at least 1.")
        if self.classes is not None and self.classes < 2:
            raise ConfigError(f"classes must be at least 2, got {self.classes}.")
        if self.public_examples is not None and self.public_examples < 1:
            raise ConfigError("public_examples must be at least 1.")
        if self.sample_rate is not None and not 0 < self.sample_rate <= 1:
            raise ConfigError(f"sample_rate must be in (0, 1], got {self.sample_rate}.")
        if self.test_examples is not None and self.test_examples < 1:
            raise ConfigError("test_examples must be at least 1.")
        if not 0 <= self.validation_fraction < 1:
            raise ConfigError(f"validation_fraction must be in [0, 1), got "
                              f"{self.validation_fraction}.")
        if self.primal_every < 0:
            raise ConfigError("primal_every must be 0 (never) or a positive number of rounds.")
        compress_spec(self.compress)
        if self.robust not in ROBUST_MODES:
            raise ConfigError(f"unknown robust mode {self.robust!r}; use off, clip or "
                              "clip+screen.")
        if self.robust_radius is not None and not self.robust_radius > 0:
            raise ConfigError(f"robust_radius must be a positive number (or inf), got "
                              f"{self.robust_radius}.")
        if not (self.robust_scale > 0 and math.isfinite(self.robust_scale)):
            raise ConfigError(f"robust_scale must be a positive finite number, got "
                              f"{self.robust_scale}.")
        if self.model not in MODELS and not USER_MODEL.fullmatch(self.model):
            raise ConfigError(f"unknown model {self.model!r}; use one of {', '.join(MODELS)}, "
                              "FILE.py:FUNC or package.module:FUNC.")
        if self.dataset not in DATASETS and not self.dataset.lower().endswith((".csv", ".npz")):
            raise ConfigError(f"unknown dataset {self.dataset!r}; use one of "
                              f"{', '.join(DATASETS)}, or a .csv or .npz file.")
        if self.standardise == "site" and self.private:
            raise ConfigError("standardise = site fits statistics on the node's private rows, "
                              "which epsilon does not cover; use auto, public or none in a "
                              "private run.")
        if not re.fullmatch(r"iid|dirichlet:[^:]+|classes:[^:]+|drift:[^:]+", self.partition):
            raise ConfigError(f"unknown partition {self.partition!r}; use iid, dirichlet:B, "
                              "classes:K or drift:FEATURE.")

    @property
    def private(self) -> bool:
        return math.isfinite(self.epsilon)

    @property
    def user_file(self) -> bool:
        """Whether `dataset` is a user's CSV/NPZ file rather than a named public dataset."""
        return self.dataset not in DATASETS

    @property
    def effective_privacy_mode(self) -> PrivacyMode:
        if self.privacy_mode is not None:
            return self.privacy_mode
        return ALGORITHM_MODES[self.algorithm][0]

    @property
    def effective_gamma(self) -> float | None:
        """γ unless α was given explicitly (then it depends on η, known only per graph)."""
        if self.algorithm != "dpnorm":
            return 0.0
        if self.alpha is not None:
            return None
        return DEFAULT_GAMMA if self.gamma is None else self.gamma

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["epsilon"] = None if math.isinf(self.epsilon) else self.epsilon
        return out


def run_config_from_mapping(values: Mapping[str, Any], base: RunConfig | None = None) -> RunConfig:
    """Build a RunConfig from TOML/CLI values, rejecting unknown keys with one sentence."""
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}; valid settings are "
                          f"{', '.join(sorted(known))}.")
    coerced = {k: coerce(RunConfig, k, v) for k, v in values.items()}
    return dataclasses.replace(base or RunConfig(), **coerced)


def coerce(cls: type, name: str, value: Any) -> Any:
    """Convert a string (from --set or argparse) or a TOML value to the field's declared type."""
    hints = typing.get_type_hints(cls)
    return _coerce_to(hints[name], name, value)


def _coerce_to(tp: Any, name: str, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and
                                                      value.lower() in ("none", "null", ""))):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce_to(inner[0], name, value)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, got "
                              f"{value!r}.")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{name} must be true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(f"{name} must be an integer, got {value!r}.")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {value!r}.") from None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{name} must be a number, got {value!r}.")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {value!r}.") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}.")
        return value
    return value


def _check_types(cfg: Any) -> None:
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        checked = _coerce_to(hints[f.name], f.name, value)
        if checked != value and not (isinstance(value, float) and math.isnan(value)):
            object.__setattr__(cfg, f.name, checked)


def compress_spec(text: str) -> tuple[str, float, str]:
    """(kind, fraction, value dtype) of a `compress` setting, or ConfigError in one sentence."""
    kind, _, rest = text.partition(":")
    fraction_text, _, dtype = rest.partition(":")
    if kind in ("topk", "randk") and fraction_text:
        try:
            fraction = float(fraction_text)
        except ValueError:
            fraction = math.nan
        if not 0 < fraction <= 1:
            raise ConfigError(f"{kind} fraction must be in (0, 1], got {fraction_text}.")
        if dtype in ("", "float32", "float16", "bfloat16"):
            return kind, fraction, dtype or "float32"
    elif kind in ("none", "int8", "int4") and not rest:
        return kind, 1.0, "float32"
    raise ConfigError(f"unknown compressor {text!r}; use none, topk:F, randk:F, int8 or int4.")
