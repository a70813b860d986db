#!/usr/bin/env python3
"""Soak test of `wgsd serve`: N clients send a mix of valid and invalid requests and drop
connections, for a set time, while the server's RSS, open file descriptors, threads and
latency are sampled. Every valid reply must equal the reference reply for its prompt and
seed (taken before the load starts), every invalid one must get its documented status.

    python3 benches/soak.py --wgsd target/release/wgsd --minutes 30 --clients 8

It starts `wgsd serve` on the bundled tiny model (weights/sd2-tiny.zip) on free loopback
ports, prints one line per interval and a JSON summary at the end, and exits 1 if any
valid reply was wrong, any status was unexpected, or the server died. Growth is measured
from the first sample after --warmup-minutes to the last. Standard library only.
"""

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ["a red circle", "a blue square on a white background", "a green fox", "soak"]
SEEDS = [1, 2, 3, 4]
SIZE, STEPS = 32, 4

# kind -> weight; what each sends and expects is in Client.run_one.
MIX = {
    "predict": 40, "predict_png": 5, "v2_infer": 10, "bad_json": 8, "bad_size": 5,
    "unknown_model": 5, "disconnect": 8, "short_body": 4, "ping": 8, "metrics": 7,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def predict_body(key: int) -> bytes:
    return json.dumps({"prompt": PROMPTS[key], "seed": SEEDS[key], "width": SIZE,
                       "height": SIZE, "num_inference_steps": STEPS}).encode()


def v2_body(key: int) -> bytes:
    return json.dumps({"id": "soak", "inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES",
                                               "data": [PROMPTS[key]]}],
                       "parameters": {"seed": SEEDS[key], "width": SIZE, "height": SIZE,
                                      "num_inference_steps": STEPS}}).encode()


class Server:
    def __init__(self, wgsd: str, batch: int):
        self.ports = [free_port() for _ in range(3)]
        args = [wgsd, "serve", "--model-store", os.path.join(ROOT, "weights"),
                "--models", "sd=sd2-tiny.zip",
                "--inference-address", f"127.0.0.1:{self.ports[0]}",
                "--management-address", f"127.0.0.1:{self.ports[1]}",
                "--metrics-address", f"127.0.0.1:{self.ports[2]}",
                "--batch-size", str(batch), "--max-batch-delay", "50",
                "--warmup-size", f"{SIZE}x{SIZE}", "--outputs", os.path.join(ROOT, "target", "soak-outputs")]
        self.log = open(os.path.join(ROOT, "target", "soak-server.log"), "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"soak: wgsd serve exited with {self.proc.returncode}; see target/soak-server.log")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[0]}/ping", timeout=5) as r:
                    if json.load(r).get("status") == "Healthy":
                        return
            except OSError:
                pass
            time.sleep(1)
        sys.exit("soak: wgsd serve did not become healthy in 10 minutes")

    def sample(self) -> dict:
        pid = self.proc.pid
        status = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                status[key] = value.strip()
        return {"rss_mib": int(status["VmRSS"].split()[0]) / 1024,
                "hwm_mib": int(status["VmHWM"].split()[0]) / 1024,
                "threads": int(status["Threads"]),
                "fds": len(os.listdir(f"/proc/{pid}/fd"))}

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


def request(port: int, method: str, path: str, body: bytes = b"", headers=None, timeout=600):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.latencies = []
        self.wrong = []
        self.unexpected = []

    def add(self, kind: str, seconds=None):
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if seconds is not None:
                self.latencies.append(seconds)

    def take_window(self):
        with self.lock:
            counts, lat = self.counts, self.latencies
            self.counts, self.latencies = {}, []
            return counts, lat


