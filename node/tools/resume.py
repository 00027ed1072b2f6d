"""Checking a `--resume` before anything is touched: every node's ledger and checkpoint, read only.

A resume the daemons would refuse used to be found out only once they ran: by then the launcher
had removed every final.json and rewritten summary.json with every node "crashed". Here the
launcher runs, for each node, the checks its daemon runs at start-up (`open_spend`), with the
daemon's own functions and reading only:

- the run ledger (`privacy.ledger.recorded`): readable, intact, and of this node's identity
  (`schedule_identity`: the ε, δ, mode, rounds, K and q its noise was calibrated for), so a
  changed ε is refused naming the setting;
- the checkpoint (`check_resumable`): readable, intact, written by the same computation, and not
  ahead of the rounds the ledger records.

What only a daemon can check (its data's lifetime ledger against `node.lifetime_epsilon`, which
needs the calibrated noise) is still refused by the daemon, before it writes anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from node.core.data import Dataset, load_data, shard_size
from node.core.mechanism import mechanism_type
from node.core.privacy_plan import sample_rate
from node.daemon.settings import NodeConfig
from node.daemon.state import CheckpointError, check_resumable, schedule_identity
from node.errors import ConfigError
from node.outputs.files import LEDGER
from node.tools.rundir import finished, move_aside
from privacy.errors import PrivacyError
from privacy.ledger import recorded


def check_resume(configs: Sequence[NodeConfig]) -> None:
    """Refuse (ConfigError, one sentence naming the node) a resume any daemon would refuse."""
    data: list[Dataset] = []   # the dataset's labels, read once and only if a ledger needs q

    def public_size(config: NodeConfig) -> int | None:
        # As the daemon fixes q: from its shard's size, never from a private file's.
        if config.node.data_file or config.shared_file:
            return None
        if not data:
            data.append(load_data(config.run, resident=False))
        return shard_size(config.run, data[0], config.node.id)

    for config in configs:
        kind = mechanism_type(config.run)
        out = Path(config.node.out)
        try:
            rounds = None
            if kind.claims_privacy:
                q, _ = sample_rate(config.run, public_size(config), config.node.id)
                found = recorded(out / LEDGER, schedule_identity(config, kind.mode, q,
                                                                  kind.discrete))
                rounds = sorted(found or {})
            check_resumable(config, out / LEDGER, rounds)
        except (PrivacyError, CheckpointError) as exc:
            text = str(exc)
            raise ConfigError(f"cannot resume node {config.node.id}, so nothing was changed: "
                              f"{text[:1].lower()}{text[1:]}") from None


class NothingToResume(Exception):
    """A resume of a run whose every node finished: nothing was started or changed."""


def reuse_run_dir(out: Path, configs: Sequence[NodeConfig], *, fresh: bool) -> None:
    """Before a launch writes anything into `out`: a fresh one moves an earlier run aside
    (`move_aside`, never a deletion); a resume is checked (`check_resume`) and, where every node
    finished, stopped with NothingToResume."""
    if fresh:
        move_aside(out)
        return
    check_resume(configs)
    run = configs[0].run
    if finished(out, run.rounds, run.nodes):
        raise NothingToResume("nothing to resume: every node finished; nothing was started or "
                              "changed.")
