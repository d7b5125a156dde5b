#!/usr/bin/env python3
"""A small HTTP/1.1 server for webb's lab: real sockets, real HTTP.

  /ok[...]       200 after --delay-ms (default 20)
  /slow[...]     200 after 10 x --delay-ms
  /missing[...]  404
  /fail[...]     500
  anything else  404

Usage: http_server.py PORT [--delay-ms N]
"""
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body go out as two writes; without this, Nagle holds the
    # body until the client's delayed ACK (~40 ms per request).
    disable_nagle_algorithm = True
    delay = 0.02

    def answer(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Set-Cookie", "session=lab-secret")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def route(self):
        path = self.path.split("?", 1)[0]
        if path.startswith("/ok"):
            time.sleep(self.delay)
            self.answer(200, "ok\n")
        elif path.startswith("/slow"):
            time.sleep(self.delay * 10)
            self.answer(200, "slow\n")
        elif path.startswith("/fail"):
            self.answer(500, "failed\n")
        else:
            self.answer(404, "not found\n")

    def do_GET(self):
        self.route()

    def do_HEAD(self):
        self.route()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.route()

    def log_message(self, fmt, *args):
        pass


def main():
    port = int(sys.argv[1])
    if "--delay-ms" in sys.argv:
        Handler.delay = int(sys.argv[sys.argv.index("--delay-ms") + 1]) / 1000
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
