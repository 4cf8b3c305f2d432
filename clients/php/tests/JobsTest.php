<?php

// The job API (Client::submit, status, result, cancel, retry, wait; Job; JobStatus; Pool)
// against real sockecho-server daemons started with --background and --status, over TCP and over
// Unix sockets:
//
//     SOCKECHO_SERVER=build/tools/sockecho-server phpunit -c clients/php/phpunit.xml.dist
//
// Every daemon is on an ephemeral port or a Unix socket in a scratch directory, found through
// its ready lines; waits for jobs are bounded polls of the status listener (Client::wait).

declare(strict_types=1);

namespace Sockecho\Tests;

use PHPUnit\Framework\TestCase;
use Sockecho\BusyException;
use Sockecho\Client;
use Sockecho\ConnectionException;
use Sockecho\Exception;
use Sockecho\Job;
use Sockecho\JobState;
use Sockecho\JobStatus;
use Sockecho\Pool;
use Sockecho\ReplyTooLargeException;
use Sockecho\TimeoutException;
use Sockecho\UnconfirmedJobException;
use Sockecho\UnknownJobException;

final class JobsTest extends TestCase
{
    /**
     * The job program of these tests: its first line says what to do, the rest is its input.
     * "echo": the rest back; "fail": exit 3; "once": exit 75 on the first attempt, then ok;
     * "sleep": run until cancelled; "slow": the rest back after 50 ms; "big N": N bytes.
     */
    private const PROGRAM = <<<'SH'
        read -r what
        case "$what" in
          echo) exec cat ;;
          fail) exit 3 ;;
          once) [ "$SOCKECHO_JOB_ATTEMPT" = 1 ] && exit 75; echo "attempt $SOCKECHO_JOB_ATTEMPT" ;;
          sleep) exec sleep 60 ;;
          slow) sleep 0.05; exec cat ;;
          big\ *) head -c "${what#big }" /dev/zero ;;
          *) exit 2 ;;
        esac
        SH;

    private const WAIT = 20.0;

    private ?int $fdsBefore = null;
    private ?string $dir = null;

    protected function setUp(): void
    {
        $this->fdsBefore = open_fds();
    }

    protected function tearDown(): void
    {
        if ($this->dir !== null) {
            exec('rm -rf ' . escapeshellarg($this->dir));
        }
    }

    protected function assertPostConditions(): void
    {
        gc_collect_cycles();
        if ($this->fdsBefore !== null) {
            $this->assertSame($this->fdsBefore, open_fds(), 'descriptors open before and after the test');
        }
    }

    /** A scratch directory, removed after the test. */
    private function scratch(): string
    {
        $this->dir = sys_get_temp_dir() . '/sockecho-php-jobs-' . getmypid() . '-' . bin2hex(random_bytes(4));
        check(mkdir($this->dir, 0700), "mkdir {$this->dir}");
        return $this->dir;
    }

    /** @param list<string> $flags */
    private static function daemon(string $where, array $flags = [], string $status = '127.0.0.1:0'): ServerProcess
    {
        $args = array_merge(['--background', '--status', $status, '--retry-delay', '0.5'], $flags, ['--exec', 'sh', '-c', self::PROGRAM]);
        return new ServerProcess(server_program(), $args, $where);
    }

    private static function client(ServerProcess $daemon): Client
    {
        return new Client($daemon->host, $daemon->port, connectTimeout: 5.0, readTimeout: 10.0, status: $daemon->status);
    }

    /** The whole life of jobs, asked through $client (one daemon, --jobs 1). */
    private static function jobLife(Client $client): void
    {
        // A job and its handle.
        $payload = '';
        for ($i = 0; $i < 256; $i++) {
            $payload .= chr($i);
        }
        $job = $client->submit("echo\n$payload");
        check(preg_match(Job::ID_PATTERN, $job->id) === 1 && strlen($job->id) === 22, 'an id of 22 characters: ' . $job->id);
        same($client->address(), $job->server, 'the handle names the daemon');
        same("{$job->id}@{$client->address()}", (string) $job, 'the string form');
        $again = Job::fromString((string) $job);
        same([$job->id, $job->server], [$again->id, $again->server], 'the string form read back');
        $first = $client->status($job);
        check(in_array($first->state, [JobState::Queued, JobState::Running, JobState::Ok], true), 'first state: ' . $first->line);
        same(null, $first->output, 'status() has no output');
        $done = $client->wait((string) $job, self::WAIT);
        same(JobState::Ok, $done->state, 'state of ' . $done->line);
        check($done->ended() && $done->ok(), 'ended and ok');
        same([1, 0, null, null], [$done->attempts, $done->exit, $done->signal, $done->reason], 'attempts, exit, signal, reason');
        same($payload, $done->output, 'its output, every byte value');
        same(256, $done->outputBytes, 'output_bytes');
        check($done->queuedMs >= 0 && $done->runMs !== null && $done->runMs >= 0, 'queued_ms and run_ms: ' . $done->line);
        same($done->line, $client->status($job)->line, 'status() of an ended job: the same line');
        same($done->line, $client->cancel($job)->line, 'cancel() leaves an ended job as it is');
        same($done->line, $client->retry($job)->line, 'retry() leaves an ok job as it is');

        // Larger than the client's old 16 MiB cap: result() takes up to --max-output (64 MiB).
        $big = $client->wait($client->submit("big 20971520\n"), self::WAIT);
        same(JobState::Ok, $big->state, 'the 20 MiB job: ' . $big->line);
        same(20 << 20, strlen((string) $big->output), 'the 20 MiB result, whole');
        $small = new Client(...self::settings($client, maxResultBytes: 1 << 20));
        $e = throws(ReplyTooLargeException::class, static fn () => $small->result($big->job));
        same("read {$client->statusAddress()}: result larger than 1048576 bytes", $e->getMessage(), 'message');
        $exact = new Client(...self::settings($client, maxResultBytes: 20 << 20));
        same(20 << 20, strlen((string) $exact->result($big->job)->output), 'a result of exactly maxResultBytes');

        // A failure, and retry().
        $failed = $client->wait($client->submit("fail\n"), self::WAIT);
        same([JobState::Failed, 1, 3], [$failed->state, $failed->attempts, $failed->exit], 'failed, once, exit 3: ' . $failed->line);
        same('', $failed->output, 'no output');
        $retried = $client->retry($failed->job);
        check(!$retried->ended() || $retried->line !== $failed->line, 'retry() queues it again: ' . $retried->line);
        $again = $client->wait($failed->job, self::WAIT);
        same([JobState::Failed, 1], [$again->state, $again->attempts], 'failed again, attempts from 0: ' . $again->line);

        // Exit 75 once: retrying (after --retry-delay 0.5), then ok on the second attempt.
        $once = $client->submit("once\n");
        $seen = [];
        $deadline = hrtime(true) + (int) (self::WAIT * 1e9);
        do {
            $now = $client->status($once);
            $seen[$now->state->value] = true;
        } while (!$now->ended() && hrtime(true) < $deadline && usleep(20000) === null);
        check(isset($seen['retrying']), 'seen retrying: ' . implode(' ', array_keys($seen)));
        $once = $client->result($once);
        same([JobState::Ok, 2, "attempt 2\n"], [$once->state, $once->attempts, $once->output], 'ok on the second attempt: ' . $once->line);

        // Cancel: a running job and the queued one behind it (--jobs 1).
        $running = $client->submit("sleep\n");
        $queued = $client->submit("echo\nnever");
        $deadline = hrtime(true) + (int) (self::WAIT * 1e9);
        while ($client->status($running)->state !== JobState::Running && hrtime(true) < $deadline) {
            usleep(10000);
        }
        same(JobState::Queued, $client->status($queued)->state, 'the second job waits');
        $cancelled = $client->cancel($queued);
        same([JobState::Cancelled, 0], [$cancelled->state, $cancelled->attempts], 'a queued job cancelled: ' . $cancelled->line);
        $cancelled = $client->cancel($running);
        same([JobState::Cancelled, 1], [$cancelled->state, $cancelled->attempts], 'a running job cancelled: ' . $cancelled->line);
        same('', $client->result($running)->output, 'its output until the cancel');
        same(JobState::Cancelled, $client->wait($queued, 0.0)->state, 'the queued one never ran');

        // Jobs the daemon does not know.
        $unknown = new Job('NoSuchJob0000000000000', $client->address());
        foreach (['status', 'result', 'cancel', 'retry'] as $verb) {
            $e = throws(UnknownJobException::class, static fn () => $client->$verb($unknown));
            same($verb, $e->getOperation(), 'operation');
            same($client->statusAddress(), $e->getAddress(), 'address');
            same($unknown, $e->getJob(), 'the job');
            check(str_contains($e->getMessage(), 'unknown job NoSuchJob0000000000000'), 'message: ' . $e->getMessage());
        }

        // Handles of another daemon, and strings that are no handle.
        throws(\InvalidArgumentException::class, static fn () => $client->status(new Job($job->id, '192.0.2.1:1')));
        throws(\InvalidArgumentException::class, static fn () => $client->status($job->id));
        throws(\InvalidArgumentException::class, static fn () => Job::fromString('a b@127.0.0.1:1'));
        throws(\InvalidArgumentException::class, static fn () => new Job(str_repeat('a', 65), '127.0.0.1:1'));
        throws(\InvalidArgumentException::class, static fn () => new Job('abc', ''));
    }

    /** The constructor arguments of $client with some changed, for new Client(...$args). */
    private static function settings(Client $client, int $maxResultBytes): array
    {
        $address = $client->address();
        $unix = str_starts_with($address, 'unix:');
        preg_match('/\A(.*):(\d+)\z/', $address, $m);
        return [
            'host' => $unix ? 'unix://' . substr($address, 5) : $m[1],
            'port' => $unix ? 12387 : (int) $m[2],
            'connectTimeout' => 5.0,
            'readTimeout' => 10.0,
            'status' => $client->statusAddress(),
            'maxResultBytes' => $maxResultBytes,
        ];
    }

    /** the life of jobs over TCP: submit, status, result, wait, retry, exit 75, cancel, unknown */
    public function testTheLifeOfJobsOverTcp(): void
    {
        $daemon = self::daemon('127.0.0.1', ['--jobs', '1']);
        self::jobLife(self::client($daemon));
        same(0, $daemon->stop(), 'exit status after SIGTERM');
        check(str_contains($daemon->log(), 'status peer=') && str_contains($daemon->log(), 'verb=cancel outcome=ok'), 'the status listener logged the requests');
    }

    /** the life of jobs over Unix sockets (--unix, --status unix:) */
    public function testTheLifeOfJobsOverUnixSockets(): void
    {
        $dir = $this->scratch();
        $daemon = self::daemon("unix://$dir/jobs.sock", ['--jobs', '1'], "unix:$dir/status.sock");
        same("unix:$dir/status.sock", $daemon->status, 'the status line');
        $client = self::client($daemon);
        same("unix:$dir/jobs.sock", $client->address(), 'the job address');
        self::jobLife($client);
        same(0, $daemon->stop(), 'exit status after SIGTERM');
    }

    /** status() needs a status address; a status listener down or silent is a clear exception */
    public function testStatusListenerMissingRefusedOrSilent(): void
    {
        $job = new Job('q3VbX0n_4T2kLw8sYc1JZA', '127.0.0.1:12387');
        throws(\LogicException::class, static fn () => (new Client())->status($job));
        foreach (['127.0.0.1', '127.0.0.1:0', 'unix:relative', 'host:port', '::1:12388'] as $bad) {
            throws(\InvalidArgumentException::class, static fn () => new Client(status: $bad));
        }
        same('[::1]:12388', (new Client(status: '[::1]:12388'))->statusAddress(), 'an IPv6 status address');
        same('unix:/run/s.sock', (new Client(status: 'unix:///run/s.sock'))->statusAddress(), 'unix:// is unix:');

        $holder = socket_create(AF_INET, SOCK_STREAM, SOL_TCP);
        check($holder !== false && socket_bind($holder, '127.0.0.1', 0), 'bind failed');
        socket_getsockname($holder, $address, $port);
        try {
            $e = throws(ConnectionException::class, static fn () => (new Client(status: "127.0.0.1:$port"))->status($job));
            same("connect 127.0.0.1:$port: Connection refused", $e->getMessage(), 'message');
        } finally {
            socket_close($holder);
        }
        [$listener, $port] = silent_listener(8);
        try {
            $e = throws(TimeoutException::class, static fn () => (new Client(readTimeout: 0.3, status: "127.0.0.1:$port"))->result($job));
            same("read 127.0.0.1:$port: Connection timed out", $e->getMessage(), 'message');
        } finally {
            socket_close($listener);
        }
    }

    /** status lines: every field read; an error line, another job's line or garbage is an Exception */
    public function testStatusLinesAreReadStrictly(): void
    {
        $job = new Job('abc', '127.0.0.1:1');
        $s = JobStatus::parse($job, 'failed id=abc attempts=2 signal=SIGKILL reason=memory queued_ms=4 run_ms=12 output_bytes=7 stderr_bytes=1', null, 'status', 'x');
        same([JobState::Failed, 2, null, 'SIGKILL', 'memory', 4, 12, 7, 1], [$s->state, $s->attempts, $s->exit, $s->signal, $s->reason, $s->queuedMs, $s->runMs, $s->outputBytes, $s->stderrBytes], 'fields');
        $s = JobStatus::parse($job, 'queued id=abc attempts=0 queued_ms=9', null, 'status', 'x');
        same([JobState::Queued, null, null], [$s->state, $s->runMs, $s->outputBytes], 'a queued job has no run fields');
        foreach ([
            'error usage: status|result|cancel|retry ID' => 'the daemon refused the request: error usage',
            'ok id=other attempts=1 queued_ms=1' => 'not a status line of job abc',
            'sleeping id=abc attempts=1 queued_ms=1' => 'unknown state',
            'ok id=abc queued_ms=1' => 'no attempts',
            'ok id=abc attempts=x queued_ms=1' => 'attempts is not a number',
            '数据是 accepted abc' => 'not a status line',
        ] as $line => $says) {
            $e = throws(Exception::class, static fn () => JobStatus::parse($job, $line, null, 'status', '127.0.0.1:2'));
            check(str_contains($e->getMessage(), $says) && str_starts_with($e->getMessage(), 'status 127.0.0.1:2: '), "$line: " . $e->getMessage());
        }
        throws(UnknownJobException::class, static fn () => JobStatus::parse($job, 'unknown id=abc attempts=0 queued_ms=0', null, 'result', 'x'));
    }

    /** submit(): cut before the end is not queued and the daemon sees a reset; sent without answer is unconfirmed */
    public function testSubmitCutBeforeTheEndIsNotQueuedSentWithoutAnswerIsUnconfirmed(): void
    {
        [$listener, $port] = silent_listener(8);
        try {
            // Far more than both ends' buffers: the write times out mid-job.
            $e = throws(TimeoutException::class, static fn () => (new Client('127.0.0.1', $port, readTimeout: 10.0, writeTimeout: 0.3))->submit(str_repeat('j', 64 << 20)));
            same('write', $e->getOperation(), 'operation');
            // The daemon's side of that connection: a reset, never an end of stream after a cut job.
            $peer = socket_accept($listener);
            check($peer !== false, 'accept');
            socket_set_option($peer, SOL_SOCKET, SO_RCVTIMEO, ['sec' => 5, 'usec' => 0]);
            $got = 0;
            $error = 0;
            while (true) {
                $chunk = @socket_read($peer, 1 << 20, PHP_BINARY_READ);
                if ($chunk === false) {
                    $error = socket_last_error($peer);
                    break;
                }
                if ($chunk === '') {
                    break;
                }
                $got += strlen($chunk);
            }
            socket_close($peer);
            same(SOCKET_ECONNRESET, $error, "the daemon's read after $got bytes of the cut job (0 = an end of stream)");

            // A whole job and its half-close, no answer: the daemon may have it.
            $e = throws(UnconfirmedJobException::class, static fn () => (new Client('127.0.0.1', $port, readTimeout: 0.3))->submit('job'));
            same('submit', $e->getOperation(), 'operation');
            same("127.0.0.1:$port", $e->getAddress(), 'address');
            check($e->getPrevious() instanceof TimeoutException, 'the read timeout is its cause');
            check(str_contains($e->getMessage(), 'it may or may not have been queued'), 'message: ' . $e->getMessage());
        } finally {
            socket_close($listener);
        }
    }

    /** a Pool: busy and refused go on to the next server, unconfirmed does not, every server busy is BusyException */
    public function testAPoolGoesOnToTheNextServerOnBusyOrRefusedNeverAfterSending(): void
    {
        $a = self::daemon('127.0.0.1', ['--jobs', '1', '--queue', '0']);
        $b = self::daemon('127.0.0.1', ['--jobs', '1', '--queue', '0']);
        $ca = self::client($a);
        $cb = self::client($b);
        $sleeper = $ca->submit("sleep\n");  // a holds its one slot: busy from now on
        $pool = new Pool([$ca, $cb], spread: false);
        $onB = $pool->submit("sleep\n");
        same($cb->address(), $onB->server, 'a busy: the job went to b');
        $state = $pool->status((string) $onB)->state;
        check(in_array($state, [JobState::Queued, JobState::Running], true), 'asked of b through the pool: ' . $state->value);
        $e = throws(BusyException::class, static fn () => $pool->submit("echo\nthird"));
        same("submit {$ca->address()}, {$cb->address()}: no server queued the job: {$ca->address()} busy; {$cb->address()} busy", $e->getMessage(), 'message');
        same(JobState::Cancelled, $pool->cancel($sleeper)->state, 'cancelled on a through the pool');
        same(JobState::Cancelled, $pool->cancel($onB)->state, 'cancelled on b through the pool');
        throws(\InvalidArgumentException::class, static fn () => $pool->status(new Job($onB->id, '192.0.2.1:9')));

        // Refused (a port held, not listening) goes on; a silent daemon after the send does not.
        $holder = socket_create(AF_INET, SOCK_STREAM, SOL_TCP);
        check($holder !== false && socket_bind($holder, '127.0.0.1', 0), 'bind failed');
        socket_getsockname($holder, $address, $down);
        [$listener, $silent] = silent_listener(8);
        try {
            $refused = new Client('127.0.0.1', $down, status: "127.0.0.1:$down");
            same($cb->address(), (new Pool([$refused, $cb], spread: false))->submit("echo\nx")->server, 'refused: the job went to b');
            $e = throws(ConnectionException::class, static fn () => (new Pool([$refused], spread: false))->submit('x'));
            same("submit 127.0.0.1:$down: no server queued the job: connect 127.0.0.1:$down: Connection refused", $e->getMessage(), 'all refused');
            $mute = new Client('127.0.0.1', $silent, readTimeout: 0.3, status: "127.0.0.1:$silent");
            // Handed on to b, it would have been queued there (or refused): the throw is the proof.
            throws(UnconfirmedJobException::class, static fn () => (new Pool([$mute, $cb], spread: false))->submit("echo\ny"));
        } finally {
            socket_close($holder);
            socket_close($listener);
        }
        throws(\InvalidArgumentException::class, static fn () => new Pool([]));
        throws(\InvalidArgumentException::class, static fn () => new Pool([new Client()]));
        throws(\InvalidArgumentException::class, static fn () => new Pool([$cb, $cb]));
        same(0, $a->stop(), 'a exits 0');
        same(0, $b->stop(), 'b exits 0');
    }

    /**
     * two servers, one killed mid-run: its jobs wait in its spool, the rest go to the other,
     * and once it is back every job has run, asked through the handles stored as strings
     */
    public function testTwoServersOneKilledMidRunLosesNoJob(): void
    {
        $dir = $this->scratch();
        $start = static fn (string $name): ServerProcess => self::daemon("unix://$dir/$name.sock", ['--jobs', '2', '--spool', "$dir/$name-spool"], "unix:$dir/$name-status.sock");
        $a = $start('a');
        $b = $start('b');
        $pool = new Pool([self::client($a), self::client($b)]);
        $aAddress = "unix:$dir/a.sock";

        // 40 jobs spread over both; the handles kept as strings, as an application stores them.
        $stored = [];
        for ($i = 0; $i < 40; $i++) {
            $stored[(string) $pool->submit("slow\njob $i")] = "job $i";
        }
        $onA = array_filter(array_keys($stored), static fn (string $h): bool => Job::fromString($h)->server === $aAddress);
        check(count($onA) > 0 && count($onA) < 40, 'both servers took jobs: a ' . count($onA) . ' of 40');
        // a is killed while its jobs run and wait (each takes 50 ms, two at a time).
        $a->crash();
        $aPending = 0;
        foreach ($onA as $handle) {
            throws(ConnectionException::class, static fn () => $pool->status($handle));
            $aPending++;
        }
        // 40 more: a refuses, so every one goes to b, and none fails.
        for ($i = 40; $i < 80; $i++) {
            $job = $pool->submit("slow\njob $i");
            same("unix:$dir/b.sock", $job->server, "job $i while a is down");
            $stored[(string) $job] = "job $i";
        }
        same(80, count($stored), 'eighty different handles');

        // a comes back on the same socket and spool: its jobs run; every job ends ok, once.
        $a = $start('a');
        $pool = new Pool([self::client($a), self::client($b)]);
        $ok = 0;
        foreach ($stored as $handle => $input) {
            $done = $pool->wait($handle, self::WAIT);
            same([JobState::Ok, $input], [$done->state, $done->output], "$handle: " . $done->line);
            $ok++;
        }
        same(80, $ok, 'every job ended ok');
        same(0, $a->stop(), 'a exits 0');
        same(0, $b->stop(), 'b exits 0');
        // What a found in its spool when it came back: the jobs it had not finished, and those it had.
        check(preg_match('/spool: .* queued=(\d+) retrying=\d+ interrupted=(\d+) ended=(\d+) damaged=0/', $a->log(), $m) === 1, 'the spool line: ' . $a->log());
        [, $queued, $interrupted, $ended] = array_map('intval', $m);
        same(count($onA), $queued + $interrupted + $ended, "a's spool: queued=$queued interrupted=$interrupted ended=$ended");
        check($queued + $interrupted > 0, 'a was killed with jobs still to run');
        fwrite(STDERR, sprintf("\ntwo servers: 80 jobs, %d on a and %d on b before a was killed (a's spool then: %d queued, %d interrupted, %d ended; %d unreachable while a was down), 40 more all on b, 0 submit failures; a restarted: %d of 80 ok, 0 lost\n", count($onA), 40 - count($onA), $queued, $interrupted, $ended, $aPending, $ok));
    }
}
