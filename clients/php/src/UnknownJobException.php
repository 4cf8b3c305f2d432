<?php

declare(strict_types=1);

namespace Sockecho;

/**
 * The daemon does not know the job: it never issued the id, or it has forgotten the job (ended
 * longer ago than its --keep, past --keep-max, or it was restarted without --spool). Nothing
 * more can be learnt about it. The operation is the verb asked (status, result, cancel, retry);
 * getJob() is the job; getCode() is 0.
 */
class UnknownJobException extends Exception
{
    public function __construct(string $operation, string $address, private readonly Job $job)
    {
        parent::__construct($operation, $address, "unknown job {$job->id}: never issued by this daemon, or forgotten since (--keep, --keep-max, a restart without --spool)");
    }

    public function getJob(): Job
    {
        return $this->job;
    }
}
