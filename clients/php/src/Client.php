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
 * Background jobs (a daemon started with --background, and its --status address):
 *
 *     $client = new \Sockecho\Client('127.0.0.1', 12387, status: '127.0.0.1:12388');
 *     $job = $client->submit('{"image":"cat.png"}');   // a Job; (string) $job can be stored
 *     $status = $client->status($job);                 // a JobStatus: ->state, ->attempts, ...
 *     $done = $client->result($job);                   // ->output once ->ended()
 *
 * A Client holds only settings, no connection: reuse one for many requests, share it freely.
 * Several daemons: a Pool of Clients.
 */
class Client implements Jobs
{
    public const DEFAULT_HOST = '127.0.0.1';
    public const DEFAULT_PORT = 12387;
    /** 16 MiB: far above a job's reply, far below PHP's default memory_limit of 128M. */
    public const DEFAULT_MAX_REPLY_BYTES = 16 * 1024 * 1024;

    /** 64 MiB: sockecho-server's default --max-output, the most stdout a job's result holds. */
    public const DEFAULT_MAX_RESULT_BYTES = 64 * 1024 * 1024;

    private const READ_CHUNK = 65536;
    /** The most an acknowledgement or a status line may take (the daemon's are under 300 bytes). */
    private const MAX_LINE_BYTES = 4096;

