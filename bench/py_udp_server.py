"""Python's socketserver.UDPServer answering as sockecho does (prefix + data), for bench/compare.py:
the stock way to write a UDP echo in Python. Its handler gets what the server read, which is
at most max_packet_size (8,192) bytes of each datagram.

Usage: py_udp_server.py HOST PORT   (prints "listening on udp:HOST:PORT" once ready)
"""
import socketserver
import sys

PREFIX = "数据是 ".encode()


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(PREFIX + data, self.client_address)


with socketserver.UDPServer((sys.argv[1], int(sys.argv[2])), Echo) as server:
    host, port = server.server_address[:2]
    print(f"listening on udp:{host}:{port}", flush=True)
    server.serve_forever()
