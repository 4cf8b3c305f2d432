<?php

declare(strict_types=1);

namespace Sockecho;

/**
 * The job API, over one daemon (Client, given its status address) or several (Pool): hand a
 * job over, then ask about it by its handle. An application can take either.
 */
interface Jobs
{
    /**
     * Hands $job (the request bytes, the program's stdin) to a daemon started with
     * --background; returns as soon as it is queued.
     *
     * @throws BusyException            the queue is full (every daemon's, for a Pool): the job was not queued
     * @throws UnconfirmedJobException  sent, but no answer came: it may or may not have been queued
     * @throws Exception                no daemon could be reached (ConnectionException, TimeoutException, ...): not queued
     */
    public function submit(string $job): Job;

    /**
     * The job's state line, without its output.
     *
     * @throws UnknownJobException the daemon does not know the job (never issued, or forgotten)
     * @throws Exception           the daemon could not be asked
     */
    public function status(Job|string $job): JobStatus;

    /** As status(), with the job's stdout in ->output once it has ended (null before). */
    public function result(Job|string $job): JobStatus;

    /** Cancels a queued, retrying or running job (the answer comes once it has ended); an ended job is left as it is. */
    public function cancel(Job|string $job): JobStatus;

    /** Queues again a job that ended other than ok (attempts from 0); any other job is left as it is. */
    public function retry(Job|string $job): JobStatus;

    /**
     * Asks for the job's status every $interval seconds until it has ended or $timeout
     * seconds have passed; returns result() once ended, else the last status (not ended).
     */
    public function wait(Job|string $job, float $timeout, float $interval = 0.1): JobStatus;
}
