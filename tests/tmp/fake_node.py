"""A stand-in daemon for testing the launcher before node/__main__.py exists. Not committed."""
import argparse, json, os, signal, socket, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from node.config import ConfigError
from node.daemon_config import load_node_config
from node.metrics import MetricsWriter, write_json_atomic
from node.options import parse_set_overrides

p = argparse.ArgumentParser(); p.add_argument("--config"); p.add_argument("--set", action="append", default=[])
a = p.parse_args()
try:
    cfg = load_node_config(a.config, parse_set_overrides(a.set))
except ConfigError as e:
    sys.stderr.write(f"error: {e}\n"); sys.exit(2)
if os.environ.get("FAKE_FAIL") == str(cfg.node.id):
    sys.stderr.write("error: fake failure.\n"); sys.exit(2)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
host, port = cfg.node.listen[len("tcp://"):].rsplit(":", 1)
s.bind((host, int(port))); s.listen()
print(f"READY tcp://127.0.0.1:{s.getsockname()[1]}", flush=True)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1)); signal.signal(signal.SIGINT, lambda *_: stop.append(1))
ep = Path(cfg.node.endpoints_file); t0 = time.time()
while not ep.exists():
    if time.time() - t0 > cfg.node.startup_timeout: sys.exit(1)
    time.sleep(0.05)
eps = json.loads(ep.read_text())
assert all(str(j) in eps for j in cfg.neighbours)
out = Path(cfg.node.out); w = MetricsWriter(out)
from node.metrics import read_metrics
start = 0
if (out / "metrics.jsonl").exists():
    recs = read_metrics(out / "metrics.jsonl"); start = max((r["round"] + 1 for r in recs), default=0)
exit_ = "finished"; sent = 0; r = start - 1
delay = float(os.environ.get("FAKE_DELAY", "0.05"))
for r in range(start, cfg.run.rounds):
    if stop: exit_ = "stopped"; break
    time.sleep(delay); sent += 1000
    w.write({"round": r, "node": cfg.node.id, "time": time.time(), "loss": 1.0 / (r + 1), "accuracy": 0.5,
             "dual_norm": 0.1, "consensus_distance": 0.1, "epsilon": None, "bytes_sent": sent,
             "bytes_received": sent, "peers_alive": len(cfg.neighbours), "round_seconds": delay,
             "compute_seconds": delay, "wait_seconds": 0.0})
else:
    r = cfg.run.rounds - 1
write_json_atomic(out / "final.json", {"accuracy": 0.5, "loss": 0.1, "epsilon": None, "bytes_sent": sent,
                  "rounds_completed": r + 1 if exit_ == "finished" else r, "exit": exit_})
print("bye", flush=True)
