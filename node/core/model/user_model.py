"""A user's own model, `FILE.py:FUNC` or `package.module:FUNC` (RunConfig.model), loaded and
checked before any node starts.

FUNC(in_shape, num_classes) returns a `torch.nn.Module` mapping a batch (B, *in_shape) to
logits (B, num_classes). The system trains it as it trains the built-in models
(node.core.model.models), so the same rules hold, and `check_model_for_dp` refuses, with one
sentence, a model breaking one: no BatchNorm under per-sample clipping (its batch statistics
mix examples; without clipping it is kept with node-local statistics, and `--fix-batchnorm`
swaps it for GroupNorm: node.core.model.batchnorm), no other buffers (messages carry only
parameters, so a buffer would silently differ between nodes), every parameter trainable (every
one is trained and sent), logits of the right shape, and per-sample gradients
(`torch.func.vmap` over `torch.func.grad`, as the private gradient oracles take them) that work
and are finite.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from node.config import MODELS, USER_MODEL
from node.core.model.batchnorm import BatchNormUse, has_local_batchnorm, refusal
from node.errors import ConfigError
from privacy.mechanisms import clipped_grad_sum

__all__ = [
    "ModelFn",
    "absolute_spec",
    "build_user_model",
    "check_model_for_dp",
    "is_package_model",
    "is_user_model",
    "load_user_model",
]

ModelFn = Callable[[tuple[int, ...], int], nn.Module]

# Dummy examples for the checks: a batch (not one example), small enough that the forward and
# per-sample backward of any reasonable model cost milliseconds.
_CHECK_BATCH = 2
_HINT = ("per-sample gradients need a forward() that torch.func.vmap can trace: no .item() or "
         ".numpy(), no Python `if` on tensor values, and no in-place writes into tensors made "
         "inside forward() (as in `out = torch.zeros(...); out += y`)")


def is_user_model(name: str) -> bool:
    return name not in MODELS and USER_MODEL.fullmatch(name) is not None


def is_package_model(name: str) -> bool:
    """A `package.module:FUNC` model (imported from sys.path, not from a file's path)."""
    return is_user_model(name) and not name.rsplit(":", 1)[0].endswith(".py")


def absolute_spec(spec: str) -> str:
    """`FILE.py:FUNC` with FILE made absolute (against the current directory), so that a
    process started elsewhere finds the same file; anything else unchanged."""
    match = USER_MODEL.fullmatch(spec)
    if spec in MODELS or match is None or not match["source"].endswith(".py"):
        return spec
    return f"{_resolve(match['source'])}:{match['func']}"


def load_user_model(spec: str) -> ModelFn:
    """Import FILE.py (by path) or package.module and return its FUNC; `ConfigError` if the
    file, module or function is missing or the import fails."""
    match = USER_MODEL.fullmatch(spec)
    if spec in MODELS or match is None:
        raise ConfigError(f"model {spec!r} is not FILE.py:FUNC or package.module:FUNC.")
    source, name = match["source"], match["func"]
    module = _import_file(source) if source.endswith(".py") else _import_module(source)
    func = getattr(module, name, None)
    if func is None:
        raise ConfigError(f"{source} has no function {name}.")
    if not callable(func):
        raise ConfigError(f"{source}:{name} is not a function (its type is "
                          f"{type(func).__name__}).")
    fn: ModelFn = func
    return fn


def build_user_model(func: ModelFn, spec: str, in_shape: tuple[int, ...],
                     num_classes: int) -> nn.Module:
    """`func(in_shape, num_classes)` (loaded from `spec`), which must return an nn.Module; the
    rules are `check_model_for_dp`'s, the seeding the caller's."""
    try:
        model = func(tuple(in_shape), num_classes)
    except Exception as exc:
        raise ConfigError(f"{spec}({tuple(in_shape)}, {num_classes}) raised "
                          f"{_describe(exc)}.") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module.")
    return model


def check_model_for_dp(model: nn.Module, in_shape: tuple[int, ...], num_classes: int, *,
                       name: str = "the model", batchnorm: BatchNormUse = "refuse") -> None:
    """Refuse (`ConfigError`, one sentence) a model the private training cannot run as
    claimed; see the module docstring. `batchnorm` "local" keeps BatchNorm layers (a run that
    clips nothing); the model's buffers and the global torch RNG are left untouched."""
    local = batchnorm == "local"
    _check_layers(model, name, local)
    _check_parameters(model, name)
    # fork_rng: dropout in the user's forward() must not move the caller's RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x = torch.randn(_CHECK_BATCH, *in_shape)
        y = torch.arange(_CHECK_BATCH) % num_classes
        params = {k: v.detach() for k, v in model.named_parameters()}
        # A BatchNorm in training mode updates its running statistics on every forward: the
        # dummy batch must not leave them in the model every node starts from.
        kept = {k: v.clone() for k, v in model.named_buffers()}
        try:
            _check_logits(model, params, x, in_shape, num_classes, name)
            # Kept BatchNorm means plain mini-batch gradients: none is taken per sample.
            if not (local and has_local_batchnorm(model)):
                _check_per_sample_gradients(model, params, x, y, name)
        finally:
            for path, value in kept.items():
                model.get_buffer(path).copy_(value)


def _check_layers(model: nn.Module, name: str, local_batchnorm: bool) -> None:
    own = set()  # the running statistics of kept BatchNorm layers: node-local, never sent
    for path, module in model.named_modules():
        where = f"layer `{path}`" if path else "its top module"
        kind = type(module).__name__
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not local_batchnorm:
                raise ConfigError(refusal(name, path, module))
            own |= {f"{path}.{b}" if path else b for b, _ in module.named_buffers()}
        if (isinstance(module, nn.modules.instancenorm._InstanceNorm)
                and module.track_running_stats):
            raise ConfigError(f"in model {name}, {where} is {kind} with running statistics, "
                              "which average over examples and are not parameters; pass "
                              "track_running_stats=False or use GroupNorm.")
    for path, _ in model.named_buffers():
        if path in own:
            continue
        raise ConfigError(f"in model {name}, `{path}` is a buffer, but a model's whole state "
                          "must be its parameters (messages carry only parameters); compute it "
                          "in forward() or keep it as a plain tensor attribute.")


def _check_parameters(model: nn.Module, name: str) -> None:
    params = list(model.named_parameters())
    if not params:
        raise ConfigError(f"model {name} has no trainable parameters.")
    for path, p in params:
        if not p.requires_grad:
            # Every parameter is in the flat vector that is trained and sent; a frozen one
            # would be trained anyway.
            raise ConfigError(f"in model {name}, parameter `{path}` has requires_grad=False, "
                              "but every parameter is trained; keep a frozen tensor as a "
                              "plain attribute instead.")
        if not p.is_floating_point():
            raise ConfigError(f"in model {name}, parameter `{path}` is {p.dtype}, not a "
                              "floating-point tensor.")


def _check_logits(model: nn.Module, params: Mapping[str, Tensor], x: Tensor,
                  in_shape: tuple[int, ...], num_classes: int, name: str) -> None:
    try:
        with torch.no_grad():
            out = functional_call(model, dict(params), (x,))
    except Exception as exc:
        raise ConfigError(f"model {name} failed on a batch of {_CHECK_BATCH} inputs of shape "
                          f"{tuple(in_shape)}: {_describe(exc, first_sentence=True)}.") from None
    want = (_CHECK_BATCH, num_classes)
    if not isinstance(out, Tensor):
        raise ConfigError(f"model {name} returned a {type(out).__name__} from forward(), not a "
                          f"tensor of logits of shape {want}.")
    if tuple(out.shape) != want or not out.is_floating_point():
        raise ConfigError(f"model {name} gives outputs of shape {tuple(out.shape)} "
                          f"({out.dtype}) for {_CHECK_BATCH} inputs of shape {tuple(in_shape)}; "
                          f"it must give floating-point logits of shape {want}.")


def _check_per_sample_gradients(model: nn.Module, params: Mapping[str, Tensor], x: Tensor,
                                y: Tensor, name: str) -> None:
    # The same per-sample pattern as the private gradient oracles (node.core.model.trainer).
    def mean_loss(p: Mapping[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, dict(p), (xb,)), yb)

    try:
        total, losses, dropped = clipped_grad_sum(mean_loss, params, x, y, clip=1.0)
    except Exception as exc:
        raise ConfigError(f"per-sample gradients of model {name} failed with "
                          f"{_describe(exc, first_sentence=True)}; {_HINT}.") from None
    if dropped or not bool(torch.isfinite(total).all()) or not bool(torch.isfinite(losses).all()):
        raise ConfigError(f"model {name} gives a non-finite loss or per-sample gradient on "
                          "standard-normal inputs; check forward() for log, sqrt or division "
                          "of values that can be zero or negative.")


def _describe(exc: BaseException, *, first_sentence: bool = False) -> str:
    """`Type: first line of the message` (or only its first sentence: torch's errors run to
    several), for a sentence without the traceback."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    text = lines[0].strip()
    if first_sentence and ". " in text:
        text = text[: text.index(". ")]
    return f"{type(exc).__name__}: {text.rstrip('.')}"


def _resolve(source: str) -> Path:
    path = Path(source).expanduser()
    return path if path.is_absolute() else Path.cwd() / path


def _import_file(source: str) -> ModuleType:
    path = _resolve(source)
    if not path.is_file():
        raise ConfigError(f"model file {source} does not exist.")
    # One module name per file, so that two users' models.py never replace each other.
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    module_name = f"dpnorm_user_model_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"model file {source} cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs, as for any import: dataclasses and typing look it up there.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise ConfigError(f"importing model file {source} failed with "
                          f"{_describe(exc)}.") from None
    return module


def _import_module(source: str) -> ModuleType:
    # As with `python -m`, a package in the current directory is importable; appended, so it
    # never shadows an installed module.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (source == exc.name or source.startswith(exc.name + ".")):
            raise ConfigError(f"model module {source} cannot be found; run from the directory "
                              "that holds its package or add that directory to "
                              "PYTHONPATH.") from None
        raise ConfigError(f"importing model module {source} failed with "
                          f"{_describe(exc)}.") from None
    except Exception as exc:
        raise ConfigError(f"importing model module {source} failed with "
                          f"{_describe(exc)}.") from None
