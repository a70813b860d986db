#!/usr/bin/env python3
"""Throughput of a running `wgsd serve` (or TorchServe): N concurrent clients, each
sending requests back to back like TorchServe's query.py, for a fixed number of requests
in all. Prints images per minute and latency percentiles as one JSON line.

    python3 benches/serve_throughput.py --url http://127.0.0.1:8080/predictions/sd \
        --clients 4 --requests 16 --width 128 --height 128 --steps 10

Every reply is decoded the way clients do (np.array(json.loads(text), dtype="uint8")) and
checked for shape, so a fast wrong answer does not count.
"""

import argparse
import json
import statistics
import sys
import threading
import time

import numpy as np
import requests


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--requests", type=int, default=8, help="requests in all")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--token", help="bearer token, when the server has one")
    args = p.parse_args()

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    lock = threading.Lock()
    next_id = [0]
    latencies = []
    errors = []

    def client() -> None:
        session = requests.Session()
        while True:
            with lock:
                if next_id[0] >= args.requests:
                    return
                i = next_id[0]
                next_id[0] += 1
            body = {"prompt": f"a photo of a red fox number {i}", "seed": i,
                    "width": args.width, "height": args.height, "num_inference_steps": args.steps}
            t0 = time.time()
            r = session.post(args.url, json=body, headers=headers, timeout=3600)
            dt = time.time() - t0
            if r.status_code != 200:
                with lock:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                continue
            img = np.array(json.loads(r.text), dtype="uint8")
            if img.shape != (args.height, args.width, 3):
                with lock:
                    errors.append(f"bad shape {img.shape}")
                continue
            with lock:
                latencies.append(dt)

    t0 = time.time()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    lat = sorted(latencies)
    print(json.dumps({
        "clients": args.clients, "requests": args.requests, "ok": len(lat), "errors": errors[:5],
        "size": f"{args.width}x{args.height}", "steps": args.steps,
        "wall_s": round(wall, 2), "images_per_min": round(60 * len(lat) / wall, 2),
        "latency_s": {"p50": round(statistics.median(lat), 2) if lat else None,
                      "max": round(lat[-1], 2) if lat else None},
    }))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
