<?php

// The PHP client (clients/php) against the real sockecho-server, under PHPUnit:
//
//     SOCKECHO_SERVER=build/tools/sockecho-server phpunit -c clients/php/phpunit.xml.dist
//
// Every server is started on --port 0 (or a Unix socket in a scratch directory) and found
// through its ready line; the sockets that play a daemon that never answers are PHP sockets
// bound to port 0. Nothing sleeps: waits are bounded by the client's own timeouts. Each test
// also fails if it leaves a descriptor open (tearDown) or raises a PHP warning (PHPUnit turns
// warnings into errors).

declare(strict_types=1);

namespace Sockecho\Tests;

use PHPUnit\Framework\TestCase;
use Sockecho\BusyException;
use Sockecho\Client;
use Sockecho\ConnectionException;
use Sockecho\Exception;
use Sockecho\ReplyTooLargeException;
use Sockecho\ResetException;
use Sockecho\TimeoutException;

final class ClientTest extends TestCase
{
    /** The daemon most tests share, on its defaults. */
    private static ServerProcess $echo;
    private static Client $client;
    private ?int $fdsBefore = null;

    public static function setUpBeforeClass(): void
    {
        self::$echo = new ServerProcess(server_program());
        self::$client = new Client(self::$echo->host, self::$echo->port, connectTimeout: 5.0, readTimeout: 10.0);
    }

    public static function tearDownAfterClass(): void
    {
        $status = self::$echo->stop();
        if ($status !== 0) {
            throw new \RuntimeException("sockecho-server exited $status after SIGTERM; its log:\n" . self::$echo->log());
        }
    }

    protected function setUp(): void
    {
        $this->fdsBefore = open_fds();
    }

    protected function assertPostConditions(): void
    {
        gc_collect_cycles();
        if ($this->fdsBefore !== null) {
            $this->assertSame($this->fdsBefore, open_fds(), 'descriptors open before and after the test');
        }
    }

    /** hello gets the prefix, byte for byte */
    public function testHelloGetsThePrefixByteForByte(): void
    {
        $client = self::$client;
        same("\xe6\x95\xb0\xe6\x8d\xae\xe6\x98\xaf\x20hello", $client->request('hello'), 'reply');
        same("数据是 hello\n", $client->request("hello\n"), 'reply with a newline');
    }

    /** every byte value comes back unchanged */
    public function testEveryByteValueComesBackUnchanged(): void
    {
        $client = self::$client;
        $all = '';
        for ($i = 0; $i < 256; $i++) {
            $all .= chr($i);
        }
        $message = $all . strrev($all) . "\r\n\0\n" . $all;
        same(PREFIX . $message, $client->request($message), 'reply');
    }

    /** a chunk that is "0" does not end the reply */
    public function testAChunkThatIs0DoesNotEndTheReply(): void
    {
        $client = self::$client;
        same(PREFIX . '0', $client->request('0'), 'reply');
    }

    /** 1 MiB payload */
    public function test1MiBPayload(): void
    {
        $client = self::$client;
        $message = random_bytes(1 << 20);
        $reply = $client->request($message);
        same(strlen(PREFIX) + (1 << 20), strlen($reply), 'reply length');
        check($reply === PREFIX . $message, 'the 1 MiB reply differs from prefix + message');
    }

    /** empty message gets the prefix alone */
    public function testEmptyMessageGetsThePrefixAlone(): void
    {
        $client = self::$client;
        same(PREFIX, $client->request(''), 'reply');
    }

    /** one client, many requests in a row */
    public function testOneClientManyRequestsInARow(): void
    {
        $client = self::$client;
        for ($i = 0; $i < 200; $i++) {
            same(PREFIX . "job $i", $client->request("job $i"), "reply $i");
        }
    }

    /** a name is resolved (localhost) */
    public function testANameIsResolvedLocalhost(): void
    {
        $echo = self::$echo;
        $client = new Client('localhost', $echo->port, connectTimeout: 5.0, readTimeout: 10.0);
        same(PREFIX . 'by name', $client->request('by name'), 'reply');
    }

