<?php

declare(strict_types=1);

namespace Sockecho;

/**
 * The job API over several daemons that share nothing, as memcached and beanstalkd clients
 * spread their work: each Client is one daemon, with its status address.
 *
 *     $jobs = new \Sockecho\Pool([
 *         new \Sockecho\Client('10.0.0.1', 12387, status: '10.0.0.1:12388'),
 *         new \Sockecho\Client('10.0.0.2', 12387, status: '10.0.0.2:12388'),
 *     ]);
 *     $job = $jobs->submit($request);      // on one of them; (string) $job names which
 *     $jobs->status((string) $job);        // asked of that one, and only that one
 *
 * submit() starts at a daemon picked at random (or the first, with spread: false) and goes on
 * to the next on "busy", or on a failure before the whole job was sent (the daemon did not take
 * it). After the job was sent, a missing answer is an UnconfirmedJobException and no other
 * daemon is tried: handing it on could run it twice. status(), result(), cancel(), retry() and
 * wait() go to the daemon that accepted the job, named in its handle: a daemon that is down
 * holds its jobs until it is back (with --spool; without, its queue is lost with it).
 */
final class Pool implements Jobs
{
    /** @var array<string, Client> by job address */
    private array $clients = [];

    /**
     * @param list<Client> $servers one Client per daemon, each with its status address
     * @param bool         $spread  start each submit() at a random daemon (true) or always at the first (false: a primary and its fallbacks)
     *
     * @throws \InvalidArgumentException no servers, one without a status address, or one address twice
     */
    public function __construct(array $servers, private readonly bool $spread = true)
    {
        if ($servers === []) {
            throw new \InvalidArgumentException('a Pool needs at least one server');
        }
        foreach ($servers as $client) {
            if (!$client instanceof Client) {
                throw new \InvalidArgumentException('a Pool takes Sockecho\Client objects, not ' . get_debug_type($client));
            }
            $address = $client->address();
            if ($client->statusAddress() === null) {
                throw new \InvalidArgumentException("server $address has no status address (new Client(..., status: 'HOST:PORT'))");
            }
            if (isset($this->clients[$address])) {
                throw new \InvalidArgumentException("server $address is in the Pool twice");
            }
            $this->clients[$address] = $client;
        }
    }

    /** The daemons, in the order given. @return list<Client> */
    public function servers(): array
    {
        return array_values($this->clients);
    }

    /**
     * @throws BusyException            every daemon answered busy: the job was not queued
     * @throws UnconfirmedJobException  sent to one daemon, no answer: it may be queued there, or not
     * @throws Exception                no daemon took it, and not all were busy (the first other failure's class, e.g. ConnectionException); every failure is in the message
     */
    public function submit(string $job): Job
    {
        $clients = array_values($this->clients);
        $count = count($clients);
        $first = $this->spread ? random_int(0, $count - 1) : 0;
        $failures = [];
        $cause = null;
        for ($i = 0; $i < $count; $i++) {
            $client = $clients[($first + $i) % $count];
            try {
                return $client->submit($job);
            } catch (UnconfirmedJobException $e) {
                throw $e;
            } catch (BusyException $e) {
                $failures[] = $client->address() . ' busy';
            } catch (Exception $e) {
                $failures[] = $e->getMessage();
                $cause ??= $e;
            }
        }
        $addresses = implode(', ', array_keys($this->clients));
        $what = 'no server queued the job: ' . implode('; ', $failures);
        if ($cause === null) {
            throw new BusyException('submit', $addresses, $what);
        }
        $class = get_class($cause);
        throw new $class('submit', $addresses, $what, $cause->getCode(), $cause);
    }

    public function status(Job|string $job): JobStatus
    {
        [$client, $job] = $this->route($job);
        return $client->status($job);
    }

    public function result(Job|string $job): JobStatus
    {
        [$client, $job] = $this->route($job);
        return $client->result($job);
    }

    public function cancel(Job|string $job): JobStatus
    {
        [$client, $job] = $this->route($job);
        return $client->cancel($job);
    }

    public function retry(Job|string $job): JobStatus
    {
        [$client, $job] = $this->route($job);
        return $client->retry($job);
    }

    public function wait(Job|string $job, float $timeout, float $interval = 0.1): JobStatus
    {
        [$client, $job] = $this->route($job);
        return $client->wait($job, $timeout, $interval);
    }

    /** @return array{Client, Job} the daemon that accepted $job, and the job */
    private function route(Job|string $job): array
    {
        $job = is_string($job) ? Job::fromString($job) : $job;
        $client = $this->clients[$job->server] ?? null;
        if ($client === null) {
            throw new \InvalidArgumentException("job {$job->id} was accepted by {$job->server}, which is not in this Pool (" . implode(', ', array_keys($this->clients)) . ')');
        }
        return [$client, $job];
    }
}
