"""Compressors, public copies and the --compress setting (node.core.algorithm.compression)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gossip.codec import decode, encode
from gossip.messages import Dual, Quantized, Seeded, Sparse
from node.config import RunConfig, compress_spec
from node.core.algorithm import make_compressor
from node.core.algorithm.compression import (
    RESET_EVERY,
    Exchange,
    Quantize,
    RandK,
    TopK,
    apply,
    kept,
    random_indices,
)
from node.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
ALL = [TopK(0.1), TopK(0.1, "float16"), TopK(0.1, "bfloat16"), RandK(0.2), RandK(0.2, "float16"),
       Quantize(8), Quantize(4)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("compressor", ALL, ids=repr)
def test_sender_and_receiver_copies_stay_bit_identical_through_the_codec(compressor: object
                                                                        ) -> None:
    g = gen(1)
    d = 97  # odd: int4's padding nibble
    sender, receiver = torch.zeros(d), torch.zeros(d)
    for t in range(20):
        target = torch.randn(d, generator=g) * (1 + t)
        p = compressor.pack(target, sender, g)  # type: ignore[attr-defined]
        apply(sender, p)
        wire = decode(encode(Dual(0, t, t, p)), expected_dim=d)
        assert isinstance(wire, Dual) and wire.payload == p
        apply(receiver, wire.payload)  # type: ignore[arg-type]
        assert torch.equal(sender, receiver)


def test_topk_keeps_the_largest_changes_and_writes_the_new_values() -> None:
    copy = torch.zeros(10)
    target = torch.tensor([0.1, -5.0, 0.2, 3.0, 0.0, 0.0, -0.3, 0.0, 4.0, 0.0])
    p = TopK(0.3).pack(target, copy, gen())
    assert isinstance(p, Sparse)
    assert p.indices.tolist() == [1, 3, 8]
    assert p.values.tolist() == [-5.0, 3.0, 4.0]
    apply(copy, p)
    assert copy.tolist() == [0, -5.0, 0, 3.0, 0, 0, 0, 0, 4.0, 0]


def test_topk_is_a_contraction_by_at_least_k_over_d() -> None:
    g = gen(2)
    for _ in range(20):
        x = torch.randn(200, generator=g)
        copy = torch.zeros(200)
        apply(copy, TopK(0.1).pack(x, torch.zeros(200), g))
        assert float((x - copy).pow(2).sum()) <= (1 - 0.1) * float(x.pow(2).sum())


def test_random_indices_are_distinct_in_range_reproducible_and_uniform() -> None:
    d, k = 50, 5
    counts = np.zeros(d)
    for seed in range(4000):
        idx = random_indices(d, k, seed)
        assert len(set(idx.tolist())) == k and int(idx.min()) >= 0 and int(idx.max()) < d
        counts[idx.numpy()] += 1
    assert torch.equal(random_indices(d, k, 7), random_indices(d, k, 7))
    assert not torch.equal(random_indices(d, k, 7), random_indices(d, k, 8))
    expected = 4000 * k / d  # 400 per coordinate; binomial sd about 19
    assert np.abs(counts - expected).max() < 6 * math.sqrt(expected)
    assert sorted(random_indices(d, d, 3).tolist()) == list(range(d))
    assert random_indices(1, 1, 5).tolist() == [0]


@pytest.mark.parametrize("bits", [8, 4])
def test_stochastic_quantisation_is_unbiased_and_within_one_step(bits: int) -> None:
    g = gen(3)
    delta = torch.randn(64, generator=g)
    total = torch.zeros(64)
    trials = 3000
    for _ in range(trials):
        p = Quantize(bits).pack(delta, torch.zeros(64), g)  # type: ignore[arg-type]
        assert isinstance(p, Quantized)
        level = 127 if bits == 8 else 7
        assert int(np.abs(p.codes.astype(int)).max()) <= level
        back = torch.zeros(64)
        apply(back, p)
        assert float((back - delta).abs().max()) <= p.scale * 1.0001
        total += back
    scale = float(delta.abs().max()) / (127 if bits == 8 else 7)
    # The mean of `trials` draws, each within one step: its sd is below scale/(2·√trials).
    assert float((total / trials - delta).abs().max()) < 5 * scale / (2 * math.sqrt(trials))


def test_float16_values_are_rounded_before_they_enter_the_copy() -> None:
    target = torch.tensor([1.0001, 2.0, 3.0, 1e-3])
    p = TopK(1.0, "float16").pack(target, torch.zeros(4), gen())
    assert isinstance(p, Sparse) and p.value_dtype == "float16"
    np.testing.assert_array_equal(p.values, target.numpy().astype(np.float16).astype(np.float32))
    huge = TopK(1.0, "float16").pack(torch.tensor([1e6, 1.0]), torch.zeros(2), gen())
    assert huge.value_dtype == "float32"  # type: ignore[union-attr]


def test_the_bytes_shrink_as_promised() -> None:
    d = 10_000
    x = torch.randn(d)
    sizes = {}
    for name, c in {"topk": TopK(0.05, "float16"), "randk": RandK(0.05, "float16"),
                    "int8": Quantize(8), "int4": Quantize(4)}.items():
        frames = encode(Dual(0, 0, 0, c.pack(x, torch.zeros(d), gen())))
        sizes[name] = sum(memoryview(f).nbytes for f in frames)
    dense = sum(memoryview(f).nbytes for f in encode(Dual(0, 0, 0, x.numpy())))
    assert dense > 40_000
    assert sizes["topk"] < 500 * 6 + 200 and sizes["randk"] < 500 * 2 + 200
    assert sizes["int8"] < d + 200 and sizes["int4"] < d // 2 + 200


# ---- streams -------------------------------------------------------------------------------


def pair(compressor: object) -> tuple[Exchange, Exchange]:
    a = Exchange([1], 20, compressor, gen(4))  # type: ignore[arg-type]
    b = Exchange([0], 20, compressor, gen(5))  # type: ignore[arg-type]
    return a, b


def test_a_stream_starts_with_a_reset_and_resets_periodically() -> None:
    a, b = pair(TopK(0.1))
    resets = []
    for t in range(2 * RESET_EVERY + 1):
        p = a.send({1: torch.randn(20)})[1]
        resets.append(p.reset)
        heard = b.receive({0: p})
        a.receive({1: b.send({0: torch.zeros(20)})[0]})
        assert torch.equal(heard[0], a.sent_copy(1)), t
    assert [t for t, r in enumerate(resets) if r] == [0, RESET_EVERY, 2 * RESET_EVERY]


def test_a_lost_message_desynchronises_until_the_next_reset() -> None:
    a, b = pair(Quantize(8))
    b.receive({0: a.send({1: torch.randn(20)})[1]})  # reset: in sync
    a.receive({})
    a.send({1: torch.randn(20)})  # lost
    a.receive({})
    assert b.receive({}) == {}
    p = a.send({1: torch.randn(20)})[1]
    a.receive({})
    assert not p.reset and b.receive({0: p}) == {}  # a delta on a stale copy: not used
    b.receive({})  # a round in which a sent nothing ...
    a.receive({})
    p = a.send({1: torch.randn(20)})[1]
    assert p.reset  # ... so its next message is a reset
    heard = b.receive({0: p})
    assert torch.equal(heard[0], a.sent_copy(1))


def test_an_uncompressed_message_on_a_compressed_stream_is_ignored_and_counted() -> None:
    _, b = pair(Quantize(4))
    assert b.receive({0: torch.ones(20)}) == {}
    assert b.ignored[0] == 1


def test_after_a_restart_every_stream_resets() -> None:
    a, _ = pair(TopK(0.5))
    a.send({1: torch.randn(20)})
    a.receive({})
    a.resync()
    assert a.send({1: torch.randn(20)})[1].reset


# ---- the setting ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec, expected", [
    ("none", ("none", 1.0, "float32")), ("topk:0.01", ("topk", 0.01, "float32")),
    ("randk:1", ("randk", 1.0, "float32")), ("topk:0.5:float16", ("topk", 0.5, "float16")),
    ("int8", ("int8", 1.0, "float32")), ("int4", ("int4", 1.0, "float32"))])
def test_compress_specs(spec: str, expected: tuple[str, float, str]) -> None:
    assert compress_spec(spec) == expected
    assert (make_compressor(spec) is None) == (spec == "none")


@pytest.mark.parametrize("spec, message", [
    ("zip", "unknown compressor 'zip'; use none, topk:F, randk:F, int8 or int4."),
    ("topk:1.5", "topk fraction must be in (0, 1], got 1.5."),
    ("randk:0", "randk fraction must be in (0, 1], got 0."),
    ("topk", "unknown compressor 'topk'; use none, topk:F, randk:F, int8 or int4."),
    ("int8:2", "unknown compressor 'int8:2'; use none, topk:F, randk:F, int8 or int4.")])
def test_bad_compress_settings_are_one_sentence(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig(compress=spec)
    assert str(info.value) == message


def test_kept_is_at_least_one_and_at_most_d() -> None:
    assert kept(1e-9, 100) == 1 and kept(1.0, 100) == 100 and kept(0.011, 100) == 2


def test_seeded_payload_travels_without_indices() -> None:
    p = RandK(0.5).pack(torch.randn(40), torch.zeros(40), gen())
    assert isinstance(p, Seeded)
    frames = encode(Dual(0, 0, 0, p))
    assert len(frames) == 2 and memoryview(frames[1]).nbytes == 20 * 4
