"""What the benchmark scripts share: a server started on a free loopback port (or a Unix socket)
and read from /proc, a free port and the wait for a server without a ready line, and this
process's descriptor limit."""

import os
import resource
import select
import signal
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "bench", "out")
TICKS = os.sysconf("SC_CLK_TCK")



def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, process, seconds=10.0):
    """For servers without a ready line: connect until one is accepted (bounded)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{process.args[0]} is not listening on {port}")


def read_to_end(sock):
    """Every byte a socket's peer sends until it closes."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


def raise_nofile():
    """Raise this process's RLIMIT_NOFILE soft limit to its hard limit (never the system's);
    the servers it starts inherit it. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 16
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


def need_programs(script, build, names):
    """The paths of build/tools/NAME, or exit with how to build them."""
    paths = [os.path.join(build, "tools", name) for name in names]
    for path in paths:
        if not os.access(path, os.X_OK):
            raise SystemExit(f"{script}: {path} is missing; build first: "
                             "cmake -B build && cmake --build build -j2")
    return paths


class Server:
    """A server process that prints 'listening on HOST:PORT' (or 'listening on unix:PATH') on
    stdout once ready, its stderr in a log file. Stopped on the way out of a with block."""

    def __init__(self, argv, log_path, name=None):
        self.name = name or os.path.basename(argv[0])
        self.log_path = log_path
        self.port = None
        self.unix_path = None
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.log)
        try:
            self._read_ready_line()
        except BaseException:
            self.stop(kill=True)
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop(kill=True)  # on an error; after a clean stop() nothing is left to do

    def _read_ready_line(self):
        deadline = time.monotonic() + 10
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise RuntimeError(f"{self.name}: no ready line within 10 s")
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                raise RuntimeError(f"{self.name} exited before its ready line")
            line += chunk
        text = line.decode().strip()
        if not text.startswith("listening on "):
            raise RuntimeError(f"{self.name}: unexpected ready line {text!r}")
        where = text[len("listening on "):]
        if where.startswith("unix:"):
            self.unix_path = where[len("unix:"):]
        else:
            self.port = int(where.rsplit(":", 1)[1])

    def _status(self, *keys):
        found = dict.fromkeys(keys, -1)
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in found:
                    found[key] = int(line.split()[1])
        return [found[k] for k in keys]

    def sample(self):
        """(VmRSS in KiB, Threads) from /proc/PID/status."""
        return tuple(self._status("VmRSS", "Threads"))

    def descriptors(self):
        """How many descriptors the process holds open."""
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def cpu_ticks(self):
        """User + system time so far, in clock ticks (/proc/PID/stat fields 14 and 15)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    def reset_peak(self):
        """Reset VmHWM to the current RSS (5 written to clear_refs)."""
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")

    def peak_kib(self):
        """VmHWM: the peak RSS since the start or the last reset_peak()."""
        return self._status("VmHWM")[0]

    def stats(self, timeout=2.0):
        """Ask sockecho-server for a stats line (SIGUSR1); its key=value fields, {} if none."""
        offset = os.path.getsize(self.log_path)
        os.kill(self.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                lines = [line for line in f.read().decode(errors="replace").splitlines()
                         if " stats " in line]
            if lines:
                return {k: int(v) for k, v in (w.split("=", 1) for w in lines[-1].split()
                                               if "=" in w) if v.isdigit()}
            time.sleep(0.05)
        return {}

    def stop(self, kill=False):
        """SIGTERM (SIGKILL if kill), wait up to 30 s, then SIGKILL; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdout.close()
        self.log.close()
        return self.proc.returncode
