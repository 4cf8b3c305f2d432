<?php

// Test support for the PHP client's PHPUnit tests: assertion helpers over PHPUnit's Assert (they
// name what differs, in hex for binary strings), and ServerProcess, which starts the real
// sockecho-server on an ephemeral port (or a Unix socket) and reads its ready line.

declare(strict_types=1);

namespace Sockecho\Tests;

use PHPUnit\Framework\Assert;

/** The sockecho-server to test: $SOCKECHO_SERVER (phpunit.xml.dist's default: build/tools/). */
function server_program(): string
{
    $server = getenv('SOCKECHO_SERVER') ?: dirname(__DIR__, 3) . '/build/tools/sockecho-server';
    if (!is_executable($server)) {
        Assert::fail("no sockecho-server at $server: build it, or set SOCKECHO_SERVER");
    }
    return $server;
}

// The reply prefix "数据是 ", spelled as its UTF-8 bytes so this file's encoding cannot change it.
const PREFIX = "\xe6\x95\xb0\xe6\x8d\xae\xe6\x98\xaf\x20";

/** A listening socket on 127.0.0.1, port 0, that never accepts: a daemon that never answers. */
function silent_listener(int $backlog): array
{
    $socket = socket_create(AF_INET, SOCK_STREAM, SOL_TCP);
    check($socket !== false, 'socket_create failed');
    check(socket_bind($socket, '127.0.0.1', 0) && socket_listen($socket, $backlog), 'bind/listen failed: ' . socket_strerror(socket_last_error($socket)));
    check(socket_getsockname($socket, $address, $port), 'getsockname failed');
    return [$socket, $port];
}

/** Fails the test with $message unless $condition holds. */
function check(bool $condition, string $message): void
{
    Assert::assertTrue($condition, $message);
}

/** Fails unless $actual === $expected; binary strings are shown in hex. */
function same(mixed $expected, mixed $actual, string $what): void
{
    Assert::assertTrue($expected === $actual, "$what: expected " . show($expected) . ', got ' . show($actual));
}

/** Runs $body, which must throw a $class; returns what it threw. */
function throws(string $class, callable $body): \Throwable
{
    try {
        $body();
    } catch (\Throwable $e) {
        if ($e instanceof $class) {
            Assert::assertInstanceOf($class, $e);
            return $e;
        }
        Assert::fail("expected $class, got " . get_class($e) . ': ' . $e->getMessage());
    }
    Assert::fail("expected $class, but nothing was thrown");
}

function skip(string $why): never
{
    Assert::markTestSkipped($why);
}

function show(mixed $value): string
{
    if (!is_string($value)) {
        return var_export($value, true);
    }
    if (preg_match('//u', $value) === 1 && !preg_match('/[\x00-\x08\x0b-\x1f\x7f]/', $value)) {
        return strlen($value) > 200 ? '"' . substr($value, 0, 200) . '..." (' . strlen($value) . ' bytes)' : '"' . $value . '"';
    }
    $hex = bin2hex(substr($value, 0, 64));
    return 'hex ' . $hex . (strlen($value) > 64 ? '... (' . strlen($value) . ' bytes)' : '');
}

/** Seconds since an earlier hrtime(true). */
function since(int $start): float
{
    return (hrtime(true) - $start) / 1e9;
}

/** The process's open descriptors, or null where /proc is missing. */
function open_fds(): ?int
{
    $entries = @scandir('/proc/self/fd');
    return $entries === false ? null : count($entries);
}

/**
 * sockecho-server started for one test: `--port 0`, and the port read from its ready line
 * ("listening on HOST:PORT"), or with a host of "unix:///path" on that Unix socket (port 0); never a fixed port, never a sleep. Stopped with SIGTERM by stop() or
 * killed when it goes out of scope.
 */
final class ServerProcess
{
    public readonly string $host;
    public readonly int $port;
    /** The status listener's address from the "status on ADDR" line (with --status), else null. */
    public readonly ?string $status;
    /** Bytes read from stdout after the last line taken. */
    private string $buffered = '';
    /** @var resource */
    private $process;
    /** @var resource */
    private $stdout;
    private string $logFile;

