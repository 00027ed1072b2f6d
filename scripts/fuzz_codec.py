"""Long fuzz run of the codec: hostile frame lists must raise only DecodeError.

    python scripts/fuzz_codec.py [--n 1000000] [--seed 1]

Uses the same mutator as the test suite (tests/unit/test_gossip_codec.py), which tries a few
hundred cases on every test run; this script runs as many as you like (10,000 in a few seconds)
and prints a JSON summary. Any
other exception propagates with its traceback and the seed, so the case can be replayed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from gossip.codec import decode
from gossip.errors import DecodeError

# The mutator is the unit test's own, and tests are not part of the installed package: this is
# the one path a script adds, and it names no package of ours.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))
from test_gossip_codec import mutate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    accepted = rejected = 0
    t0 = time.perf_counter()
    for i in range(args.n):
        frames = mutate(rng)
        try:
            decode(frames, expected_dim=rng.choice([None, 4]))
            accepted += 1
        except DecodeError:
            rejected += 1
        except Exception:
            print(f"case {i} (seed {args.seed}) raised; frames={frames!r}", file=sys.stderr)
            raise
    print(
        json.dumps(
            {
                "cases": args.n,
                "seed": args.seed,
                "rejected": rejected,
                "accepted": accepted,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
