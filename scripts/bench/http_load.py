#!/usr/bin/env python3
"""HTTP load for the datapath benchmark: keep-alive GETs for SECONDS.

Usage: http_load.py HOST PORT SECONDS [CONNECTIONS]
Prints the number of responses received. Ends by itself.
"""
import http.client
import sys
import threading
import time


def worker(host, port, deadline, counts, i):
    n = 0
    conn = http.client.HTTPConnection(host, port, timeout=5)
    while time.monotonic() < deadline:
        try:
            conn.request("GET", f"/ok?worker={i}&n={n}", headers={"Authorization": "Bearer bench"})
            conn.getresponse().read()
            n += 1
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.close()
    counts[i] = n


def main():
    host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    conns = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    deadline = time.monotonic() + secs
    counts = [0] * conns
    threads = [threading.Thread(target=worker, args=(host, port, deadline, counts, i)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(sum(counts))


if __name__ == "__main__":
    main()
