"""Command-line options shared by `scripts/simulate.py` and `scripts/launch_local.py`.

Each RunConfig field is an option spelt with dashes (`privacy_mode` → `--privacy-mode`); values
are parsed by the config's own coercion so the CLI, TOML and `--set` accept the same things.
Bad input becomes one sentence on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from node.config import RunConfig, run_config_from_mapping
from node.errors import USER_ERRORS, ConfigError

T = TypeVar("T")

HELP = {
    "topology": "ring, mesh, torus, star, line, random-regular:D, erdos-renyi:P, "
                "small-world:K:P, exponential or file:PATH",
    "algorithm": "dpnorm (DP-Norm), ecl (ECL / DP-ECL, no denoising) or dpsgd (D-PSGD)",
    "epsilon": "privacy budget per node; inf = no DP",
    "delta": "the δ of (ε, δ)-DP; must be below 1/n for every node",
    "alpha": "dual regularisation α (0 = no denoising); default γ = α·η = 0.1 for dpnorm",
    "gamma": "dimensionless denoising strength γ = α·η (alternative to --alpha)",
    "privacy_mode": "gradient (DP-SGD noise) or message (noise on each dual; needs K = 1)",
    "accept_no_guarantee": "run message mode with K > 1 (epsilon is then reported as null)",
    "secure_noise": "draw gradient noise with OpenDP's exact discrete Gaussian on an integer "
                    "grid (floating-point safe; gradient mode; needs pip install opendp)",
    "local_steps": "local steps K per round",
    "clip_only": "clipped, noise-free control: per-sample clipping, no noise, no privacy",
    "model": "logreg, mlp, cnn, resnet10, or your own: FILE.py:FUNC or package.module:FUNC "
             "with FUNC(in_shape, num_classes) -> torch.nn.Module",
    "fix_batchnorm": "swap the model's BatchNorm layers for GroupNorm (needed under DP or "
                     "--clip-only; without clipping BatchNorm is kept, its statistics local)",
    "dataset": "fashion-mnist, synthetic, breast-cancer, kdd-attacks, or one FILE.csv / "
               "FILE.npz split into the simulated sites",
    "label_column": "the label column of a --dataset CSV file",
    "standardise": "how table features are scaled: auto, site (own rows; no DP only), public "
                   "(a named table's published constants; a --dataset file's whole-file "
                   "statistics, standing for its schema's) or none",
    "device": "auto, cpu or cuda: where training, clipping and gradient noise run",
    "metric": "auto (AUROC for two classes, else accuracy), accuracy, or auroc (macro "
              "one-vs-rest for more classes)",
    "partition": "iid, dirichlet:B, classes:K or drift:FEATURE (a table's feature drift)",
    "examples_per_node": "cap each node's shard (data-scarce experiments)",
    "sample_rate": "Poisson sampling rate q, a public constant (default batch_size / n̂)",
    "public_examples": "public size n̂ of each node's training set, fixing q = batch_size / n̂ "
                       "(required for a node's own data file under DP)",
    "classes": "number of classes, public (required for a node's own data file under DP)",
    "test_examples": "evaluate on this many test examples (none = all)",
    "validation_fraction": "tuning only: hold out this fraction of each shard and evaluate on "
                           "the held-out rows of all nodes instead of the test split",
    "primal_every": "send the primal for consensus monitoring every P rounds (0 = never)",
    "noise_seed": "fixed seed for the DP noise (experiments only; default OS entropy)",
    "threads": "torch threads per node process",
    "compress": "none, topk:F or randk:F (F in (0, 1]; add :float16 for half-precision values), "
                "int8 or int4: compressed messages with error feedback, after the DP noise",
    "robust": "off, clip (clip each neighbour's message to a radius around what the node "
              "expects from its own state) or clip+screen (also score neighbours that stand "
              "out, shrink their radius and report suspects)",
    "robust_radius": "fixed clipping radius τ (inf = never clip; default adaptive: "
                     "robust_scale x the lower median of the neighbours' and its own distances)",
    "robust_scale": "adaptive radius factor c in τ = c x lower median distance",
}


class OneSentenceParser(argparse.ArgumentParser):
    """argparse whose errors are one sentence and exit 2, like every other bad-input error,
    rather than the usage dump."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message}; see --help.")


def add_run_options(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    hints = typing.get_type_hints(RunConfig)
    defaults = RunConfig()
    for f in dataclasses.fields(RunConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        text = HELP.get(f.name, "")
        text = f"{text} (default {default})" if text else f"default {default}"
        if hints[f.name] is bool:
            parser.add_argument(flag, dest=f.name, action="store_const", const=True,
                                default=None, help=text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(),
                                help=text)


def run_config_from_args(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    names = {f.name for f in dataclasses.fields(RunConfig)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return run_config_from_mapping(given, base)


def fail(message: str) -> NoReturn:
    """Print one sentence to stderr and exit 2."""
    text = message.strip()
    sys.stderr.write(f"error: {text}\n")
    raise SystemExit(2)


def guarded(fn: Callable[[], T]) -> T:
    """Run `fn`, turning user errors into one sentence and exit 2."""
    try:
        return fn()
    except USER_ERRORS as exc:
        fail(str(exc))


def parse_set_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """`--set key=value` pairs as a mapping (values stay strings; the config coerces them)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}.")
        out[key.strip()] = value.strip()
    return out
