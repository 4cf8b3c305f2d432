<?php

declare(strict_types=1);

namespace Sockecho;

/**
 * Where a background job is in its life, as the daemon's status listener names it: queued,
 * running, retrying (its program exited 75 and it runs again after --retry-delay), then one end.
 * An id the daemon does not know is no state: it is an UnknownJobException.
 */
enum JobState: string
{
    case Queued = 'queued';
    case Running = 'running';
    case Retrying = 'retrying';
    case Ok = 'ok';
    case Failed = 'failed';
    case Timeout = 'timeout';
    case TooLarge = 'too_large';
    case Cancelled = 'cancelled';

    /** True for the five ends: nothing about the job changes any more (unless retry() is asked). */
    public function ended(): bool
    {
        return match ($this) {
            self::Queued, self::Running, self::Retrying => false,
            default => true,
        };
    }
}
