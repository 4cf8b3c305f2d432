"""The protocol served by Python's socketserver, the way a Python programmer would write it.

Usage: python3 py_server.py HOST PORT plain|threading

plain is socketserver.TCPServer (one connection at a time), threading is
socketserver.ThreadingTCPServer (a thread per connection). The handler reads until the client
half-closes and replies with the prefix followed by the request. Both servers keep socketserver's
defaults except SO_REUSEADDR, as most code built on it does. Prints "listening on HOST:PORT" once
ready.
"""

import socketserver
import sys

PREFIX = "数据是 ".encode()


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        chunks = []
        while True:
            chunk = self.request.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        self.request.sendall(PREFIX + b"".join(chunks))


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("plain", "threading"):
        sys.exit("usage: py_server.py HOST PORT plain|threading")
    kind = socketserver.TCPServer if sys.argv[3] == "plain" else socketserver.ThreadingTCPServer
    kind.allow_reuse_address = True
    with kind((sys.argv[1], int(sys.argv[2])), Echo) as server:
        host, port = server.server_address[:2]
        print(f"listening on {host}:{port}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
