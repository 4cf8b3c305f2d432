<?php

declare(strict_types=1);

namespace Sockecho;

/**
 * Hands jobs to a sockecho daemon (sockecho-server, or any daemon speaking its protocol).
 *
 * Echo mode, one job per connection:
 *
 *     $client = new \Sockecho\Client('127.0.0.1', 12387, connectTimeout: 2.0, readTimeout: 10.0);
 *     $reply = $client->request("hello\n");   // "数据是 hello\n"
 *
 * request() connects, writes the whole message, half-closes (so the daemon sees the end of the
 * message), reads the reply until the daemon closes, and closes the socket whatever happens.
 * Every failure throws a \Sockecho\Exception naming the operation, the address and the reason
 * ("connect 127.0.0.1:12387: Connection refused"); see its subclasses.
 *
 * A Client holds only settings, no connection: reuse one for many requests, share it freely.
 */
class Client
{
    public const DEFAULT_HOST = '127.0.0.1';
    public const DEFAULT_PORT = 12387;
    /** 16 MiB: far above a job's reply, far below PHP's default memory_limit of 128M. */
    public const DEFAULT_MAX_REPLY_BYTES = 16 * 1024 * 1024;

    private const READ_CHUNK = 65536;

    private readonly float $writeTimeout;

    /**
     * @param string     $host           IPv4 or IPv6 literal (IPv6 may be written "[::1]") or a name;
     *                                   every address a name resolves to is tried in turn (the
     *                                   lookup is the system resolver's, not bounded by connectTimeout);
     *                                   or a Unix-domain socket, "unix:///run/sockecho/sockecho.sock"
     * @param int        $port           1 to 65535 (not used for a Unix socket)
     * @param float      $connectTimeout seconds allowed for connecting (all addresses together); 0 = no limit
     * @param float      $readTimeout    seconds each read may wait for the daemon; 0 = no limit
     * @param float|null $writeTimeout   seconds each write may wait for the daemon; null = as readTimeout
     * @param int        $maxReplyBytes  largest reply accepted (ReplyTooLargeException beyond it); 0 = no limit
     *
     * @throws \InvalidArgumentException for a value out of range
     */
    public function __construct(
        private readonly string $host = self::DEFAULT_HOST,
        private readonly int $port = self::DEFAULT_PORT,
        private readonly float $connectTimeout = 5.0,
        private readonly float $readTimeout = 30.0,
        ?float $writeTimeout = null,
        private readonly int $maxReplyBytes = self::DEFAULT_MAX_REPLY_BYTES,
    ) {
        if ($host === '') {
            throw new \InvalidArgumentException('host must not be empty');
        }
        $path = Connection::unixPath($host);
        if ($path !== null) {
            if ($path === '' || strlen($path) > 107 || str_contains($path, "\0")) {
                throw new \InvalidArgumentException("a Unix socket address is unix:// and an absolute path of at most 107 bytes, not $host");
            }
        } elseif ($port < 1 || $port > 65535) {
            throw new \InvalidArgumentException("port must be 1 to 65535, not $port");
        }
        foreach (['connectTimeout' => $connectTimeout, 'readTimeout' => $readTimeout, 'writeTimeout' => $writeTimeout] as $name => $value) {
            if ($value !== null && (!is_finite($value) || $value < 0)) {
                throw new \InvalidArgumentException("$name must be a number of seconds >= 0 (0 = no limit), not $value");
            }
        }
        if ($maxReplyBytes < 0) {
            throw new \InvalidArgumentException("maxReplyBytes must be >= 0 (0 = no limit), not $maxReplyBytes");
        }
        $this->writeTimeout = $writeTimeout ?? $readTimeout;
    }

    /**
     * One exchange in echo mode: sends $message (any bytes, possibly empty), half-closes, and
     * returns everything the daemon sends until it closes the connection.
     *
     * @throws ConnectionException    no connection could be made (refused, unreachable, unknown name)
     * @throws TimeoutException       connecting, a write or a read took longer than its limit
     * @throws ReplyTooLargeException the reply grew past maxReplyBytes
     * @throws ResetException         the daemon reset the connection (over its limits, refused, a failed program)
     * @throws Exception              any other failure
     */
    public function request(string $message): string
    {
        $connection = $this->connect();
        try {
            $connection->writeAll($message);
            $connection->shutdownWrite();
            $reply = '';
            $limit = $this->maxReplyBytes;
            while (true) {
                // With a limit, never read more than one byte past it: that byte is how "too large" is known.
                $want = $limit > 0 ? min(self::READ_CHUNK, $limit + 1 - strlen($reply)) : self::READ_CHUNK;
                $chunk = $connection->read($want);
                if ($chunk === '') {
                    return $reply;
                }
                $reply .= $chunk;
                if ($limit > 0 && strlen($reply) > $limit) {
                    throw new ReplyTooLargeException('read', $connection->address(), "reply larger than $limit bytes", SOCKET_EMSGSIZE);
                }
            }
        } finally {
            $connection->close();
        }
    }

    /**
     * Hands a job to a daemon started with --background (sockecho-server --background --exec
     * PROGRAM): sends $job as the request and returns the job's id from the daemon's answer,
     * "accepted ID" (after the daemon's prefix, if it has one), as soon as the job is queued;
     * the program runs after this returns, with the id in SOCKECHO_JOB_ID.
     *
     * @throws BusyException the daemon's queue is full: the job was not queued
     * @throws Exception     as request() does, or an answer that is no acknowledgement
     */
    public function submit(string $job): string
    {
        $answer = $this->request($job);
        if (preg_match('/accepted (\S+)\n\z/', $answer, $match) === 1) {
            return $match[1];
        }
        if (str_ends_with($answer, "busy\n")) {
            throw new BusyException('submit', $this->address(), 'the daemon\'s job queue is full');
        }
        throw new Exception('submit', $this->address(), 'not a job acknowledgement: ' . json_encode(substr($answer, 0, 200), JSON_INVALID_UTF8_SUBSTITUTE));
    }

    /** HOST:PORT ([ADDR]:PORT for IPv6, unix:PATH for a Unix socket), as messages name the daemon. */
    private function address(): string
    {
        $path = Connection::unixPath($this->host);
        if ($path !== null) {
            return "unix:$path";
        }
        return str_contains($this->host, ':') && !str_starts_with($this->host, '[') ? "[{$this->host}]:{$this->port}" : "{$this->host}:{$this->port}";
    }

    /**
     * Opens a session in line mode (sockecho-server --mode line): reads the greeting, then each
     * LineSession::send() sends one line and returns the daemon's reply line. maxReplyBytes
     * limits each line. Close it when done (it also closes when no longer referenced).
     *
     * @throws Exception as request() does
     */
    public function lineSession(): LineSession
    {
        return new LineSession($this->connect(), $this->maxReplyBytes);
    }

    /**
     * Line mode in one call: sends each of $lines (without "\n") and returns the reply lines,
     * in order, without their "\n". The greeting is read and dropped.
     *
     * @param  list<string> $lines
     * @return list<string>
     * @throws Exception as request() does
     */
    public function lines(array $lines): array
    {
        $session = $this->lineSession();
        try {
            $replies = [];
            foreach ($lines as $line) {
                $replies[] = $session->send($line);
            }
            return $replies;
        } finally {
            $session->close();
        }
    }

    private function connect(): Connection
    {
        $connection = Connection::open($this->host, $this->port, $this->connectTimeout);
        try {
            $connection->setTimeouts($this->readTimeout, $this->writeTimeout);
        } catch (\Throwable $e) {
            $connection->close();
            throw $e;
        }
        return $connection;
    }
}
