"""``python -m privacy``: the calculator round-trips and refuses bad input with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privacy.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
GRADIENT = [
    "gradient",
    "--delta",
    "1e-5",
    "--rounds",
    "50",
    "--local-steps",
    "4",
    "--sample-rate",
    "0.02",
    "--json",
]
MESSAGE = [
    "message",
    "--delta",
    "1e-5",
    "--rounds",
    "200",
    "--batch-size",
    "20",
    "--n",
    "1000",
    "--clip",
    "1.0",
    "--lr",
    "0.05",
    "--alpha",
    "0.005",
    "--degree",
    "3",
    "--json",
]


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    status = main(args)
    out = capsys.readouterr().out
    return status, (json.loads(out) if status == 0 else {})


def test_gradient_mode_round_trips_epsilon_to_z_to_epsilon(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, forward = _run([GRADIENT[0], "--epsilon", "3", *GRADIENT[1:]], capsys)
    assert status == 0 and forward["steps"] == 200
    z = forward["noise_multiplier"]
    assert isinstance(z, float) and forward["epsilon"] <= 3.0  # type: ignore[operator]
    status, back = _run([GRADIENT[0], "--noise-multiplier", repr(z), *GRADIENT[1:]], capsys)
    assert status == 0 and back["epsilon"] == forward["epsilon"]
    assert back["epsilon"] <= back["epsilon_rdp"]  # type: ignore[operator]


def test_message_mode_round_trips_epsilon_to_sigma_to_epsilon(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, forward = _run([MESSAGE[0], "--epsilon", "2", *MESSAGE[1:]], capsys)
    assert status == 0 and forward["epsilon"] <= 2.0  # type: ignore[operator]
    sigma = forward["sigma"]
    status, back = _run([MESSAGE[0], "--sigma", repr(sigma), *MESSAGE[1:]], capsys)
    assert status == 0
    assert back["epsilon"] == pytest.approx(forward["epsilon"], rel=1e-9)


def test_message_mode_with_several_local_steps_prints_no_number(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, result = _run(
        [MESSAGE[0], "--sigma", "0.01", *MESSAGE[1:], "--local-steps", "2"], capsys
    )
    assert status == 0 and result["epsilon"] is None
    assert main([MESSAGE[0], "--sigma", "0.01", *MESSAGE[1:-1], "--local-steps", "2"]) == 0
    assert "no formal guarantee" in capsys.readouterr().out
    assert main([MESSAGE[0], "--epsilon", "1", *MESSAGE[1:], "--local-steps", "2"]) == 2


def test_text_output_carries_the_privacy_statement(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([GRADIENT[0], "--noise-multiplier", "1.0", *GRADIENT[1:-1]]) == 0
    text = capsys.readouterr().out
    for phrase in (
        "Unit of privacy",
        "Adversary",
        "eavesdropper",
        "Not protected",
        "node-level",
        "timing",
        "floating-point",
    ):
        assert phrase in text


@pytest.mark.parametrize(
    "bad",
    [
        ["--epsilon", "0"],
        ["--epsilon", "-2"],
        ["--epsilon", "nan"],
        ["--epsilon", "1", "--delta", "0.01", "--n", "500"],
        ["--epsilon", "1", "--delta", "1.5"],
        ["--epsilon", "1e-9", "--sample-rate", "1.0"],
        ["--noise-multiplier", "-1"],
        ["--epsilon", "1", "--sample-rate", "0"],
    ],
)
def test_bad_input_exits_2_with_one_sentence(
    bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [GRADIENT[0], *GRADIENT[1:]]
    for flag, value in zip(bad[::2], bad[1::2], strict=True):  # later flags override the defaults
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_bad_clip_in_message_mode_and_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [MESSAGE[0], "--epsilon", "1", *MESSAGE[1:]]
    args[args.index("--clip") + 1] = "0"
    assert main(args) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit) as info:
        main(["gradient", "--epsilon", "x"])
    assert info.value.code == 2 and capsys.readouterr().err.count("\n") == 1
