<?php

declare(strict_types=1);

namespace Sockecho;

/**
 * The daemon reset the connection (RST) before its whole reply: the request was not answered.
 * sockecho-server does this to every connection it ends unfinished: a request (in line mode, a
 * line) over its --max-bytes, a --timeout or --request-timeout that ran out, a connection over
 * --max-per-source, a failed --exec program; its log line for the connection says which. The
 * message names the operation that met the reset and the daemon's address; getCode() is
 * SOCKET_ECONNRESET or SOCKET_EPIPE. Nothing of a reply is returned, so retrying the same
 * request usually fails the same way.
 */
class ResetException extends Exception
{
}