    /** IPv6 loopback, bare and bracketed */
    public function testIPv6LoopbackBareAndBracketed(): void
    {
        $server = server_program();
        $probe = socket_create(AF_INET6, SOCK_STREAM, SOL_TCP);
        $usable = $probe !== false && socket_bind($probe, '::1', 0);
        if ($probe !== false) {
            socket_close($probe);
        }
        if (!$usable) {
            skip('this machine cannot bind ::1');
        }
        $v6 = new ServerProcess($server, [], '::1');
        same('[::1]', $v6->host, 'host in the ready line');
        same(PREFIX . 'six', (new Client('::1', $v6->port))->request('six'), 'reply via ::1');
        same(PREFIX . 'six', (new Client('[::1]', $v6->port))->request('six'), 'reply via [::1]');
        same(0, $v6->stop(), 'exit status after SIGTERM');
        $e = throws(ConnectionException::class, static fn () => (new Client('::1', $v6->port))->request('six'));
        same("connect [::1]:{$v6->port}: Connection refused", $e->getMessage(), 'message');
    }

    /** connection refused: ConnectionException with the address and reason */
    public function testConnectionRefusedIsAConnectionExceptionWithTheAddressAndReason(): void
    {
        // A socket bound but not listening holds the port, so the refusal is certain.
        $holder = socket_create(AF_INET, SOCK_STREAM, SOL_TCP);
        check($holder !== false && socket_bind($holder, '127.0.0.1', 0), 'bind failed');
        socket_getsockname($holder, $address, $port);
        try {
            $start = hrtime(true);
            $e = throws(ConnectionException::class, static fn () => (new Client('127.0.0.1', $port, connectTimeout: 5.0))->request('hello'));
            same("connect 127.0.0.1:$port: Connection refused", $e->getMessage(), 'message');
            same('connect', $e->getOperation(), 'operation');
            same("127.0.0.1:$port", $e->getAddress(), 'address');
            same('Connection refused', $e->getReason(), 'reason');
            same(SOCKET_ECONNREFUSED, $e->getCode(), 'code');
            check($e instanceof Exception && $e instanceof \RuntimeException, 'not a Sockecho\Exception and RuntimeException');
            check(since($start) < 5.0, 'a refusal took ' . since($start) . ' s');
        } finally {
            socket_close($holder);
        }
    }

    /** read timeout: a daemon that never answers */
    public function testReadTimeoutADaemonThatNeverAnswers(): void
    {
        [$listener, $port] = silent_listener(8);
        try {
            $start = hrtime(true);
            $e = throws(TimeoutException::class, static fn () => (new Client('127.0.0.1', $port, connectTimeout: 5.0, readTimeout: 0.3))->request('hello'));
            $elapsed = since($start);
            same("read 127.0.0.1:$port: Connection timed out", $e->getMessage(), 'message');
            same('read', $e->getOperation(), 'operation');
            same(SOCKET_ETIMEDOUT, $e->getCode(), 'code');
            check($elapsed >= 0.25 && $elapsed < 5.0, "the 0.3 s read timeout fired after $elapsed s");
        } finally {
            socket_close($listener);
        }
    }

    /** connect timeout: a daemon whose backlog is full */
    public function testConnectTimeoutADaemonWhoseBacklogIsFull(): void
    {
        // With backlog 0 and nobody accepting, the kernel queues one connection and drops the SYNs of
        // the next ones, so a later connect can only time out.
        [$listener, $port] = silent_listener(0);
        try {
            $client = new Client('127.0.0.1', $port, connectTimeout: 0.3, readTimeout: 0.1);
            $seen = [];
            for ($attempt = 0; $attempt < 4; $attempt++) {
                $start = hrtime(true);
                $e = throws(TimeoutException::class, static fn () => $client->request('x'));
                $seen[] = $e->getOperation();
                if ($e->getOperation() === 'connect') {
                    same("connect 127.0.0.1:$port: Connection timed out", $e->getMessage(), 'message');
                    $elapsed = since($start);
                    check($elapsed >= 0.25 && $elapsed < 5.0, "the 0.3 s connect timeout fired after $elapsed s");
                    return;
                }
            }
            throw new Failure('no connect timeout in 4 attempts; saw timeouts in: ' . implode(', ', $seen));
        } finally {
            socket_close($listener);
        }
    }

