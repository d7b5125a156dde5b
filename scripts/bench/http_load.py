#!/usr/bin/env python3
"""HTTP load for the datapath benchmark: keep-alive GETs for SECONDS, paced
to RATE requests/s in all (0: as fast as possible).

Usage: http_load.py HOST PORT SECONDS [RATE (default 1000)] [CONNECTIONS (default 4)]
Prints the number of responses received. Ends by itself.
"""
import http.client
import sys
import threading
import time


def worker(host, port, deadline, interval, counts, i):
    n = 0
    conn = http.client.HTTPConnection(host, port, timeout=5)
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        try:
            conn.request("GET", f"/ok?worker={i}&n={n}", headers={"Authorization": "Bearer bench"})
            conn.getresponse().read()
            n += 1
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=5)
        if interval:
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    conn.close()
    counts[i] = n


def main():
    host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    rate = float(sys.argv[4]) if len(sys.argv) > 4 else 1000.0
    conns = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    interval = conns / rate if rate > 0 else 0.0
    deadline = time.monotonic() + secs
    counts = [0] * conns
    threads = [
        threading.Thread(target=worker, args=(host, port, deadline, interval, counts, i))
        for i in range(conns)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(sum(counts))


if __name__ == "__main__":
    main()