class Client(threading.Thread):
    def __init__(self, index, ports, refs, stats, stop_at):
        super().__init__(daemon=True)
        self.rng = random.Random(index)
        self.ports, self.refs, self.stats, self.stop_at = ports, refs, stats, stop_at
        self.kinds = list(MIX)
        self.weights = [MIX[k] for k in self.kinds]

    def run(self):
        while time.time() < self.stop_at:
            kind = self.rng.choices(self.kinds, self.weights)[0]
            try:
                self.run_one(kind)
            except OSError as e:
                with self.stats.lock:
                    self.stats.unexpected.append(f"{kind}: {e!r}")

    def expect(self, kind, status, want):
        if status != want:
            with self.stats.lock:
                self.stats.unexpected.append(f"{kind}: status {status}, expected {want}")

    def check(self, kind, key, got, want):
        if got != want:
            with self.stats.lock:
                self.stats.wrong.append(f"{kind} key {key}: {len(got)} bytes differ from the reference")

    def run_one(self, kind):
        port = self.ports[0]
        key = self.rng.randrange(len(PROMPTS))
        json_h = {"Content-Type": "application/json"}
        t0 = time.time()
        if kind == "predict":
            status, body = request(port, "POST", "/predictions/sd", predict_body(key), json_h)
            self.expect(kind, status, 200)
            self.check(kind, key, body, self.refs["predict"][key])
            self.stats.add(kind, time.time() - t0)
        elif kind == "predict_png":
            status, body = request(port, "POST", "/predictions/sd?format=png", predict_body(key), json_h)
            self.expect(kind, status, 200)
            self.check(kind, key, body, self.refs["png"][key])
            self.stats.add(kind, time.time() - t0)
        elif kind == "v2_infer":
            status, body = request(port, "POST", "/v2/models/sd/infer", v2_body(key), json_h)
            self.expect(kind, status, 200)
            self.check(kind, key, body, self.refs["v2"][key])
            self.stats.add(kind, time.time() - t0)
        elif kind == "bad_json":
            status, _ = request(port, "POST", "/predictions/sd", b'{"prompt": "a', json_h)
            self.expect(kind, status, 400)
            self.stats.add(kind)
        elif kind == "bad_size":
            body = json.dumps({"prompt": "x", "width": SIZE + 1, "height": SIZE}).encode()
            status, _ = request(port, "POST", "/predictions/sd", body, json_h)
            self.expect(kind, status, 400)
            self.stats.add(kind)
        elif kind == "unknown_model":
            status, _ = request(port, "POST", "/predictions/nope", predict_body(key), json_h)
            self.expect(kind, status, 404)
            self.stats.add(kind)
        elif kind == "disconnect":
            # A real job (a seed no one else asks for), dropped before the reply.
            body = json.dumps({"prompt": "dropped", "seed": self.rng.randrange(1 << 30), "width": SIZE,
                               "height": SIZE, "num_inference_steps": STEPS}).encode()
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(b"POST /predictions/sd HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                time.sleep(self.rng.uniform(0.02, 0.5))
            self.stats.add(kind)
        elif kind == "short_body":
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(b"POST /predictions/sd HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
                time.sleep(self.rng.uniform(0.01, 0.2))
            self.stats.add(kind)
        elif kind == "ping":
            status, _ = request(port, "GET", "/ping")
            self.expect(kind, status, 200)
            self.stats.add(kind)
        elif kind == "metrics":
            status, _ = request(self.ports[2], "GET", "/metrics")
            self.expect(kind, status, 200)
            self.stats.add(kind)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wgsd", default=os.path.join(ROOT, "target", "release", "wgsd"))
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--warmup-minutes", type=float, default=3)
    p.add_argument("--interval", type=float, default=60, help="seconds between samples")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    args = p.parse_args()

    server = Server(args.wgsd, args.batch_size)
    port = server.ports[0]
    json_h = {"Content-Type": "application/json"}
    refs = {"predict": [], "png": [], "v2": []}
    for key in range(len(PROMPTS)):
        for name, path, body in [("predict", "/predictions/sd", predict_body(key)),
                                 ("png", "/predictions/sd?format=png", predict_body(key)),
                                 ("v2", "/v2/models/sd/infer", v2_body(key))]:
            status, reply = request(port, "POST", path, body, json_h)
            if status != 200:
                server.stop()
                sys.exit(f"soak: reference {name} {key}: status {status}: {reply[:200]!r}")
            refs[name].append(reply)

    stats = Stats()
    start = time.time()
    stop_at = start + args.minutes * 60
    clients = [Client(i, server.ports, refs, stats, stop_at) for i in range(args.clients)]
    for c in clients:
        c.start()
    samples = []
    print("minute  rss_mib  hwm_mib  fds  threads  requests  p50_s  p95_s  wrong  unexpected", flush=True)
    while time.time() < stop_at and server.proc.poll() is None:
        time.sleep(min(args.interval, max(0.0, stop_at - time.time())))
        if server.proc.poll() is not None:
            break
        s = server.sample()
        counts, lat = stats.take_window()
        lat.sort()
        s.update(minute=round((time.time() - start) / 60, 1), requests=sum(counts.values()), counts=counts,
                 p50_s=round(statistics.median(lat), 3) if lat else None,
                 p95_s=round(lat[int(0.95 * (len(lat) - 1))], 3) if lat else None,
                 wrong=len(stats.wrong), unexpected=len(stats.unexpected))
        samples.append(s)
        print(f"{s['minute']:6}  {s['rss_mib']:7.1f}  {s['hwm_mib']:7.1f}  {s['fds']:3}  {s['threads']:7}  "
              f"{s['requests']:8}  {s['p50_s']}  {s['p95_s']}  {s['wrong']:5}  {s['unexpected']:10}", flush=True)
    died = server.proc.poll() is not None
    for c in clients:
        c.join(timeout=700)
    after = server.sample() if not died else None
    code = server.stop()

    warm = [s for s in samples if s["minute"] >= args.warmup_minutes] or samples
    summary = {
        "minutes": args.minutes, "clients": args.clients,
        "requests": sum(s["requests"] for s in samples),
        "rss_mib_after_warmup": warm[0]["rss_mib"] if warm else None,
        "rss_mib_end": samples[-1]["rss_mib"] if samples else None,
        "fds_after_warmup": warm[0]["fds"] if warm else None,
        "fds_end": samples[-1]["fds"] if samples else None,
        "fds_idle_after_load": after["fds"] if after else None,
        "wrong_replies": stats.wrong[:20], "unexpected": stats.unexpected[:20],
        "server_died": died, "exit_code_after_sigterm": code,
    }
    print(json.dumps(summary, indent=1))
    ok = not stats.wrong and not stats.unexpected and not died and code == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
