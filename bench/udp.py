#!/usr/bin/env python3
"""UDP: sockecho-server --udp against the UDP floor (bench/floor_udp.c), in datagrams/s, and
whether a 65,507-byte datagram comes back whole from sockecho, Python's socketserver.UDPServer
and socat UDP-RECVFROM. One run; prints a Markdown table.

Usage: bench/udp.py [--build DIR] [--seconds S] [--sockets N]
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
PREFIX = "数据是 ".encode()
BIG = 65507


def build_floor(out_dir):
    binary = os.path.join(out_dir, "floor_udp")
    subprocess.run(["cc", "-O2", "-Wall", "-o", binary, os.path.join(BENCH_DIR, "floor_udp.c")],
                   check=True)
    return binary


def start(argv):
    """A server that prints 'listening on udp:HOST:PORT'; returns (process, port)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"{argv[0]} printed no ready line: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rate(floor, port, sockets, seconds, size):
    out = subprocess.run([floor, "load", "127.0.0.1", str(port), str(sockets), str(seconds),
                          str(size)], check=True, capture_output=True, text=True).stdout
    fields = dict(word.split("=") for word in out.split())
    return float(fields["per_second"]), int(fields["lost"])


def big_reply(port, prefix, tries=1):
    """The size of the reply to one 65,507-byte datagram (prefix taken off), or None. Unconnected,
    since socat's forked child answers from a port of its own."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        for _ in range(tries):
            s.sendto(b"x" * BIG, ("127.0.0.1", port))
            try:
                reply, _ = s.recvfrom(70000)
            except socket.timeout:
                continue
            return len(reply) - len(prefix)
        return None


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", default="build")
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--sockets", type=int, default=1)
    args = parser.parse_args()
    server = os.path.join(args.build, "tools", "sockecho-server")
    floor = build_floor(args.build)

    print(f"| server | datagrams/s (6 B, {args.sockets} socket(s)) | x floor | lost |")
    print("| --- | ---: | ---: | ---: |")
    results = {}
    for name, argv in (("floor (C, recvfrom/sendmsg)", [floor, "serve", "127.0.0.1", "0"]),
                       ("sockecho-server --udp", [server, "--udp", "--port", "0", "--quiet"])):
        proc, port = start(argv)
        try:
            results[name] = rate(floor, port, args.sockets, args.seconds, 6)
        finally:
            stop(proc)
    base = results["floor (C, recvfrom/sendmsg)"][0]
    for name, (per_second, lost) in results.items():
        print(f"| {name} | {per_second:.0f} | {per_second / base:.2f}x | {lost} |")

    print()
    print(f"| server | reply to a {BIG}-byte datagram (payload bytes) | whole? |")
    print("| --- | ---: | --- |")
    rows = [("sockecho-server --udp --prefix ''", [server, "--udp", "--port", "0", "--prefix", ""],
             b""),
            ("Python socketserver.UDPServer", [sys.executable,
                                               os.path.join(BENCH_DIR, "py_udp_server.py"),
                                               "127.0.0.1", "0"], PREFIX)]
    for name, argv, prefix in rows:
        proc, port = start(argv)
        try:
            got = big_reply(port, prefix)
        finally:
            stop(proc)
        print(f"| {name} | {got} | {'yes' if got == BIG else 'no'} |")
    if shutil.which("socat"):
        port = free_udp_port()
        # socat prints no ready line; a datagram that beats its bind is lost, so ask again.
        proc = subprocess.Popen(["socat", "-T1", f"UDP-RECVFROM:{port},bind=127.0.0.1,fork",
                                 "EXEC:cat"], stderr=subprocess.DEVNULL)
        try:
            got = big_reply(port, b"", tries=5)
        finally:
            stop(proc)
        print(f"| socat -T1 UDP-RECVFROM:PORT,fork EXEC:cat | {got} | "
              f"{'yes' if got == BIG else 'no'} |")


if __name__ == "__main__":
    main()
