<?php

declare(strict_types=1);

namespace Sockecho;

/**
 * A connect, write or read took longer than its limit; getOperation() says which. The code is
 * SOCKET_ETIMEDOUT and the reason "Connection timed out".
 */
class TimeoutException extends Exception
{
}
