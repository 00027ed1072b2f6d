"""A hostile test peer that takes one node's place in a local launch.

`LocalLaunch(..., node_commands={3: [python, -m, node.tools.chaos.hostile_peer, --hostile, 3,
...]})` runs this for node 3 only; the honest nodes are the real daemons, forked as usual (given
another id, this script simply execs the real daemon, `python -m node`). For the
hostile id it binds a ROUTER, prints `READY <endpoint>` like a daemon, reads the launcher's
endpoints file and connects raw pyzmq DEALERs to its neighbours with identity = its id. It
speaks the real codec (`gossip.codec.encode`) and:

- answers Hello with a valid Hello, so that the honest nodes start without waiting;
- (c) whenever a neighbour's message shows it in a new round r, sends it a Dual of round r: the
  last dual that neighbour sent, scaled x1e6 (the "norm" attack);
- at rounds 2, 20 and 40 (or the first message after), sends each neighbour a burst of:
  (a) NaN and Inf tensors, (b) a wrong length, a float64 / int32 dtype and a 2-D shape in the
  manifest, (d) byte-exact replays of its own earlier accepted messages and a fresh message for
  an old round, (e) random bytes, (f) a valid Dual whose header claims another node's id, and
  messages from DEALERs whose identity claims to be a node that is not a neighbour.

With `--attack MODE` (node.adversary.attacks: sign_flip, scaled, alie, ipm, dissensus, sleeper) it
is Byzantine instead: it sends only well-formed, in-bound messages of the real protocol — a Dual
of round r to each neighbour whenever that neighbour shows round r — written by the attack from
what it heard: the neighbours' models (gossip), or the models it reconstructs from their duals
(primal-dual: w_i = (κ·s_{a|i} − y_{i|a}) / (2β·A_{i|a}), s its own last message to i). Under
CURVE (`node.curve_keys`) it authenticates with its own key pair: a neighbour the honest nodes
admit, and Byzantine all the same.

What it sent, by the `gossip.errors.Rejection` the honest receiver should count it under
(`STRANGER_SENT`: a `PeerError` counted under the peer "stranger"; `NORM_SENT`: a `NormError`
when the receiver has an RMS bound), goes to `<out>/hostile.json` after every burst:
{"sent": {target: {kind: count}}}.
Every wait is bounded: `--lifetime` seconds at most, or until every neighbour said Bye.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import torch
import zmq

from gossip.codec import decode, encode
from gossip.errors import DecodeError, Rejection
from gossip.keys import load_curve_keys
from gossip.messages import Bye, Dual, Heartbeat, Hello, Primal, parse_peer_id
from node.adversary import ATTACKS, View, attack_message, fake_model
from node.cli import parse_set_overrides
from node.daemon.settings import NodeConfig, load_node_config
from topologies import edge_sign

SCALE = 1e6
BURST_ROUNDS = (2, 20, 40)
# What was sent that the receiver counts other than under this peer and a Rejection: forged
# identities (a PeerError under "stranger") and the x1e6 duals (a NormError only if bounded).
STRANGER_SENT = "stranger"
NORM_SENT = "norm"
# Sent to be accepted, not counted by the receiver: a greeting (not recorded) and an attack.
GREETING = "ok"
ATTACK_SENT = "byzantine"


def model_size(cfg: NodeConfig) -> int:
    """The model's parameter count, as the honest nodes compute it (Hello must match it)."""
    from node.core.data import load_data
    from node.core.model import num_params

    data = load_data(cfg.run)
    return num_params(cfg.run.model, in_shape=data.in_shape, num_classes=data.num_classes,
                      width=cfg.run.width)


