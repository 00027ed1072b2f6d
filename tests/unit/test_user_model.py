"""Users' models (node.core.model.user_model via build_model): loading FILE.py:FUNC and
package.module:FUNC, and the one-sentence refusals of models DP training cannot run as claimed."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from node.core.model import (
    FlatParams,
    absolute_spec,
    build_model,
    is_package_model,
    is_user_model,
    num_params,
)
from node.core.model.models import flatten
from node.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
IMAGE = (1, 28, 28)
HEADER = "import torch\nfrom torch import nn\n\n"


def model_file(tmp_path: Path, body: str, name: str = "net.py") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body), encoding="utf-8")
    return path


def build(spec: str | Path, in_shape: tuple[int, ...] = IMAGE, num_classes: int = 10,
          seed: int = 0) -> torch.nn.Module:
    return build_model(str(spec), in_shape=in_shape, num_classes=num_classes, seed=seed)


def refusal(spec: str | Path, in_shape: tuple[int, ...] = IMAGE) -> str:
    with pytest.raises(ConfigError) as info:
        build(spec, in_shape)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".")
    return message


GROUPNORM = """
    def build(in_shape, num_classes):
        c, h, w = in_shape
        return nn.Sequential(nn.Conv2d(c, 4, 3, stride=2, padding=1), nn.GroupNorm(2, 4),
                             nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, num_classes))
