"""The Dockerfile, read as text (tests/containers builds it and runs the image for real).

What can be checked without building: the pins match pyproject.toml, the image runs the daemon
as a non-root user with the volumes make_compose mounts, and its dependency filter leaves out
exactly torch (installed from the CPU index) and matplotlib (the daemon never imports it; the LAN
test runs every daemon with matplotlib unimportable). The HEALTHCHECK command itself runs
against a live node in tests/lan/test_lan.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from node.tools.compose import CONFIG_PATH, DATA_PATH, IMAGE_UID, KEYS_PATH, OUT_PATH

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
INSTRUCTIONS = [ln for ln in DOCKERFILE.replace("\\\n", " ").splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]


def instruction(name: str) -> list[str]:
    return [ln[len(name):].strip() for ln in INSTRUCTIONS if ln.startswith(name + " ")]


def test_base_torch_pin_and_cpu_index() -> None:
    assert "PYTHON_IMAGE=python:3.11-slim" in instruction("ARG")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_pin = next(d for d in deps if d.startswith("torch"))
    assert f"TORCH_VERSION={torch_pin.split('==')[1]}" in instruction("ARG")
    # Users get the CPU wheel from PyTorch's index; air-gapped builds name a mirror or a wheel.
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cpu" in instruction("ARG")
    assert "TORCH_WHEEL=" in instruction("ARG")
    (install,) = [r for r in instruction("RUN") if "TORCH_WHEEL" in r]
    assert 'pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX"' in install
    assert 'if [ -n "$TORCH_WHEEL" ]; then pip install "$TORCH_WHEEL";' in install


def test_runs_the_daemon_as_non_root_with_the_compose_volumes() -> None:
    assert instruction("ENTRYPOINT") == ['["python", "-m", "node"]']
    assert instruction("CMD") == [json.dumps(["--config", CONFIG_PATH])]
    assert instruction("USER") == ["dpnorm"]
    assert f"--uid {IMAGE_UID}" in DOCKERFILE
    volumes = json.loads(instruction("VOLUME")[0])
    assert set(volumes) == {str(Path(CONFIG_PATH).parent), DATA_PATH, KEYS_PATH, OUT_PATH}
    assert instruction("EXPOSE") == ["7000/tcp"]
    health = instruction("HEALTHCHECK")
    assert len(health) == 1 and " CMD " in health[0]
    assert re.search(r"DPNORM_OUT=" + re.escape(OUT_PATH), DOCKERFILE)
    # Two stages: the final image gets the environment, not the build tools or caches.
    assert len(instruction("FROM")) == 2
    assert "COPY --from=build /opt/dpnorm /opt/dpnorm" in DOCKERFILE


def test_dependency_filter_leaves_out_only_torch_and_matplotlib() -> None:
    run = next(r for r in instruction("RUN") if "requirements.txt" in r)
    snippet = re.search(r'python -c "(.+?)" >', run)
    assert snippet is not None, run
    # Run as the shell would: inside double quotes `\\n` reaches Python unchanged.
    out = subprocess.run([sys.executable, "-c", snippet.group(1)], capture_output=True,
                         text=True, cwd=ROOT, timeout=30, check=True).stdout.split()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(out) == sorted(d for d in deps if not d.startswith(("torch", "matplotlib")))


def test_build_context_is_only_what_the_image_needs() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    assert {ln for ln in lines if ln.startswith("!")} == {
        "!pyproject.toml", "!README.md", "!node/", "!gossip/", "!privacy/", "!topologies/"}
