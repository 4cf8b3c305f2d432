<?php

declare(strict_types=1);

namespace Sockecho;

/**
 * What the daemon's status listener said about a job at one moment, from its line
 *
 *     STATE id=ID attempts=N[ exit=N| signal=NAME][ reason=R] queued_ms=Q[ run_ms=R output_bytes=B stderr_bytes=E]
 *
 * and, from result() once the job has ended, its stdout. A value: ask again for news.
 */
final class JobStatus
{
    /**
     * @param Job         $job         the job asked about
     * @param JobState    $state       queued, running, retrying, or an end
     * @param int         $attempts    runs started (0 while first queued; from 0 again after retry())
     * @param int|null    $exit        the latest run's exit code, once it exited
     * @param string|null $signal      the signal that ended the latest run ("SIGKILL"), if one did
     * @param string|null $reason      why, where one applies: memory, cpu, interrupted
     * @param int         $queuedMs    from acceptance to the first start (or to now)
     * @param int|null    $runMs       the latest run, to its end or to now; null before the first
     * @param int|null    $outputBytes its stdout's length (known at the run's end); null before the first run
     * @param int|null    $stderrBytes its stderr's length (it went to the daemon's log)
     * @param string|null $output      its stdout (result() of an ended job), else null
     * @param string      $line        the daemon's line as it came, without "\n"
     */
    public function __construct(
        public readonly Job $job,
        public readonly JobState $state,
        public readonly int $attempts,
        public readonly ?int $exit,
        public readonly ?string $signal,
        public readonly ?string $reason,
        public readonly int $queuedMs,
        public readonly ?int $runMs,
        public readonly ?int $outputBytes,
        public readonly ?int $stderrBytes,
        public readonly ?string $output,
        public readonly string $line,
    ) {
    }

    /** The job has ended (ok, failed, timeout, too_large, cancelled). */
    public function ended(): bool
    {
        return $this->state->ended();
    }

    /** The job ended ok: its program exited 0. */
    public function ok(): bool
    {
        return $this->state === JobState::Ok;
    }

    /**
     * @internal Reads the daemon's status line for $job ($line without its "\n").
     *
     * @throws UnknownJobException for "unknown"
     * @throws Exception           for an "error" line, or anything that is not a status line of this job
     */
    public static function parse(Job $job, string $line, ?string $output, string $operation, string $address): self
    {
        $bad = static fn (string $why): Exception => new Exception($operation, $address, "$why: " . json_encode(substr($line, 0, 200), JSON_INVALID_UTF8_SUBSTITUTE));
        if (str_starts_with($line, 'error ')) {
            throw new Exception($operation, $address, 'the daemon refused the request: ' . substr($line, 0, 200));
        }
        $words = explode(' ', $line);
        $word = array_shift($words);
        $fields = [];
        foreach ($words as $pair) {
            $eq = strpos($pair, '=');
            if ($eq === false || $eq === 0) {
                throw $bad('not a status line');
            }
            $fields[substr($pair, 0, $eq)] = substr($pair, $eq + 1);
        }
        if (($fields['id'] ?? null) !== $job->id) {
            throw $bad("not a status line of job {$job->id}");
        }
        if ($word === 'unknown') {
            throw new UnknownJobException($operation, $address, $job);
        }
        $state = JobState::tryFrom((string) $word);
        $number = static function (string $name, bool $required) use ($fields, $bad): ?int {
            if (!isset($fields[$name])) {
                if ($required) {
                    throw $bad("no $name in the status line");
                }
                return null;
            }
            if (preg_match('/\A-?[0-9]{1,18}\z/', $fields[$name]) !== 1) {
                throw $bad("$name is not a number");
            }
            return (int) $fields[$name];
        };
        if ($state === null) {
            throw $bad('unknown state');
        }
        return new self(
            $job,
            $state,
            (int) $number('attempts', true),
            $number('exit', false),
            $fields['signal'] ?? null,
            $fields['reason'] ?? null,
            (int) $number('queued_ms', true),
            $number('run_ms', false),
            $number('output_bytes', false),
            $number('stderr_bytes', false),
            $output,
            $line,
        );
    }
}
