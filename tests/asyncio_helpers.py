"""Running one asyncio scenario of a test on uvloop, bounded so that no test can hang."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import uvloop

T = TypeVar("T")
LOCAL = "tcp://127.0.0.1:0"


def run(scenario: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout)

    return uvloop.run(bounded())
