"""Fixtures of the container tests: the Debian packages, a private Docker engine, the image.

They need root (CI runs as root); without it every test here is skipped with that reason, and
for no other reason: whatever is missing is installed (`engine.ensure_packages`). The engine and
the image are built once per session; the engine is stopped and everything it ran removed at
the end, also when a test fails or is interrupted (the fixtures' finalizers).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.containers.engine import (
    BuiltImage,
    Engine,
    WheelServer,
    base_image,
    engine_netns,
    ensure_packages,
    torch_wheel,
)

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "dpnorm:containers-test"

@pytest.fixture(scope="session")
def packages() -> None:
    ensure_packages()


@contextlib.contextmanager
def private_engine(name: str, tmp_path_factory: pytest.TempPathFactory,
                   netns: str | None = None) -> Iterator[Engine]:
    # A short path: the engine's sockets live under it (108-byte limit on unix socket paths).
    run_dir = Path(f"/tmp/dpnorm-{name}-{os.getpid()}")
    try:
        started = Engine.start(run_dir, netns=netns)  # stops itself when it fails to start
        try:
            yield started
        finally:
            started.stop()
            (tmp_path_factory.getbasetemp() / f"dockerd-{name}.log").write_text(started.log())
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def engine(image: BuiltImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The engine that runs the containers, in a network namespace of its own (started after
    the build engine has stopped: they share the data root, so the image is there)."""
    with private_engine("engine", tmp_path_factory, netns=engine_netns()) as started:
        yield started


@pytest.fixture(scope="session")
def image(packages: None, tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """The project's Dockerfile, unchanged, built on the local base image with build args, by
    an engine in the host's network namespace (the build's pip reaches PyPI and the wheel)."""
    with private_engine("build", tmp_path_factory) as builder:
        return build_image(builder)


def build_image(engine: Engine) -> BuiltImage:
    base, base_seconds = base_image(engine)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_version = next(d for d in deps if d.startswith("torch==")).split("==")[1]
    args = ["--build-arg", f"PYTHON_IMAGE={base}"]
    wheel = torch_wheel(torch_version)
    server = WheelServer(wheel.parent) if wheel else None
    if server is not None and wheel is not None:
        args += ["--build-arg", f"TORCH_WHEEL={server.url(wheel.name)}"]
    started = time.monotonic()
    try:
        # The build stage gets a tag of its own first, so that it is kept (and is the next
        # run's layer cache) when superseded images are pruned; the second build reuses it.
        logs = []
        for target in (["--target", "build", "-t", f"{IMAGE}-build"], ["-t", IMAGE]):
            proc = engine.docker("build", "--network=host", *args, *target, str(ROOT),
                                 check=False, timeout=1200)
            assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
            logs.append(proc.stdout)
    finally:
        if server is not None:
            server.close()
    size = int(engine.docker("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    final = logs[-1]  # the full build: its steps, and which came from the cache
    steps = (final.count("Using cache"), len(re.findall(r"^Step \d+/\d+ :", final, re.M)))
    return BuiltImage(IMAGE, size, base_seconds, time.monotonic() - started, steps)