    /** @param list<string> $args extra flags, e.g. ['--mode', 'line'] */
    public function __construct(string $program, array $args = [], string $host = '127.0.0.1', float $timeout = 10.0)
    {
        $this->logFile = (string) tempnam(sys_get_temp_dir(), 'sockecho-php-test-');
        // "unix:///path": a Unix socket there (--unix), named by the client as the same string.
        $unix = str_starts_with($host, 'unix://') ? substr($host, strlen('unix://')) : null;
        $where = $unix !== null ? ['--unix', $unix] : ['--host', $host, '--port', '0'];
        $command = array_merge([$program], $where, $args);
        $process = proc_open($command, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['file', $this->logFile, 'w']], $pipes);
        if ($process === false) {
            throw new \RuntimeException("cannot start $program");
        }
        $this->process = $process;
        $this->stdout = $pipes[1];
        stream_set_blocking($this->stdout, false);
        $line = $this->readLine($timeout);
        if ($unix !== null) {
            if (rtrim($line) !== "listening on unix:$unix") {
                $this->kill();
                throw new \RuntimeException("no ready line from $program (got " . show($line) . '); its log: ' . $this->log());
            }
            $this->host = $host;
            $this->port = 0;
            $this->status = $this->statusLine($args, $program, $timeout);
            return;
        }
        if (preg_match('/listening on (\[[^\]]+\]|[^\s]+):(\d+)\s*$/', $line, $m) !== 1) {
            $this->kill();
            throw new \RuntimeException("no ready line from $program (got " . show($line) . '); its log: ' . $this->log());
        }
        $this->host = $m[1];
        $this->port = (int) $m[2];
        $this->status = $this->statusLine($args, $program, $timeout);
    }

    /** With --status among $args, the address of the "status on ADDR" line (a "metrics on" line may come first). */
    private function statusLine(array $args, string $program, float $timeout): ?string
    {
        if (!in_array('--status', $args, true)) {
            return null;
        }
        for ($i = 0; $i < 2; $i++) {
            $line = $this->readLine($timeout);
            if (preg_match('/\Astatus on (\S+)\n\z/', $line, $m) === 1) {
                return $m[1];
            }
        }
        $this->kill();
        throw new \RuntimeException("no status line from $program (got " . show($line) . '); its log: ' . $this->log());
    }

    /** SIGKILL, as a crash: waits for the exit and returns nothing; the server's socket files stay. */
    public function crash(): void
    {
        $this->kill();
    }

    public function __destruct()
    {
        $this->kill();
        @unlink($this->logFile);
    }

    /** What the server wrote on stderr so far. */
    public function log(): string
    {
        return (string) @file_get_contents($this->logFile);
    }

    /** SIGTERM, then waits (bounded) for the server to exit; returns its exit status. */
    public function stop(float $timeout = 10.0): int
    {
        if (!is_resource($this->process)) {
            throw new \LogicException('server already stopped');
        }
        proc_terminate($this->process, 15);
        // The server's stdout reaches end of file when it exits: wait for that, not for a clock.
        $deadline = hrtime(true) + (int) ($timeout * 1e9);
        while (!feof($this->stdout)) {
            $left = $deadline - hrtime(true);
            if ($left <= 0) {
                $this->kill();
                throw new \RuntimeException("the server did not exit within $timeout s of SIGTERM");
            }
            $read = [$this->stdout];
            $none = null;
            if (@stream_select($read, $none, $none, intdiv($left, 1000000000), intdiv($left % 1000000000, 1000)) === false) {
                continue; // interrupted by a signal
            }
            fread($this->stdout, 8192);
        }
        fclose($this->stdout);
        return proc_close($this->process);
    }

    private function kill(): void
    {
        if (is_resource($this->process)) {
            proc_terminate($this->process, 9);
            if (is_resource($this->stdout)) {
                fclose($this->stdout);
            }
            proc_close($this->process);
        }
    }

    /** The next line of the server's stdout, with its "\n" (without, if it ended or $timeout passed first). */
    private function readLine(float $timeout): string
    {
        $deadline = hrtime(true) + (int) ($timeout * 1e9);
        while (!str_contains($this->buffered, "\n")) {
            $left = $deadline - hrtime(true);
            if ($left <= 0 || feof($this->stdout)) {
                break;
            }
            $read = [$this->stdout];
            $none = null;
            if (@stream_select($read, $none, $none, intdiv($left, 1000000000), intdiv($left % 1000000000, 1000)) > 0) {
                $this->buffered .= (string) fread($this->stdout, 4096);
            }
        }
        $end = strpos($this->buffered, "\n");
        $line = $end === false ? $this->buffered : substr($this->buffered, 0, $end + 1);
        $this->buffered = (string) substr($this->buffered, strlen($line));
        return $line;
    }
}
