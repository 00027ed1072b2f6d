"""Turn the user's `[faults]` table into the gossip fault layer's configuration."""

from __future__ import annotations

from gossip.faults import Cut, FaultConfig
from node.config import ConfigError
from node.daemon_config import FaultSettings


def parse_cuts(text: str) -> tuple[Cut, ...]:
    """"start:end:a-b,c-d" cuts links a–b and c–d; "start:end:n3" isolates node 3; ";" joins."""
    cuts = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        try:
            start, end, what = part.split(":", 2)
            begin, finish = float(start), float(end)
            edges, nodes = [], []
            for item in filter(None, what.split(",")):
                if item.startswith("n"):
                    nodes.append(int(item[1:]))
                else:
                    a, b = item.split("-")
                    edges.append((int(a), int(b)))
        except ValueError:
            raise ConfigError(f"cannot read the cut {part!r}; write start:end:a-b,c-d or "
                              "start:end:nK (seconds after start-up).") from None
        if not 0 <= begin < finish:
            raise ConfigError(f"the cut {part!r} needs 0 <= start < end.")
        cuts.append(Cut.between(begin, finish, nodes=nodes, edges=edges))
    return tuple(cuts)


def fault_config(settings: FaultSettings) -> FaultConfig | None:
    """None when no fault is configured (the transport is then used directly)."""
    if not settings.enabled:
        return None
    try:
        return FaultConfig(drop=settings.drop, duplicate=settings.duplicate,
                           corrupt=settings.corrupt, reorder=settings.reorder,
                           reorder_ms=settings.reorder_ms, jitter_ms=settings.jitter_ms,
                           cuts=parse_cuts(settings.cuts), seed=settings.seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