    /** write timeout: a daemon that never reads */
    public function testWriteTimeoutADaemonThatNeverReads(): void
    {
        [$listener, $port] = silent_listener(8);
        try {
            // Far more than the socket buffers of both ends hold, so the write must wait.
            $message = str_repeat('w', 64 << 20);
            $start = hrtime(true);
            $e = throws(TimeoutException::class, static fn () => (new Client('127.0.0.1', $port, readTimeout: 10.0, writeTimeout: 0.3))->request($message));
            same('write', $e->getOperation(), 'operation');
            same("write 127.0.0.1:$port: Connection timed out", $e->getMessage(), 'message');
            check(since($start) < 5.0, 'the 0.3 s write timeout fired after ' . since($start) . ' s');
        } finally {
            socket_close($listener);
        }
    }

    /** reply limit: ReplyTooLargeException past maxReplyBytes */
    public function testReplyLimitReplyTooLargeExceptionPastMaxReplyBytes(): void
    {
        $echo = self::$echo;
        $limit = strlen(PREFIX) + 100;
        $exact = new Client($echo->host, $echo->port, maxReplyBytes: $limit);
        same(PREFIX . str_repeat('a', 100), $exact->request(str_repeat('a', 100)), 'a reply of exactly the limit');
        $e = throws(ReplyTooLargeException::class, static fn () => $exact->request(str_repeat('a', 101)));
        same("read {$echo->host}:{$echo->port}: reply larger than $limit bytes", $e->getMessage(), 'message');
        same(SOCKET_EMSGSIZE, $e->getCode(), 'code');
        $e = throws(ReplyTooLargeException::class, static fn () => (new Client($echo->host, $echo->port, maxReplyBytes: 1000))->request(random_bytes(1 << 20)));
        same('read', $e->getOperation(), 'operation');
        $unlimited = new Client($echo->host, $echo->port, maxReplyBytes: 0);
        same(strlen(PREFIX) + (2 << 20), strlen($unlimited->request(str_repeat('u', 2 << 20))), 'length with no limit');
    }

    /** a request over the daemon's --max-bytes: ResetException, and the daemon goes on */
    public function testARequestOverTheDaemonsMaxBytesIsAResetAndTheDaemonGoesOn(): void
    {
        $server = server_program();
        $limited = new ServerProcess($server, ['--max-bytes', '1K']);
        $client = new Client($limited->host, $limited->port, connectTimeout: 5.0, readTimeout: 10.0);
        // The daemon resets the connection (and before it does so itself, its close with bytes
        // unread makes the kernel reset it).
        $e = throws(ResetException::class, static fn () => $client->request(str_repeat('x', 64 << 10)));
        // The reset meets whichever call comes next: a write, the half-close or the read.
        check(in_array($e->getOperation(), ['write', 'shutdown', 'read'], true), 'operation: ' . $e->getOperation());
        check(in_array($e->getCode(), [SOCKET_ECONNRESET, SOCKET_EPIPE], true), 'code ' . $e->getCode() . ': ' . $e->getMessage());
        same(PREFIX . 'small', $client->request('small'), 'the next request');
        same(0, $limited->stop(), 'exit status after SIGTERM');
        check(str_contains($limited->log(), 'outcome=too_large'), 'the daemon logged too_large');
    }

    /** a program run by --exec that fails: ResetException, and the daemon says why in its log */
    public function testAFailedExecProgramIsAResetException(): void
    {
        $failing = new ServerProcess(server_program(), ['--exec', 'sh', '-c', 'cat >/dev/null; echo partial; exit 3']);
        $client = new Client($failing->host, $failing->port, connectTimeout: 5.0, readTimeout: 10.0);
        $e = throws(ResetException::class, static fn () => $client->request('job'));
        check(str_contains($e->getMessage(), 'the daemon reset the connection'), 'message: ' . $e->getMessage());
        same(0, $failing->stop(), 'exit status after SIGTERM');
        check(str_contains($failing->log(), 'outcome=failed exit=3'), 'the daemon logged the failure: ' . $failing->log());
    }