class Hostile:
    def __init__(self, cfg: NodeConfig, seed: int, lifetime: float,
                 attack: str | None = None) -> None:
        self.cfg = cfg
        self.me = cfg.node.id
        self.rng = random.Random(seed)
        self.deadline = time.monotonic() + lifetime
        self.ctx = zmq.Context()
        self.curve = load_curve_keys(Path(cfg.node.curve_keys), self.me, cfg.neighbours) \
            if cfg.node.curve_keys else None
        self.router = self._socket(zmq.ROUTER)
        if self.curve is not None:
            self.router.setsockopt(zmq.CURVE_SERVER, 1)
            self.router.setsockopt(zmq.CURVE_SECRETKEY, self.curve.secret)
            self.router.setsockopt(zmq.CURVE_PUBLICKEY, self.curve.public)
        self.router.bind("tcp://127.0.0.1:0")
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.dealers: dict[int, zmq.Socket[bytes]] = {}
        self.strangers: dict[int, list[zmq.Socket[bytes]]] = {}
        self.seq = time.time_ns() // 1000
        self.dim = model_size(cfg)
        self.said_hello: set[int] = set()
        self.accepted: dict[int, list[list[bytes]]] = {}  # frames the target took, to replay
        self.bursts: dict[int, set[int]] = {}
        self.scaled: dict[int, set[int]] = {}
        self.last_dual: dict[int, np.ndarray[Any, Any]] = {}
        self.byes: set[int] = set()
        self.sent: dict[str, dict[str, int]] = {}
        self.byzantine = Byzantine(cfg, attack, self.dim) if attack else None

    def _socket(self, kind: int, identity: bytes | None = None) -> zmq.Socket[bytes]:
        s: zmq.Socket[bytes] = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDTIMEO, 2000)
        if identity is not None:
            s.setsockopt(zmq.IDENTITY, identity)
        return s

    def connect(self) -> None:
        neighbours = sorted(self.cfg.neighbours)
        path = Path(self.cfg.node.endpoints_file)
        deadline = time.monotonic() + self.cfg.node.startup_timeout
        listed: dict[str, str] = {}
        while not all(str(j) in listed for j in neighbours):
            if time.monotonic() > deadline:
                raise SystemExit("hostile peer: no endpoints file")
            try:
                listed = json.loads(path.read_text())
            except (OSError, ValueError):
                time.sleep(0.05)
        for j in neighbours:
            d = self._socket(zmq.DEALER, str(self.me).encode())
            if self.curve is not None:
                d.setsockopt(zmq.CURVE_SECRETKEY, self.curve.secret)
                d.setsockopt(zmq.CURVE_PUBLICKEY, self.curve.public)
                d.setsockopt(zmq.CURVE_SERVERKEY, self.curve.peers[j])
            d.connect(listed[str(j)])
            self.dealers[j] = d
            # (f) identities that claim to be somebody the target does not know.
            self.strangers[j] = []
            for fake in (b"9999", b"x-" + str(self.me).encode()):
                s = self._socket(zmq.DEALER, fake)
                s.connect(listed[str(j)])
                self.strangers[j].append(s)

    # ---- sending ---------------------------------------------------------------------------

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send(self, target: int, frames: list[Any], kind: str,
             socket: zmq.Socket[bytes] | None = None) -> bool:
        try:
            (socket or self.dealers[target]).send_multipart([bytes(f) for f in frames])
        except zmq.Again:
            return False
        box = self.sent.setdefault(str(target), {})
        box[kind] = box.get(kind, 0) + 1
        return True

    def valid(self, target: int, frames: list[Any], kind: str) -> None:
        if self.send(target, frames, kind):
            self.accepted.setdefault(target, []).append([bytes(f) for f in frames])

    def on_message(self, peer: int, r: int, payload: np.ndarray[Any, Any] | None) -> None:
        """Anything from `peer` tells us its round `r`; answer with the round's attacks."""
        if payload is not None:
            self.last_dual[peer] = np.asarray(payload, dtype=np.float32)
        if r not in self.scaled.setdefault(peer, set()):
            # (c) the last dual the neighbour sent us, scaled x1e6, for its current round: it
            # passes the codec (finite) and only a norm bound can stop it. Once the neighbour
            # has marked us down it sends us no more duals, only heartbeats: we keep going.
            self.scaled[peer].add(r)
            base = self.last_dual.get(peer, np.full(self.dim, 0.05, np.float32))
            big = (base * np.float32(SCALE)).astype(np.float32)
            self.valid(peer, encode(Dual(self.me, r, self.next_seq(), big)), NORM_SENT)
        due = [b for b in BURST_ROUNDS if b <= r and b not in self.bursts.setdefault(peer, set())]
        if due:
            self.bursts[peer].update(due)
            self.burst(peer, r, self.dim)
            self.record()

    def burst(self, j: int, r: int, dim: int) -> None:
        me = self.me
        ones = np.ones(dim, dtype=np.float32)
        # (a) NaN and Inf tensors (float32 on the wire: encode does not look at the values).
        for bad in (np.nan, np.inf):
            x = ones.copy()
            x[self.rng.randrange(dim)] = bad
            self.send(j, encode(Dual(me, r, self.next_seq(), x)), Rejection.DECODE)
        # (b) wrong shapes and dtypes.
        self.send(j, encode(Dual(me, r, self.next_seq(), np.ones(dim + 7, np.float32))),
                  Rejection.DECODE)
        # (The frame stays within the receiver's MAXMSGSIZE, 4 x dim + header: libzmq would
        # drop the connection for a bigger one before any of our code sees it.)
        for manifest, nbytes in ((["float64", [dim // 2]], 8 * (dim // 2)),
                                 (["int32", [dim]], 4 * dim), (["float32", [dim, 1]], 4 * dim)):
            frames = encode(Dual(me, r, self.next_seq(), ones))
            header = msgpack.unpackb(frames[0])
            header["f"] = [manifest]
            self.send(j, [msgpack.packb(header), bytes(nbytes)], Rejection.DECODE)
        # (d) byte-exact replays of messages the target accepted, and an old round re-sent
        # with a fresh sequence number.
        for old in self.accepted.get(j, [])[:2]:
            self.send(j, old, Rejection.REPLAY)
        self.send(j, encode(Dual(me, r - 2, self.next_seq(), ones * 0)), Rejection.STALE_ROUND)
        # (e) random bytes, one and three frames.
        for count in (1, 3):
            frames = [self.rng.randbytes(self.rng.randint(1, 600)) for _ in range(count)]
            self.send(j, frames, Rejection.DECODE)
        # (f) a message claiming to come from another node, over our own connection ...
        other = next(k for k in range(self.cfg.run.nodes) if k not in (me, j))
        self.send(j, encode(Dual(other, r, self.next_seq(), ones * 0)), Rejection.PEER)
        # ... and from sockets whose identity claims to be a node the target does not know.
        for s in self.strangers[j]:
            self.send(j, encode(Heartbeat(other, r, self.next_seq())), STRANGER_SENT, socket=s)

    def record(self) -> None:
        out = Path(self.cfg.node.out)
        tmp = out / f".hostile.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"sent": {t: {k: v for k, v in kinds.items() if k != GREETING}
                                            for t, kinds in self.sent.items()}}))
        os.replace(tmp, out / "hostile.json")

    # ---- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        self.connect()
        neighbours = set(self.cfg.neighbours)
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        while time.monotonic() < self.deadline and not neighbours <= self.byes:
            if not poller.poll(100):
                continue
            identity, *frames = self.router.recv_multipart()
            try:
                msg = decode(frames)
                # Under CURVE the routing id is random; the (authenticated) header names it.
            except (ValueError, DecodeError):
                continue
            peer = msg.sender if self.curve is not None else parse_peer_id(identity)
            if peer not in neighbours:
                continue
            if peer not in self.said_hello:
                # The neighbour's own Hello may have left before our connection was up
                # (its DEALERs send only on live connections): greet on whatever comes first.
                self.said_hello.add(peer)
                self.valid(peer, encode(Hello(self.me, 0, self.next_seq(), self.dim)), GREETING)
            match msg:
                case Bye():
                    self.byes.add(peer)
                case Dual(round=r, payload=payload) if self.byzantine is not None:
                    if isinstance(payload, np.ndarray):
                        y = self.byzantine.answer(peer, r, payload)
                        self.valid(peer, encode(Dual(self.me, r, self.next_seq(), y)),
                                   ATTACK_SENT)
                case Dual(round=r, payload=payload):
                    self.on_message(peer, r, payload if isinstance(payload, np.ndarray) else None)
                case Heartbeat() | Primal() if self.byzantine is not None:
                    pass
                case Heartbeat(round=r) | Primal(round=r):
                    self.on_message(peer, r, None)
                case _:
                    pass
        self.record()
        for s in [self.router, *self.dealers.values(),
                  *(x for xs in self.strangers.values() for x in xs)]:
            s.close(linger=0)
        self.ctx.term()


