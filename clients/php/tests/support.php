<?php

// Test support for the PHP client: a tiny test runner with assertion helpers, and ServerProcess,
// which starts the real sockecho-server on an ephemeral port and reads its ready line.

declare(strict_types=1);

namespace Sockecho\Tests;

final class Failure extends \Exception
{
}

final class Skipped extends \Exception
{
}

/** Fails the test with $message unless $condition holds. */
function check(bool $condition, string $message): void
{
    if (!$condition) {
        throw new Failure($message);
    }
}

/** Fails unless $actual === $expected; binary strings are shown in hex. */
function same(mixed $expected, mixed $actual, string $what): void
{
    if ($expected !== $actual) {
        throw new Failure("$what: expected " . show($expected) . ', got ' . show($actual));
    }
}

/** Runs $body, which must throw a $class; returns what it threw. */
function throws(string $class, callable $body): \Throwable
{
    try {
        $body();
    } catch (\Throwable $e) {
        if ($e instanceof $class) {
            return $e;
        }
        throw new Failure("expected $class, got " . get_class($e) . ': ' . $e->getMessage());
    }
    throw new Failure("expected $class, but nothing was thrown");
}

function skip(string $why): never
{
    throw new Skipped($why);
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
            return;
        }
        if (preg_match('/listening on (\[[^\]]+\]|[^\s]+):(\d+)\s*$/', $line, $m) !== 1) {
            $this->kill();
            throw new \RuntimeException("no ready line from $program (got " . show($line) . '); its log: ' . $this->log());
        }
        $this->host = $m[1];
        $this->port = (int) $m[2];
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

    private function readLine(float $timeout): string
    {
        $line = '';
        $deadline = hrtime(true) + (int) ($timeout * 1e9);
        while (!str_contains($line, "\n")) {
            $left = $deadline - hrtime(true);
            if ($left <= 0 || feof($this->stdout)) {
                break;
            }
            $read = [$this->stdout];
            $none = null;
            if (@stream_select($read, $none, $none, intdiv($left, 1000000000), intdiv($left % 1000000000, 1000)) > 0) {
                $line .= (string) fread($this->stdout, 4096);
            }
        }
        return $line;
    }
}

/**
 * Runs the tests registered in $tests (name => callable), printing one line each, and the
 * summary "N passed, N failed, N skipped". Any PHP warning or notice raised during a test fails
 * it, and so does a descriptor left open. Returns the exit status: 0 when nothing failed.
 *
 * @param array<string, callable(): void> $tests
 */
function run_tests(array $tests, ?string $filter): int
{
    $passed = $failed = $skipped = 0;
    $warnings = [];
    set_error_handler(static function (int $level, string $message, string $file, int $line) use (&$warnings): bool {
        $warnings[] = "$message at " . basename($file) . ":$line";
        return true;
    });
    foreach ($tests as $name => $body) {
        if ($filter !== null && !str_contains($name, $filter)) {
            continue;
        }
        $warnings = [];
        $fdsBefore = open_fds();
        $start = hrtime(true);
        $outcome = null;
        try {
            $body();
            gc_collect_cycles();
            $fdsAfter = open_fds();
            if ($warnings !== []) {
                $outcome = 'PHP raised: ' . implode('; ', $warnings);
            } elseif ($fdsBefore !== null && $fdsAfter !== $fdsBefore) {
                $outcome = "descriptors open before: $fdsBefore, after: $fdsAfter";
            }
        } catch (Skipped $e) {
            $skipped++;
            printf("skip %s: %s\n", $name, $e->getMessage());
            continue;
        } catch (Failure $e) {
            $outcome = $e->getMessage();
        } catch (\Throwable $e) {
            $outcome = get_class($e) . ': ' . $e->getMessage() . ' at ' . basename($e->getFile()) . ':' . $e->getLine();
        }
        $ms = (hrtime(true) - $start) / 1e6;
        if ($outcome === null) {
            $passed++;
            printf("ok   %s (%.0f ms)\n", $name, $ms);
        } else {
            $failed++;
            printf("FAIL %s (%.0f ms): %s\n", $name, $ms, $outcome);
        }
    }
    restore_error_handler();
    if ($passed + $failed === 0) {
        echo "no test ran\n";
        return 1;
    }
    echo "$passed passed, $failed failed, $skipped skipped\n";
    return $failed === 0 ? 0 : 1;
}