    /** a daemon that resets: ResetException naming the address, whenever the reset comes */
    public function testADaemonThatResetsIsAResetExceptionNamingTheAddressWheneverItComes(): void
    {
        $resetting = new ServerProcess(__DIR__ . '/reset_server.php', ['--after', '4']);
        $client = new Client($resetting->host, $resetting->port, connectTimeout: 5.0, readTimeout: 10.0);
        // Small: the reset comes after the whole request was sent, at the half-close or the read;
        // large: it comes while the request is still being written.
        foreach (['small' => 'more than four bytes', 'large' => str_repeat('x', 4 << 20)] as $what => $message) {
            $e = throws(ResetException::class, static fn () => $client->request($message));
            check($e instanceof Exception, "$what: a Sockecho\\Exception");
            check(in_array($e->getOperation(), ['write', 'shutdown', 'read'], true), "$what: operation " . $e->getOperation());
            check(in_array($e->getCode(), [SOCKET_ECONNRESET, SOCKET_EPIPE], true), "$what: code " . $e->getCode() . ': ' . $e->getMessage());
            check(str_starts_with($e->getMessage(), $e->getOperation() . " {$resetting->host}:{$resetting->port}: "), "$what: message names the address: " . $e->getMessage());
            check(str_contains($e->getMessage(), 'the daemon reset the connection'), "$what: message says so: " . $e->getMessage());
        }
    }

    /** line mode: a daemon that resets mid-session: ResetException */
    public function testLineModeADaemonThatResetsMidSessionResetException(): void
    {
        $resetting = new ServerProcess(__DIR__ . '/reset_server.php', ['--after', '4', '--mode', 'line']);
        $client = new Client($resetting->host, $resetting->port, connectTimeout: 5.0, readTimeout: 10.0);
        $session = $client->lineSession();
        same('connect', $session->greeting(), 'greeting');
        throws(ResetException::class, static fn () => $session->send('a line longer than four bytes'));
        $session->close();
        throws(ResetException::class, static fn () => $client->lines(['first line', 'second']));
    }

    /** background jobs: submit() returns each job's id at once, the job runs later */
    public function testBackgroundJobsSubmitReturnsEachJobsIdAtOnceTheJobRunsLater(): void
    {
        $server = server_program();
        $dir = sys_get_temp_dir() . '/sockecho-php-jobs-' . getmypid();
        mkdir($dir);
        try {
            $jobs = new ServerProcess($server, ['--background', '--jobs', '2', '--exec', 'sh', '-c', 'cat > "$0/$SOCKECHO_JOB_ID"', $dir]);
            $client = new Client($jobs->host, $jobs->port, connectTimeout: 5.0, readTimeout: 10.0);
            $ids = [];
            foreach (['one', 'two', 'three'] as $job) {
                $ids[$client->submit($job)->id] = $job;
            }
            same(3, count($ids), 'three different ids');
            same(0, $jobs->stop(), 'exit status after SIGTERM (every job run first)');
            foreach ($ids as $id => $job) {
                same($job, file_get_contents("$dir/$id"), "job $id's input");
            }
        } finally {
            array_map('unlink', glob("$dir/*") ?: []);
            rmdir($dir);
        }
    }

    /** background jobs: a full queue is BusyException, a plain daemon is no acknowledgement */
    public function testBackgroundJobsAFullQueueIsBusyExceptionAPlainDaemonIsNoAcknowledgement(): void
    {
        $server = server_program();
        $client = self::$client;
        $jobs = new ServerProcess($server, ['--background', '--jobs', '1', '--queue', '0', '--exec-timeout', '1', '--exec', 'sleep', '30']);
        $busy = new Client($jobs->host, $jobs->port, connectTimeout: 5.0, readTimeout: 10.0);
        $busy->submit('first');  // runs until its --exec-timeout: nothing else fits meanwhile
        $e = throws(BusyException::class, static fn () => $busy->submit('second'));
        check($e instanceof Exception, 'a Sockecho\\Exception');
        same('submit', $e->getOperation(), 'operation');
        check(str_contains($e->getMessage(), 'queue is full'), 'message: ' . $e->getMessage());
        same(0, $jobs->stop(), 'exit status after SIGTERM (the job ended by its timeout)');
        check(str_contains($jobs->log(), 'outcome=refused reason=busy'), 'the daemon logged the refusal');
        $e = throws(Exception::class, static fn () => $client->submit('to an echo daemon'));
        check(str_contains($e->getMessage(), 'not a job acknowledgement'), 'message: ' . $e->getMessage());
    }

