<?php

declare(strict_types=1);

namespace Sockecho;

/**
 * One connection to a daemon, TCP or Unix-domain, with the socket calls done the careful way: every address a
 * name resolves to is tried, connecting is bounded by a timeout, writes loop until every byte is
 * out and never raise SIGPIPE, reads and writes are bounded by SO_RCVTIMEO / SO_SNDTIMEO, and every
 * failure becomes an Exception naming the operation, the address and the reason. The socket
 * functions' own warnings are kept out of the application's error handler.
 *
 * @internal Used by Client and LineSession; not part of the public API.
 */
final class Connection
{
    /** The largest slice handed to one send(), so a large message is never copied whole per call. */
    private const WRITE_SLICE = 1 << 20;

    private ?\Socket $socket;

    private function __construct(\Socket $socket, private readonly string $address)
    {
        $this->socket = $socket;
    }

    public function __destruct()
    {
        $this->close();
    }

    /**
     * Connects to host:port. A connectTimeout above zero bounds the whole attempt, over every
     * address tried. Throws ConnectionException, or TimeoutException when the time ran out.
     */
    public static function open(string $host, int $port, float $connectTimeout): self
    {
        $path = self::unixPath($host);
        if ($path !== null) {
            return self::openUnix($path, $connectTimeout);
        }
        return self::quietly(static function () use ($host, $port, $connectTimeout): self {
            $deadline = $connectTimeout > 0 ? hrtime(true) + (int) ($connectTimeout * 1e9) : null;
            $tried = [];
            $firstError = 0;
            foreach (self::resolve($host, $port) as [$family, $ip]) {
                $address = self::format($family, $ip, $port);
                $tried[] = $address;
                $socket = socket_create($family, SOCK_STREAM, SOL_TCP);
                if ($socket === false) {
                    $error = socket_last_error();
                    throw new Exception('socket', $address, socket_strerror($error), $error);
                }
                $error = self::connectOne($socket, $ip, $port, $deadline);
                if ($error === 0) {
                    return new self($socket, $address);
                }
                socket_close($socket);
                $firstError = $firstError !== 0 ? $firstError : $error;
                if ($deadline !== null && hrtime(true) >= $deadline) {
                    break;
                }
            }
            $class = $firstError === SOCKET_ETIMEDOUT ? TimeoutException::class : ConnectionException::class;
            throw new $class('connect', implode(', ', $tried), socket_strerror($firstError), $firstError);
        });
    }

    /** How an address names a Unix-domain socket: "unix:///run/sockecho/sockecho.sock". */
    public const UNIX_SCHEME = 'unix://';

    /** The socket path of a "unix://PATH" host, or null for a TCP host. */
    public static function unixPath(string $host): ?string
    {
        return str_starts_with($host, self::UNIX_SCHEME) ? substr($host, strlen(self::UNIX_SCHEME)) : null;
    }

    /**
     * Connects to the Unix-domain socket at $path. A Unix connect() completes at once or waits
     * only for room in the daemon's backlog; SO_SNDTIMEO is what bounds that wait.
     */
    private static function openUnix(string $path, float $connectTimeout): self
    {
        return self::quietly(static function () use ($path, $connectTimeout): self {
            $address = "unix:$path";
            $socket = socket_create(AF_UNIX, SOCK_STREAM, 0);
            if ($socket === false) {
                $error = socket_last_error();
                throw new Exception('socket', $address, socket_strerror($error), $error);
            }
            $limit = ['sec' => (int) $connectTimeout, 'usec' => (int) (fmod($connectTimeout, 1.0) * 1e6)];
            $ok = socket_set_option($socket, SOL_SOCKET, SO_SNDTIMEO, $limit) && socket_connect($socket, $path);
            if (!$ok) {
                $error = socket_last_error($socket);
                socket_close($socket);
                if ($error === SOCKET_EAGAIN || $error === SOCKET_EWOULDBLOCK) {
                    $error = SOCKET_ETIMEDOUT; // the backlog stayed full for all of connectTimeout
                }
                $class = $error === SOCKET_ETIMEDOUT ? TimeoutException::class : ConnectionException::class;
                throw new $class('connect', $address, socket_strerror($error), $error);
            }
            socket_clear_error($socket);
            return new self($socket, $address);
        });
    }