"""


def test_a_groupnorm_model_is_built_and_trains_per_sample(tmp_path: Path) -> None:
    path = model_file(tmp_path, GROUPNORM)
    model = build(f"{path}:build")
    assert model(torch.randn(3, *IMAGE)).shape == (3, 10)
    assert num_params(f"{path}:build", in_shape=IMAGE, num_classes=10) == \
        FlatParams.of(model).numel == 4 * 9 + 4 + 8 + 4 * 14 * 14 * 10 + 10


def test_the_shipped_examples_pass_and_the_batchnorm_one_is_refused() -> None:
    assert build(ROOT / "examples/models.py:resnet_gn")(torch.randn(2, *IMAGE)).shape == (2, 10)
    assert build(ROOT / "examples/models.py:table_mlp", (30,), 2)(torch.randn(2, 30)).shape == \
        (2, 2)
    message = refusal(f"{ROOT / 'examples/bad_models.py'}:batchnorm_cnn")
    assert "layer `features.1` is BatchNorm2d, which mixes examples within a batch and breaks " \
           "per-sample clipping; pass --fix-batchnorm to swap it for nn.GroupNorm(8, 8), or " \
           "use GroupNorm in the model." in message


def test_a_nested_batchnorm_is_named_by_its_path(tmp_path: Path) -> None:
    path = model_file(tmp_path, """
        class Net(nn.Module):
            def __init__(self, d, k):
                super().__init__()
                self.body = nn.Sequential(nn.Linear(d, 6), nn.Sequential(nn.BatchNorm1d(6)))
                self.head = nn.Linear(6, k)
            def forward(self, x):
                return self.head(self.body(x))
        def build(in_shape, num_classes):
            return Net(in_shape[0], num_classes)
    """)
    message = refusal(f"{path}:build", (5,))
    assert "layer `body.1.0` is BatchNorm1d" in message and "nn.GroupNorm(3, 6)" in message


def test_instancenorm_is_refused_only_with_running_statistics(tmp_path: Path) -> None:
    path = model_file(tmp_path, """
        def build(in_shape, num_classes, running=True):
            c, h, w = in_shape
            return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1),
                                 nn.InstanceNorm2d(4, affine=True, track_running_stats=running),
                                 nn.Flatten(), nn.Linear(4 * h * w, num_classes))
        def without(in_shape, num_classes):
            return build(in_shape, num_classes, running=False)
    """)
    message = refusal(f"{path}:build")
    assert "layer `1` is InstanceNorm2d with running statistics" in message
    assert "track_running_stats=False" in message
    assert build(f"{path}:without")(torch.randn(2, *IMAGE)).shape == (2, 10)


def test_a_buffer_is_refused_by_name(tmp_path: Path) -> None:
    path = model_file(tmp_path, """
        class Scaled(nn.Module):
            def __init__(self, d, k):
                super().__init__()
                self.lin = nn.Linear(d, k)
                self.lin.register_buffer("scale", torch.ones(k))
            def forward(self, x):
                return self.lin(x) * self.lin.scale
        def build(in_shape, num_classes):
            return Scaled(in_shape[0], num_classes)
    """)
    message = refusal(f"{path}:build", (5,))
    assert "`lin.scale` is a buffer" in message and "messages carry only parameters" in message


def test_parameters_must_exist_and_all_be_trainable(tmp_path: Path) -> None:
    path = model_file(tmp_path, """
        def empty(in_shape, num_classes):
            return nn.Flatten()
        def frozen(in_shape, num_classes):
            model = nn.Sequential(nn.Linear(in_shape[0], 4), nn.Linear(4, num_classes))
            model[0].weight.requires_grad_(False)
            return model
    """)
    assert "has no trainable parameters" in refusal(f"{path}:empty", (5,))
    assert "parameter `0.weight` has requires_grad=False" in refusal(f"{path}:frozen", (5,))


def test_outputs_must_be_logits_of_the_right_shape(tmp_path: Path) -> None:
    path = model_file(tmp_path, """
        def wide(in_shape, num_classes):
            return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes + 1))
        def pair(in_shape, num_classes):
            class Pair(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.lin = nn.Linear(784, num_classes)
                def forward(self, x):
                    return self.lin(x.flatten(1)), x
            return Pair()
        def wrong_input(in_shape, num_classes):
            return nn.Linear(3, num_classes)
    """)
    message = refusal(f"{path}:wide")
    assert "gives outputs of shape (2, 11)" in message and "logits of shape (2, 10)" in message
    assert "returned a tuple from forward()" in refusal(f"{path}:pair")
    message = refusal(f"{path}:wrong_input")
    assert "failed on a batch of 2 inputs of shape (1, 28, 28): RuntimeError:" in message


def test_per_sample_gradients_must_work_and_be_finite(tmp_path: Path) -> None:
    path = model_file(tmp_path, """
        class Item(nn.Module):
            def __init__(self, d, k):
                super().__init__()
                self.lin = nn.Linear(d, k)
            def forward(self, x):
                return self.lin(x) * float(x.sum().item() > 0)
        class Log(nn.Module):
            def __init__(self, d, k):
                super().__init__()
                self.lin = nn.Linear(d, k)
            def forward(self, x):
                return torch.log(self.lin(x) - 1e6)
        class Fresh(Item):
            def forward(self, x):
                out = torch.zeros(x.shape[0], self.lin.out_features)
                out += self.lin(x)
                return out
        def item(in_shape, num_classes):
            return Item(in_shape[0], num_classes)
        def fresh(in_shape, num_classes):
            return Fresh(in_shape[0], num_classes)
        def log(in_shape, num_classes):
            return Log(in_shape[0], num_classes)
    """)
    message = refusal(f"{path}:item", (5,))
    assert message.startswith(f"per-sample gradients of model {path}:item failed with ")
    assert ".item()" in message and "torch.func.vmap" in message
    # An ordinary forward pass works; only the per-sample one (a batch of one) does not.
    assert "failed with RuntimeError: output with shape" in refusal(f"{path}:fresh", (5,))
    assert "non-finite loss or per-sample gradient" in refusal(f"{path}:log", (5,))


def test_loading_errors_are_one_sentence(tmp_path: Path) -> None:
    path = model_file(tmp_path, """
        answer = 42
        def raises(in_shape, num_classes):
            raise ValueError("needs three channels\\nsecond line")
        def listed(in_shape, num_classes):
            return [nn.Linear(3, 3)]
    """)
    assert refusal(tmp_path / "missing.py:build") == \
        f"model file {tmp_path / 'missing.py'} does not exist."
    assert refusal(f"{path}:build") == f"{path} has no function build."
    assert refusal(f"{path}:answer") == f"{path}:answer is not a function (its type is int)."
    assert refusal(f"{path}:raises") == \
        f"{path}:raises((1, 28, 28), 10) raised ValueError: needs three channels."
    assert refusal(f"{path}:listed") == f"{path}:listed returned a list, not a torch.nn.Module."
    broken = model_file(tmp_path, "x = 1 / 0\n", name="broken.py")
    assert refusal(f"{broken}:build") == \
        f"importing model file {broken} failed with ZeroDivisionError: division by zero."
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def build(:\n", encoding="utf-8")
    assert refusal(f"{syntax}:build").startswith(f"importing model file {syntax} failed with "
                                                 "SyntaxError:")
    assert "cannot be found" in refusal("no_such_package.net:build")


def test_relative_files_and_packages_resolve_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    model_file(package, GROUPNORM, name="nets.py")
    monkeypatch.chdir(tmp_path)
    assert FlatParams.of(build("userpkg/nets.py:build")).numel == \
        FlatParams.of(build("userpkg.nets:build")).numel
    assert absolute_spec("userpkg/nets.py:build") == f"{package / 'nets.py'}:build"
    assert absolute_spec("userpkg.nets:build") == "userpkg.nets:build"
    assert absolute_spec("cnn") == "cnn"
    assert is_package_model("userpkg.nets:build") and not is_package_model("a/b.py:build")
    assert is_user_model("a/b.py:build") and not is_user_model("mlp")
    # Importing the repository's examples as a package works the same way.
    monkeypatch.chdir(ROOT)
    assert build("examples.models:table_mlp", (30,), 2)(torch.randn(4, 30)).shape == (4, 2)


def test_the_seed_fixes_the_initial_parameters_and_the_global_rng_is_untouched(
    tmp_path: Path,
) -> None:
    path = model_file(tmp_path, """
        def build(in_shape, num_classes):
            return nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.Dropout(0.5),
                                 nn.Linear(8, num_classes))
    """)
    spec = f"{path}:build"
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = flatten(build(spec, seed=7))
    assert torch.equal(torch.rand(3), expected)  # building did not consume the caller's RNG
    assert torch.equal(first, flatten(build(spec, seed=7)))
    assert not torch.equal(first, flatten(build(spec, seed=8)))