    /** line mode: greeting, one reply per line */
    public function testLineModeGreetingOneReplyPerLine(): void
    {
        $server = server_program();
        $lines = new ServerProcess($server, ['--mode', 'line']);
        $client = new Client($lines->host, $lines->port, connectTimeout: 5.0, readTimeout: 10.0);
        $session = $client->lineSession();
        same('connect', $session->greeting(), 'greeting');
        same(PREFIX . 'one', $session->send('one'), 'reply to one');
        same(PREFIX, $session->send(''), 'reply to an empty line');
        same(PREFIX . "tab\tand\0nul", $session->send("tab\tand\0nul"), 'reply to binary');
        throws(\InvalidArgumentException::class, static fn () => $session->send("two\nlines"));
        $session->close();
        $session->close();
        same([PREFIX . 'a', PREFIX . 'b', PREFIX . 'c'], $client->lines(['a', 'b', 'c']), 'lines()');
        $e = throws(ReplyTooLargeException::class, static fn () => (new Client($lines->host, $lines->port, maxReplyBytes: 20))->lines(['short', str_repeat('x', 100)]));
        same('read', $e->getOperation(), 'operation');
        same(0, $lines->stop(), 'exit status after SIGTERM');
    }

    /** a stopped daemon: refused, and the message says where */
    public function testAStoppedDaemonRefusedAndTheMessageSaysWhere(): void
    {
        $server = server_program();
        $daemon = new ServerProcess($server);
        $client = new Client($daemon->host, $daemon->port, connectTimeout: 2.0, readTimeout: 2.0);
        same(PREFIX . 'up', $client->request('up'), 'reply while running');
        same(0, $daemon->stop(), 'exit status after SIGTERM');
        $e = throws(ConnectionException::class, static fn () => $client->request('down'));
        same("connect 127.0.0.1:{$daemon->port}: Connection refused", $e->getMessage(), 'message');
    }

    /** over a Unix socket (unix:///path): echo, line mode, the peer in the log, refused once stopped */
    public function testOverAUnixSocketEchoLineModeThePeerInTheLogRefusedOnceStopped(): void
    {
        $server = server_program();
        $dir = sys_get_temp_dir() . '/sockecho-php-unix-' . getmypid() . '-' . bin2hex(random_bytes(4));
        check(mkdir($dir, 0700), "mkdir $dir");
        try {
            $path = "$dir/echo.sock";
            $daemon = new ServerProcess($server, [], "unix://$path");
            $client = new Client("unix://$path", connectTimeout: 5.0, readTimeout: 10.0);
            same(PREFIX . 'hello', $client->request('hello'), 'reply');
            same(PREFIX, $client->request(''), 'empty message');
            $message = random_bytes(1 << 20);
            check($client->request($message) === PREFIX . $message, 'the 1 MiB reply differs');
            $lines = new ServerProcess($server, ['--mode', 'line'], "unix://$dir/line.sock");
            same([PREFIX . 'a', PREFIX . 'b'], (new Client("unix://$dir/line.sock"))->lines(['a', 'b']), 'lines()');
            same(0, $lines->stop(), 'line server exit status after SIGTERM');
            same(0, $daemon->stop(), 'exit status after SIGTERM');
            check(str_contains($daemon->log(), ',pid=' . getmypid() . ' in=5 '), 'the log names this process as the peer: ' . $daemon->log());
            check(!file_exists($path), 'a clean stop removes the socket file');
            $e = throws(ConnectionException::class, static fn () => $client->request('down'));
            same("connect unix:$path: No such file or directory", $e->getMessage(), 'message');
            same("unix:$path", $e->getAddress(), 'address');
        } finally {
            foreach (glob("$dir/*") ?: [] as $left) {
                @unlink($left);
            }
            @rmdir($dir);
        }
        throws(\InvalidArgumentException::class, static fn () => new Client('unix://'));
        throws(\InvalidArgumentException::class, static fn () => new Client('unix:///' . str_repeat('x', 107)));
    }

    /** bad settings: InvalidArgumentException */
    public function testBadSettingsInvalidArgumentException(): void
    {
        throws(\InvalidArgumentException::class, static fn () => new Client('127.0.0.1', 0));
        throws(\InvalidArgumentException::class, static fn () => new Client('127.0.0.1', 65536));
        throws(\InvalidArgumentException::class, static fn () => new Client(''));
        throws(\InvalidArgumentException::class, static fn () => new Client(connectTimeout: -1.0));
        throws(\InvalidArgumentException::class, static fn () => new Client(readTimeout: NAN));
        throws(\InvalidArgumentException::class, static fn () => new Client(writeTimeout: INF));
        throws(\InvalidArgumentException::class, static fn () => new Client(maxReplyBytes: -1));
        new Client(connectTimeout: 0.0, readTimeout: 0.0, writeTimeout: 0.0, maxReplyBytes: 0);
    }
}