    /** HOST:PORT of the peer, [ADDR]:PORT for IPv6, unix:PATH for a Unix-domain socket. */
    public function address(): string
    {
        return $this->address;
    }

    /**
     * Limits each read and each write to the given seconds of waiting (an idle limit, not a
     * deadline: a transfer that keeps moving is never cut). Zero means no limit.
     */
    public function setTimeouts(float $read, float $write): void
    {
        self::quietly(function () use ($read, $write): void {
            $this->setTimeout(SO_RCVTIMEO, $read);
            $this->setTimeout(SO_SNDTIMEO, $write);
        });
    }

    /** Writes every byte of $data, looping over partial writes. */
    public function writeAll(string $data): void
    {
        self::quietly(function () use ($data): void {
            $socket = $this->socket();
            $total = strlen($data);
            $offset = 0;
            while ($offset < $total) {
                $slice = $offset === 0 && $total <= self::WRITE_SLICE ? $data : substr($data, $offset, self::WRITE_SLICE);
                $sent = socket_send($socket, $slice, strlen($slice), MSG_NOSIGNAL);
                if ($sent === false) {
                    $error = socket_last_error($socket);
                    if ($error === SOCKET_EINTR) {
                        continue;
                    }
                    throw $this->failure('write', $error);
                }
                $offset += $sent;
            }
        });
    }

    /**
     * Half-closes: tells the daemon that nothing more follows, so it sees end of stream. ENOTCONN
     * here means the daemon has reset the connection: a ResetException.
     */
    public function shutdownWrite(): void
    {
        self::quietly(function (): void {
            $socket = $this->socket();
            if (!socket_shutdown($socket, 1)) {
                throw $this->failure('shutdown', socket_last_error($socket));
            }
        });
    }

    /** Reads at most $max bytes, waiting for at least one; '' at end of stream. */
    public function read(int $max): string
    {
        return self::quietly(function () use ($max): string {
            $socket = $this->socket();
            while (true) {
                $chunk = socket_read($socket, $max, PHP_BINARY_READ);
                if ($chunk !== false) {
                    return $chunk;
                }
                $error = socket_last_error($socket);
                if ($error !== SOCKET_EINTR) {
                    throw $this->failure('read', $error);
                }
            }
        });
    }

    /**
     * Closes the socket with a reset (SO_LINGER 0) instead of a FIN: for a request cut short
     * (a write that failed or timed out), so the daemon never takes the bytes that reached it
     * for a whole request ending there. Later calls do nothing.
     */
    public function abort(): void
    {
        if ($this->socket !== null) {
            self::quietly(fn (): bool => socket_set_option($this->socket, SOL_SOCKET, SO_LINGER, ['l_onoff' => 1, 'l_linger' => 0]));
            $this->close();
        }
    }

    /** Closes the socket; later calls do nothing. */
    public function close(): void
    {
        if ($this->socket !== null) {
            socket_close($this->socket);
            $this->socket = null;
        }
    }

    /** An Exception of the right class for a socket error number met during $operation. */
    public function failure(string $operation, int $error): Exception
    {
        // SO_RCVTIMEO and SO_SNDTIMEO report expiry as EAGAIN; say what it means.
        if ($error === SOCKET_EAGAIN || $error === SOCKET_EWOULDBLOCK || $error === SOCKET_ETIMEDOUT) {
            return new TimeoutException($operation, $this->address, socket_strerror(SOCKET_ETIMEDOUT), SOCKET_ETIMEDOUT);
        }
        // A write that meets the reset may see it as EPIPE; ENOTCONN on a socket that was
        // connected means the same (only a reset leaves it unconnected before our close).
        if ($error === SOCKET_ECONNRESET || $error === SOCKET_EPIPE || $error === SOCKET_ENOTCONN) {
            $code = $error === SOCKET_ENOTCONN ? SOCKET_ECONNRESET : $error;
            return new ResetException($operation, $this->address, socket_strerror($code) . ': the daemon reset the connection, the request was not answered (over one of its limits, refused, or a failed program; its log says which)', $code);
        }
        return new Exception($operation, $this->address, socket_strerror($error), $error);
    }

    private function socket(): \Socket
    {
        if ($this->socket === null) {
            throw new \LogicException("connection to {$this->address} is closed");
        }
        return $this->socket;
    }

