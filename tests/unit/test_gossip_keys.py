"""CURVE key files: generated per topology, secret keys private, errors name the file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import zmq

from gossip.errors import KeyFileError
from gossip.keys import generate_topology_keys, load_curve_keys, public_key_path, secret_key_path


def test_generate_and_load(tmp_path: Path) -> None:
    generate_topology_keys(tmp_path, range(4))
    keys = load_curve_keys(tmp_path, 0, [1, 3])
    assert zmq.curve_public(keys.secret) == keys.public
    assert set(keys.peers) == {1, 3}
    assert keys.peers[1] == public_key_path(tmp_path, 1).read_bytes().strip()
    for i in range(4):
        assert stat.S_IMODE(secret_key_path(tmp_path, i).stat().st_mode) == 0o600
    assert "secret=<hidden>" in repr(keys) and keys.secret.decode() not in repr(keys)


def test_generation_keeps_existing_pairs_unless_asked(tmp_path: Path) -> None:
    generate_topology_keys(tmp_path, [0])
    before = public_key_path(tmp_path, 0).read_bytes()
    generate_topology_keys(tmp_path, [0, 1])
    assert public_key_path(tmp_path, 0).read_bytes() == before
    generate_topology_keys(tmp_path, [0], overwrite=True)
    assert public_key_path(tmp_path, 0).read_bytes() != before


def test_missing_and_malformed_files_name_the_file(tmp_path: Path) -> None:
    generate_topology_keys(tmp_path, [0, 1])
    with pytest.raises(KeyFileError, match=r"2\.public"):
        load_curve_keys(tmp_path, 0, [2])
    secret_key_path(tmp_path, 1).write_text("not a key\n")
    with pytest.raises(KeyFileError, match=r"1\.secret"):
        load_curve_keys(tmp_path, 1, [0])
    # A valid key that is not ours.
    secret_key_path(tmp_path, 1).write_bytes(secret_key_path(tmp_path, 0).read_bytes())
    with pytest.raises(KeyFileError, match="does not belong"):
        load_curve_keys(tmp_path, 1, [0])
