<?php

declare(strict_types=1);

namespace Sockecho;

/** No connection could be made: the name did not resolve, or every address refused or was unreachable. */
class ConnectionException extends Exception
{
}