    private function setTimeout(int $option, float $seconds): void
    {
        if ($seconds <= 0) {
            return;
        }
        $whole = (int) floor($seconds);
        $micro = (int) round(($seconds - $whole) * 1e6);
        if ($micro >= 1000000) {
            [$whole, $micro] = [$whole + 1, 0];
        }
        if ($whole === 0 && $micro === 0) {
            $micro = 1; // a zero timeval would mean "no limit"
        }
        $socket = $this->socket();
        if (!socket_set_option($socket, SOL_SOCKET, $option, ['sec' => $whole, 'usec' => $micro])) {
            throw $this->failure('setsockopt', socket_last_error($socket));
        }
    }

    /**
     * The addresses to try, in order, as [family, ip] pairs: a literal as it is (IPv6 may be
     * bracketed), a name through getaddrinfo.
     *
     * @return list<array{int, string}>
     */
    private static function resolve(string $host, int $port): array
    {
        $literal = strlen($host) > 2 && $host[0] === '[' && str_ends_with($host, ']') ? substr($host, 1, -1) : $host;
        if (filter_var($literal, FILTER_VALIDATE_IP, FILTER_FLAG_IPV4) !== false) {
            return [[AF_INET, $literal]];
        }
        if (filter_var($literal, FILTER_VALIDATE_IP, FILTER_FLAG_IPV6) !== false) {
            return [[AF_INET6, $literal]];
        }
        $infos = socket_addrinfo_lookup($host, (string) $port, ['ai_socktype' => SOCK_STREAM, 'ai_protocol' => SOL_TCP]);
        $found = [];
        foreach ($infos === false ? [] : $infos as $info) {
            $explained = socket_addrinfo_explain($info);
            $family = $explained['ai_family'];
            $ip = $explained['ai_addr']['sin_addr'] ?? $explained['ai_addr']['sin6_addr'] ?? null;
            if (($family === AF_INET || $family === AF_INET6) && is_string($ip)) {
                $found[$family . ' ' . $ip] = [$family, $ip];
            }
        }
        if ($found === []) {
            throw new ConnectionException('resolve', "$host:$port", 'no IPv4 or IPv6 address found for this name');
        }
        return array_values($found);
    }

    /** One non-blocking connect, waited for with select() until $deadline (hrtime ns, null = none); returns 0 or the socket error. */
    private static function connectOne(\Socket $socket, string $ip, int $port, ?int $deadline): int
    {
        if (!socket_set_nonblock($socket)) {
            return socket_last_error($socket);
        }
        if (!socket_connect($socket, $ip, $port)) {
            $error = socket_last_error($socket);
            if ($error !== SOCKET_EINPROGRESS && $error !== SOCKET_EINTR) {
                return $error;
            }
            while (true) {
                $read = null;
                $write = [$socket];
                $except = null;
                $seconds = null;
                $micro = 0;
                if ($deadline !== null) {
                    $left = max(0, $deadline - hrtime(true));
                    $seconds = intdiv($left, 1000000000);
                    $micro = intdiv($left % 1000000000, 1000);
                }
                $ready = socket_select($read, $write, $except, $seconds, $micro);
                if ($ready === false) {
                    $error = socket_last_error();
                    if ($error === SOCKET_EINTR) {
                        continue; // the deadline is absolute, so a signal does not extend it
                    }
                    return $error;
                }
                if ($ready === 0) {
                    return SOCKET_ETIMEDOUT;
                }
                break;
            }
            $error = socket_get_option($socket, SOL_SOCKET, SO_ERROR);
            if ($error === false) {
                return socket_last_error($socket);
            }
            if ($error !== 0) {
                return $error;
            }
        }
        if (!socket_set_block($socket)) {
            return socket_last_error($socket);
        }
        socket_clear_error($socket);
        return 0;
    }

    private static function format(int $family, string $ip, int $port): string
    {
        return $family === AF_INET6 ? "[$ip]:$port" : "$ip:$port";
    }

    /**
     * Runs $work with PHP's warnings from the socket functions silenced: their failures are
     * reported as exceptions instead, and an application's error handler (which may turn
     * warnings into exceptions of its own) never sees them.
     *
     * @template T
     * @param callable(): T $work
     * @return T
     */
    private static function quietly(callable $work): mixed
    {
        set_error_handler(static fn (): bool => true, E_WARNING | E_NOTICE);
        try {
            return $work();
        } finally {
            restore_error_handler();
        }
    }
}
