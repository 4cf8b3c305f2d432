<?php

declare(strict_types=1);

namespace Sockecho;

/**
 * The daemon (sockecho-server --background) answered "busy": its job queue is full and the job
 * was not queued. Nothing will run; submit it again later, or tell the user so. The operation
 * is "submit"; getCode() is 0.
 */
class BusyException extends Exception
{
}
