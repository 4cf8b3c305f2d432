<?php

declare(strict_types=1);

namespace Sockecho;

/**
 * A conversation with a daemon in line mode (sockecho-server --mode line), from
 * Client::lineSession(): the daemon greets, then answers each line with one line.
 *
 *     $session = $client->lineSession();
 *     echo $session->greeting();           // "connect"
 *     echo $session->send('one');          // "数据是 one"
 *     $session->close();
 */
final class LineSession
{
    private const READ_CHUNK = 8192;

    /** Bytes received after the last complete line. */
    private string $pending = '';
    private readonly string $greeting;

    /** @internal Opened by Client::lineSession(). */
    public function __construct(private readonly Connection $connection, private readonly int $maxLineBytes)
    {
        try {
            $this->greeting = $this->readLine('greeting');
        } catch (\Throwable $e) {
            $connection->close();
            throw $e;
        }
    }

    public function __destruct()
    {
        $this->close();
    }

    /** The daemon's first line, without its "\n". */
    public function greeting(): string
    {
        return $this->greeting;
    }

    /**
     * Sends one line (a "\n" is added) and returns the daemon's reply line, without its "\n".
     *
     * @throws \InvalidArgumentException if $line contains "\n"
     * @throws Exception                 on failure, as Client::request() does
     */
    public function send(string $line): string
    {
        if (str_contains($line, "\n")) {
            throw new \InvalidArgumentException('a line must not contain "\n"');
        }
        try {
            $this->connection->writeAll($line . "\n");
        } catch (\Throwable $e) {
            // A line cut mid-write must not reach the daemon as a last line without "\n", which
            // it would answer: reset the connection rather than close it.
            $this->connection->abort();
            throw $e;
        }
        return $this->readLine('reply');
    }

    /** Ends the session; later calls do nothing. */
    public function close(): void
    {
        $this->connection->close();
    }

    private function readLine(string $what): string
    {
        $limit = $this->maxLineBytes;
        while (($end = strpos($this->pending, "\n")) === false) {
            if ($limit > 0 && strlen($this->pending) > $limit) {
                throw new ReplyTooLargeException('read', $this->connection->address(), "$what line longer than $limit bytes", SOCKET_EMSGSIZE);
            }
            $chunk = $this->connection->read(self::READ_CHUNK);
            if ($chunk === '') {
                throw new Exception('read', $this->connection->address(), "the daemon closed the connection before its $what line", 0);
            }
            $this->pending .= $chunk;
        }
        if ($limit > 0 && $end > $limit) {
            throw new ReplyTooLargeException('read', $this->connection->address(), "$what line longer than $limit bytes", SOCKET_EMSGSIZE);
        }
        $line = substr($this->pending, 0, $end);
        $this->pending = (string) substr($this->pending, $end + 1);
        return $line;
    }
}