class Byzantine:
    """The attack side of a Byzantine hostile peer: one answer per neighbour and round."""

    def __init__(self, cfg: NodeConfig, attack: str, dim: int) -> None:
        from node.core.algorithm import PrimalDualParams
        from node.core.assemble import build_graph
        from topologies import max_degree

        self.attack = attack
        self.me = cfg.node.id
        self.gossip = cfg.run.algorithm == "dpsgd"
        self.bound = cfg.node.max_message_rms
        params = PrimalDualParams.from_config(cfg.run, max_degree(build_graph(cfg.run)))
        self.kappa, self.beta = params.kappa, params.beta
        self.sleep_rounds = cfg.run.rounds // 2
        self.models: dict[int, torch.Tensor] = {}  # the latest model of each neighbour
        self.sent: dict[int, torch.Tensor] = {}
        self.zero = torch.zeros(dim)

    def answer(self, peer: int, r: int, payload: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        y = torch.from_numpy(np.array(payload, dtype=np.float32))
        if self.gossip:
            self.models[peer] = y
        else:  # what the neighbour's dual says about its model (exact for θ = 1, no noise)
            a = float(edge_sign(peer, self.me))
            self.models[peer] = (self.kappa * self.sent.get(peer, self.zero) - y) / (
                2.0 * self.beta * a)
        heard = list(self.models.values())
        mean = torch.stack(heard).mean(dim=0)
        target = self.models[peer]
        view = View(r, mean, target, heard, mean - target)
        fake = fake_model(self.attack, view, sleep_rounds=self.sleep_rounds)
        model = mean if fake is None else fake
        if self.gossip:
            out = attack_message(mean, model, mean, 1.0, self.bound)
        else:  # y_{a|i} = κ·z_{a|i} − 2β·A_{a|i}·w̃, z_{a|i} the neighbour's last message
            c = -2.0 * self.beta * float(edge_sign(self.me, peer))
            honest = self.kappa * y + c * mean
            out = attack_message(honest, model, mean, c, self.bound)
        self.sent[peer] = out
        return out.numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hostile", type=int, required=True, help="the node id to play")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=150.0)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--attack", choices=[a for a in ATTACKS if a != "label_flip"],
                        default=None, help="be Byzantine: well-formed, in-bound attacks only")
    args = parser.parse_args()
    cfg = load_node_config(args.config, parse_set_overrides(args.set))
    if cfg.node.id != args.hostile:
        # Become the real daemon (same process, so the launcher's signals reach it).
        sets = [x for pair in args.set for x in ("--set", pair)]
        os.execv(sys.executable, [sys.executable, "-m", "node", "--config", args.config, *sets])
    Path(cfg.node.out).mkdir(parents=True, exist_ok=True)
    peer = Hostile(cfg, args.seed, args.lifetime, args.attack)
    print(f"READY {peer.endpoint}", flush=True)
    peer.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

