#!/usr/bin/env python3
"""Load on the viewer: what a flood of requests and an abandoned request cost the server.

Starts `pairlens serve` (the built-in model) on a free loopback port and measures, from
/proc, the server's resident memory and CPU time:

1. a flood: CONCURRENT explain requests at once, each a different caption (none cached), at
   layers 1/1: how many were answered (200) or refused (503), and the memory before, at peak
   and after;
2. an abandoned request: a slow explanation (layers 0/0, N = 200) whose client closes the
   connection after ABANDON_S seconds, and the server's CPU seconds in the next 10 s (zero
   when the computation stops with its client).

Usage: scripts/bench/serve_load.py [--bin target/release/pairlens] [--concurrent 200]
Python standard library only.
"""
import argparse
import http.client
import itertools
import json
import os
import socket
import subprocess
import threading
import time

WORDS = ["shirt", "boot", "bag", "dress", "coat", "sandal", "sneaker", "trousers", "pullover",
         "blouse"]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post(port, path, body, timeout=600):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, r.getheader("Retry-After"), data


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="target/release/pairlens")
    ap.add_argument("--concurrent", type=int, default=200)
    ap.add_argument("--abandon-s", type=float, default=3.0)
    args = ap.parse_args()

    server = subprocess.Popen([args.bin, "serve", "--addr", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        port = int(line.strip().rstrip("/").rsplit(":", 1)[1])
        c = http.client.HTTPConnection("127.0.0.1", port)
        c.request("GET", "/api/info")
        info = json.loads(c.getresponse().read())
        image = info["examples"][0]["image"]
        pid = server.pid
        print(f"server pid {pid}, port {port}, RSS at start {rss_mb(pid):.0f} MB")

        captions = (f"a {a} next to a {b} beside a {c}"
                    for a, b, c in itertools.product(WORDS, repeat=3))
        bodies = [{"image": image, "captions": [next(captions)], "text_layer": 1,
                   "image_layer": 1} for _ in range(args.concurrent)]
        statuses, retry = {}, set()
        peak = [rss_mb(pid)]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb(pid))
                time.sleep(0.02)

        def one(body):
            s, ra, _ = post(port, "/api/explain", body)
            statuses[s] = statuses.get(s, 0) + 1
            if ra:
                retry.add(ra)

        before = rss_mb(pid)
        sampler = threading.Thread(target=sample)
        sampler.start()
        t = time.perf_counter()
        threads = [threading.Thread(target=one, args=(b,)) for b in bodies]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t
        done.set()
        sampler.join()
        time.sleep(1)
        print(f"flood: {args.concurrent} concurrent explains in {elapsed:.1f} s: "
              f"statuses {dict(sorted(statuses.items()))}, Retry-After {sorted(retry)}; "
              f"RSS {before:.0f} MB before, {peak[0]:.0f} MB peak, {rss_mb(pid):.0f} MB after")

        # The abandoned request.
        body = json.dumps({"image": image, "captions": ["a shirt next to a boot"],
                           "text_layer": 0, "image_layer": 0, "steps": 200}).encode()
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(args.abandon_s)
        cpu_at_close = cpu_s(pid)
        s.close()
        time.sleep(10)
        after = cpu_s(pid) - cpu_at_close
        print(f"abandoned: a layers-0/0 N=200 explanation whose client left after "
              f"{args.abandon_s:.0f} s: the server used {after:.2f} CPU s in the next 10 s")
        # For scale: the same request to the end.
        t = time.perf_counter()
        status, _, _ = post(port, "/api/explain", json.loads(body))
        print(f"the same request kept: {status} in {time.perf_counter() - t:.1f} s")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
