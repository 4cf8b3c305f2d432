<?php

declare(strict_types=1);

namespace Sockecho;

/**
 * A failed exchange with a sockecho daemon. The message names the operation, the address and
 * the reason, e.g. "connect 127.0.0.1:12387: Connection refused"; getCode() is the socket error
 * number (SOCKET_ECONNREFUSED and friends), or 0 when there is none.
 *
 * Catch this class for every failure; catch a subclass to tell the cases apart:
 * ConnectionException (no connection could be made), TimeoutException (a connect, read or write
 * took longer than its limit), ReplyTooLargeException (the reply passed maxReplyBytes),
 * ResetException (the daemon reset the connection: the request was not answered). A plain
 * Exception is any other failure, such as a line-mode daemon closing before its reply line.
 */
class Exception extends \RuntimeException
{
    public function __construct(
        private readonly string $operation,
        private readonly string $address,
        private readonly string $reason,
        int $code = 0,
        ?\Throwable $previous = null,
    ) {
        parent::__construct("$operation $address: $reason", $code, $previous);
    }

    /** What was being done: "connect", "write", "read", or rarely "resolve", "socket", "setsockopt", "shutdown". */
    public function getOperation(): string
    {
        return $this->operation;
    }

    /** The daemon's address as HOST:PORT ([ADDR]:PORT for IPv6); for a failed connect, every address tried, comma-separated. */
    public function getAddress(): string
    {
        return $this->address;
    }

    /** The reason alone, e.g. "Connection refused". */
    public function getReason(): string
    {
        return $this->reason;
    }
}