    private readonly float $writeTimeout;
    /** @var array{string, int}|null the status listener as host and port, in the constructor's terms */
    private readonly ?array $statusAt;

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
     * @param string|null $status        the daemon's status listener (its --status): "HOST:PORT",
     *                                   "[IPV6]:PORT" or "unix:/PATH"; needed by status(), result(),
     *                                   cancel(), retry() and wait()
     * @param int        $maxResultBytes largest job output result() accepts: the daemon's
     *                                   --max-output (default 64 MiB); 0 = no limit
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
        ?string $status = null,
        private readonly int $maxResultBytes = self::DEFAULT_MAX_RESULT_BYTES,
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
        if ($maxResultBytes < 0) {
            throw new \InvalidArgumentException("maxResultBytes must be >= 0 (0 = no limit), not $maxResultBytes");
        }
        $this->writeTimeout = $writeTimeout ?? $readTimeout;
        $this->statusAt = $status === null ? null : self::splitAddress($status);
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
            $this->send($connection, $message);
            return $this->readAll($connection, $this->maxReplyBytes > 0 ? $this->maxReplyBytes : null, 'reply');
        } finally {
            $connection->close();
        }
    }

    /**
     * Hands a job to a daemon started with --background (sockecho-server --background --exec
     * PROGRAM): sends $job as the request and returns its handle from the daemon's answer,
     * "accepted ID" (after the daemon's prefix, if it has one), as soon as the job is queued;
     * the program runs after this returns, with the id in SOCKECHO_JOB_ID.
     *
     * A failure before the whole job and its half-close were sent means the daemon did not take
     * it (the connection is then reset, never closed, so a cut request is never taken for a
     * whole one): the exception is the one request() throws. A failure after that is an
     * UnconfirmedJobException: the job may be queued or not.
     *
     * @throws BusyException           the daemon's queue is full: the job was not queued
     * @throws UnconfirmedJobException sent, but no answer: it may or may not have been queued
     * @throws Exception               as request() does (not queued), or an answer that is no acknowledgement
     */
    public function submit(string $job): Job
    {
        $connection = $this->connect();
        try {
            $this->send($connection, $job);
            try {
                $answer = $this->readAll($connection, self::MAX_LINE_BYTES, 'reply');
            } catch (Exception $e) {
                throw new UnconfirmedJobException('submit', $connection->address(), "the job was sent but no answer came ({$e->getMessage()}): it may or may not have been queued", $e->getCode(), $e);
            }
        } finally {
            $connection->close();
        }
        if (preg_match('/accepted ([A-Za-z0-9_-]{1,64})\n\z/', $answer, $match) === 1) {
            return new Job($match[1], $this->address());
        }
        if (str_ends_with($answer, "busy\n")) {
            throw new BusyException('submit', $this->address(), 'the daemon\'s job queue is full: the job was not queued');
        }
        if ($answer === '') {
            throw new UnconfirmedJobException('submit', $this->address(), 'the job was sent but the daemon closed without an answer: it may or may not have been queued');
        }
        throw new Exception('submit', $this->address(), 'not a job acknowledgement: ' . json_encode(substr($answer, 0, 200), JSON_INVALID_UTF8_SUBSTITUTE));
    }

    public function status(Job|string $job): JobStatus
    {
        return $this->ask('status', $job);
    }

    public function result(Job|string $job): JobStatus
    {
        return $this->ask('result', $job);
    }

    public function cancel(Job|string $job): JobStatus
    {
        return $this->ask('cancel', $job);
    }

    public function retry(Job|string $job): JobStatus
    {
        return $this->ask('retry', $job);
    }

    public function wait(Job|string $job, float $timeout, float $interval = 0.1): JobStatus
    {
        if (!is_finite($timeout) || $timeout < 0 || !is_finite($interval) || $interval <= 0) {
            throw new \InvalidArgumentException("wait() needs a timeout >= 0 and an interval > 0 (seconds), not $timeout and $interval");
        }
        $deadline = hrtime(true) + (int) ($timeout * 1e9);
        while (true) {
            $status = $this->status($job);
            if ($status->ended()) {
                return $this->result($job);
            }
            $left = $deadline - hrtime(true);
            if ($left <= 0) {
                return $status;
            }
            usleep((int) min($interval * 1e6, $left / 1e3));
        }
    }

    /** The daemon's job address as messages and Job handles name it: HOST:PORT, [ADDR]:PORT, unix:PATH. */
    public function address(): string
    {
        $path = Connection::unixPath($this->host);
        if ($path !== null) {
            return "unix:$path";
        }
        return str_contains($this->host, ':') && !str_starts_with($this->host, '[') ? "[{$this->host}]:{$this->port}" : "{$this->host}:{$this->port}";
    }

    /** The status listener's address as messages name it, or null when none was given. */
    public function statusAddress(): ?string
    {
        if ($this->statusAt === null) {
            return null;
        }
        [$host, $port] = $this->statusAt;
        $path = Connection::unixPath($host);
        return $path !== null ? "unix:$path" : "$host:$port";
    }

    /**
     * A "HOST:PORT", "[IPV6]:PORT", "unix:/PATH" or "unix:///PATH" address as [host, port] in
     * the constructor's terms.
     *
     * @return array{string, int}
     * @throws \InvalidArgumentException for anything else
     */
    private static function splitAddress(string $address): array
    {
        if (str_starts_with($address, 'unix:')) {
            $path = str_starts_with($address, Connection::UNIX_SCHEME) ? substr($address, strlen(Connection::UNIX_SCHEME)) : substr($address, 5);
            if (!str_starts_with($path, '/') || strlen($path) > 107 || str_contains($path, "\0")) {
                throw new \InvalidArgumentException("a Unix socket address is unix: and an absolute path of at most 107 bytes, not $address");
            }
            return [Connection::UNIX_SCHEME . $path, 0];
        }
        if (preg_match('/\A(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):([0-9]{1,5})\z/', $address, $m) !== 1 || (int) $m[2] < 1 || (int) $m[2] > 65535) {
            throw new \InvalidArgumentException("a status address is HOST:PORT, [IPV6]:PORT or unix:/PATH, not $address");
        }
        return [$m[1], (int) $m[2]];
    }

    /** One request to the status listener: "VERB ID", half-close, the line (and, for result, the output). */
    private function ask(string $verb, Job|string $job): JobStatus
    {
        $job = $this->own($job);
        if ($this->statusAt === null) {
            throw new \LogicException("$verb() needs the daemon's status address: new Client(..., status: 'HOST:PORT')");
        }
        [$host, $port] = $this->statusAt;
        $connection = Connection::open($host, $port, $this->connectTimeout);
        try {
            $connection->setTimeouts($this->readTimeout, $this->writeTimeout);
            $this->send($connection, "$verb {$job->id}\n");
            // The line first, then (result only) the output, read into a string of its own: a
            // 64 MiB output is never copied out of a larger reply.
            $pending = '';
            while (($end = strpos($pending, "\n")) === false) {
                if (strlen($pending) > self::MAX_LINE_BYTES) {
                    throw new ReplyTooLargeException('read', $connection->address(), 'status line longer than ' . self::MAX_LINE_BYTES . ' bytes', SOCKET_EMSGSIZE);
                }
                $chunk = $connection->read(self::READ_CHUNK);
                if ($chunk === '') {
                    throw new Exception('read', $connection->address(), "the daemon closed the connection before its status line (is {$connection->address()} its --status address?)");
                }
                $pending .= $chunk;
            }
            $line = substr($pending, 0, $end);
            $output = (string) substr($pending, $end + 1);
            unset($pending);
            $status = JobStatus::parse($job, $line, null, $verb, $connection->address());
            if ($verb !== 'result' || !$status->ended()) {
                if ($output !== '' || $connection->read(1) !== '') {
                    throw new Exception('read', $connection->address(), "more than a status line in the answer to $verb");
                }
                return $status;
            }
            $limit = $this->maxResultBytes;
            if ($limit > 0 && strlen($output) > $limit) {
                throw new ReplyTooLargeException('read', $connection->address(), "result larger than $limit bytes", SOCKET_EMSGSIZE);
            }
            $output .= $this->readAll($connection, $limit > 0 ? $limit - strlen($output) : null, 'result', $limit);
            if ($status->outputBytes !== null && strlen($output) !== $status->outputBytes) {
                throw new Exception('read', $connection->address(), 'the result was cut: ' . strlen($output) . " of {$status->outputBytes} bytes");
            }
            return JobStatus::parse($job, $line, $output, $verb, $connection->address());
        } finally {
            $connection->close();
        }
    }

    /** $job as a Job this client's daemon accepted. */
    private function own(Job|string $job): Job
    {
        $job = is_string($job) ? Job::fromString($job) : $job;
        if ($job->server !== $this->address()) {
            throw new \InvalidArgumentException("job {$job->id} was accepted by {$job->server}, not by this client's daemon, {$this->address()}");
        }
        return $job;
    }

    /** Writes every byte of $message, then half-closes; on a failure the connection is reset, not closed. */
    private function send(Connection $connection, string $message): void
    {
        try {
            $connection->writeAll($message);
            $connection->shutdownWrite();
        } catch (\Throwable $e) {
            $connection->abort();
            throw $e;
        }
    }

    /**
     * Reads until the daemon closes, at most $limit bytes (null = no limit): it never reads more
     * than one byte past it, that byte being how "too large" is known. $named is the limit as
     * the message gives it.
     */
    private function readAll(Connection $connection, ?int $limit, string $what, ?int $named = null): string
    {
        $reply = '';
        while (true) {
            $want = $limit !== null ? min(self::READ_CHUNK, $limit + 1 - strlen($reply)) : self::READ_CHUNK;
            $chunk = $connection->read($want);
            if ($chunk === '') {
                return $reply;
            }
            $reply .= $chunk;
            if ($limit !== null && strlen($reply) > $limit) {
                throw new ReplyTooLargeException('read', $connection->address(), "$what larger than " . ($named ?? $limit) . ' bytes', SOCKET_EMSGSIZE);
            }
        }
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
