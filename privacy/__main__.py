"""``python -m privacy``: the privacy calculator (ε ↔ noise) and the privacy statement.

    python -m privacy gradient --epsilon 4 --delta 1e-5 --rounds 100 --local-steps 10 \\
        --sample-rate 0.01                        # → noise multiplier z
    python -m privacy gradient --noise-multiplier 1.1 --delta 1e-5 --rounds 100 \\
        --local-steps 10 --sample-rate 0.01       # → ε
    python -m privacy message --epsilon 4 --delta 1e-5 --rounds 500 --batch-size 32 --n 1000 \\
        --clip 1 --lr 0.05 --alpha 0.005 --degree 2 # → per-edge σ (and the effective z)
    python -m privacy message --sigma 0.3 ...     # → ε

``--json`` prints one JSON object instead of text. Bad input: one sentence on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, NoReturn

from privacy import accountant, modes
from privacy.errors import PrivacyError
from privacy.statement import privacy_statement


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints usage + message over two lines; users get one sentence.
        self.exit(2, f"error: {message} (see python -m privacy --help).\n")


def main(argv: list[str] | None = None) -> int:
    """Run the calculator; return the exit status (0 ok, 2 bad input)."""
    args = _parser().parse_args(argv)
    try:
        result = _gradient(args) if args.mode == "gradient" else _message(args)
    except PrivacyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        _print_text(result)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m privacy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True, parser_class=_Parser)
    for mode, noise_flag, noise_help in (
        ("gradient", "--noise-multiplier", "noise multiplier z on the clipped gradient sum"),
        ("message", "--sigma", "noise std σ added to every outgoing dual"),
    ):
        p = sub.add_parser(mode, help=f"{mode} mode (docs/DESIGN.md §2)")
        target = p.add_mutually_exclusive_group(required=True)
        target.add_argument("--epsilon", type=float, help="target ε; prints the noise needed")
        target.add_argument(noise_flag, type=float, dest="noise", help=noise_help)
        p.add_argument("--delta", type=float, required=True)
        p.add_argument("--rounds", type=int, required=True)
        p.add_argument("--local-steps", type=int, default=1, help="K local steps per round")
        p.add_argument("--sample-rate", type=float, help="q (or give --batch-size and --n)")
        p.add_argument("--batch-size", type=float, help="expected batch size B; q = B/n")
        p.add_argument("--n", type=int, required=mode == "message",
                       help="local dataset size n (checks δ < 1/n)")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        if mode == "message":
            p.add_argument("--clip", type=float, required=True, help="clipping norm C")
            p.add_argument("--lr", type=float, required=True, help="learning rate (μ = 1/lr)")
            p.add_argument("--alpha", type=float, default=0.0, help="dual regulariser α")
            p.add_argument("--eta", type=float,
                           help="edge penalty η (default ECL-ISVR 1/(lr·(K·E+K−E)))")
            p.add_argument("--degree", type=int, required=True, help="neighbours E per round")
    return parser


def _common(args: argparse.Namespace) -> tuple[float, int]:
    """Validate δ, rounds and steps; return (q, T = R·K)."""
    if args.rounds < 1 or args.local_steps < 1:
        raise PrivacyError("--rounds and --local-steps must be at least 1.")
    if args.n is not None:
        accountant.check_delta(args.delta, args.n)
    elif not 0.0 < args.delta < 1.0:
        raise PrivacyError(f"δ must lie in (0, 1), and below 1/n, got {args.delta}.")
    if args.sample_rate is not None:
        q = args.sample_rate
    elif args.batch_size is not None and args.n is not None:
        q = args.batch_size / args.n
    else:
        raise PrivacyError("Give the sampling rate with --sample-rate, or --batch-size and --n.")
    if not 0.0 < q <= 1.0:
        raise PrivacyError(f"The sampling rate q must lie in (0, 1], got {q}.")
    if args.epsilon is not None:
        accountant.check_epsilon(args.epsilon)
    elif not (args.noise >= 0.0 and math.isfinite(args.noise)):
        raise PrivacyError(f"The noise must be a finite number ≥ 0, got {args.noise}.")
    return q, args.rounds * args.local_steps


def _gradient(args: argparse.Namespace) -> dict[str, Any]:
    q, steps = _common(args)
    z = (accountant.calibrate_noise_multiplier(args.epsilon, args.delta, q, steps)
         if args.epsilon is not None else args.noise)
    return {"mode": "gradient", "noise_multiplier": z, "sigma": None, "sample_rate": q,
            "steps": steps, "local_steps": args.local_steps, "delta": args.delta,
            "epsilon": accountant.epsilon(z, q, steps, args.delta),
            "epsilon_rdp": accountant.epsilon_rdp(z, q, steps, args.delta)}


def _message(args: argparse.Namespace) -> dict[str, Any]:
    q, _ = _common(args)
    k, degree = args.local_steps, args.degree
    if not (args.lr > 0 and degree >= 1 and args.alpha >= 0):
        raise PrivacyError("Message mode needs --lr > 0, --degree ≥ 1 and --alpha ≥ 0.")
    eta = args.eta if args.eta is not None else 1.0 / (args.lr * (k * degree + k - degree))
    shape = {"lr": args.lr, "beta": modes.dpnorm_beta(args.alpha, eta), "eta": eta,
             "degree": degree, "sample_rate": q, "n": args.n, "clip": args.clip}
    guaranteed = modes.has_formal_guarantee("message", k)
    if args.epsilon is not None:
        if not guaranteed:
            raise PrivacyError(f"Message mode with --local-steps {k} has no formal guarantee, "
                               "so no noise can be calibrated to an ε; use --local-steps 1.")
        z = accountant.calibrate_noise_multiplier(args.epsilon, args.delta, q, args.rounds)
        sigma = modes.message_mode_sigma(z, **shape)
    else:
        sigma = args.noise
        z = modes.message_mode_noise_multiplier(sigma, **shape)
    eps = accountant.epsilon(z, q, args.rounds, args.delta) if guaranteed else None
    eps_rdp = accountant.epsilon_rdp(z, q, args.rounds, args.delta) if guaranteed else None
    return {"mode": "message", "noise_multiplier": z, "sigma": sigma, "sample_rate": q,
            "steps": args.rounds, "local_steps": k, "delta": args.delta, "eta": eta,
            "beta": shape["beta"], "epsilon": eps, "epsilon_rdp": eps_rdp}


def _print_text(r: dict[str, Any]) -> None:
    eps = modes.NO_GUARANTEE if r["epsilon"] is None else f"{r['epsilon']:.4f}"
    print(f"mode                 {r['mode']}")
    if r["sigma"] is not None:
        print(f"per-edge noise σ     {r['sigma']:.6g}")
    print(f"noise multiplier z   {r['noise_multiplier']:.6g}")
    print(f"sample rate q        {r['sample_rate']:.6g}")
    print(f"releases T           {r['steps']}")
    print(f"δ                    {r['delta']:.3g}")
    print(f"ε (PLD)              {eps}")
    if r["epsilon_rdp"] is not None:
        print(f"ε (RDP, cross-check) {r['epsilon_rdp']:.4f}")
    print()
    print(privacy_statement(mode=r["mode"], epsilon=r["epsilon"], delta=r["delta"],
                            noise_multiplier=r["noise_multiplier"], sample_rate=r["sample_rate"],
                            steps=r["steps"], local_steps=r["local_steps"], sigma=r["sigma"]))


if __name__ == "__main__":
    sys.exit(main())
