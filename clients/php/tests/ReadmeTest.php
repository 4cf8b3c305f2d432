<?php

// Every PHP snippet of the README, of docs/php.md (the PHP reference) and of the client's own
// README (clients/php/README.md) runs as shown, against real daemons: each ```php block is
// written to a file and run with php, and must exit 0 with nothing on stderr. Only addresses
// change: 12387 becomes the port of the daemon the snippet talks to (a line-mode one for
// lineSession(), a --background one for a snippet that submits a job or expects `accepted`,
// else an echo one), 12388 that daemon's status port, /run/sockecho/ a scratch directory
// holding the Unix-socket daemons a and b; Composer's vendor/autoload.php becomes the client's
// own autoload.php.

declare(strict_types=1);

namespace Sockecho\Tests;

use PHPUnit\Framework\TestCase;

final class ReadmeTest extends TestCase
{
    /** The job of the README's examples: {"image":"cat.png"} in, a thumbnail's name out. */
    private const JOB = 'cat >/dev/null; echo \'{"thumbnail":"cat.jpg"}\'';

    /**
     * The ```php blocks of the README, of docs/php.md, then those of the client's own README
     * (clients/php/README.md).
     *
     * @return list<string>
     */
    private static function snippets(): array
    {
        $root = dirname(__DIR__, 3);
        $readme = self::blocks("# README\n" . file_get_contents("$root/README.md"), false);
        check(count($readme) >= 3, 'README.md has its PHP snippets: ' . count($readme));
        $docs = self::blocks("# PHP\n" . file_get_contents("$root/docs/php.md"), false);
        check(count($docs) >= 6, 'docs/php.md has its PHP snippets: ' . count($docs));
        $own = self::blocks("# Client\n" . file_get_contents(dirname(__DIR__) . '/README.md'), false);
        check(count($own) === 1, 'clients/php/README.md has its PHP snippet');
        return array_merge($readme, $docs, $own);
    }

    /** @return list<string> the ```php blocks of $section (its heading first), up to the next "## " heading if $oneSection */
    private static function blocks(string $section, bool $oneSection = true): array
    {
        // Up to the next "## " heading outside a fence.
        $lines = explode("\n", $section);
        $blocks = [];
        $fence = null;
        foreach (array_slice($lines, 1) as $line) {
            if (str_starts_with($line, '```')) {
                if ($fence === null) {
                    $fence = ['lang' => substr($line, 3), 'text' => ''];
                } else {
                    if ($fence['lang'] === 'php') {
                        $blocks[] = $fence['text'];
                    }
                    $fence = null;
                }
                continue;
            }
            if ($fence !== null) {
                $fence['text'] .= $line . "\n";
            } elseif ($oneSection && str_starts_with($line, '## ')) {
                break;
            }
        }
        return $blocks;
    }

    /** every PHP snippet of the README, docs/php.md and the client's README runs as shown */
    public function testEveryPhpSnippetRunsAsShown(): void
    {
        $snippets = self::snippets();
        $server = server_program();
        $dir = sys_get_temp_dir() . '/sockecho-php-readme-' . getmypid() . '-' . bin2hex(random_bytes(4));
        check(mkdir($dir, 0700), "mkdir $dir");
        try {
            $jobArgs = ['--background', '--status', '127.0.0.1:0', '--exec', 'sh', '-c', self::JOB];
            $daemons = [
                'jobs' => new ServerProcess($server, $jobArgs),
                'echo' => new ServerProcess($server),
                'line' => new ServerProcess($server, ['--mode', 'line']),
            ];
            foreach (['a', 'b'] as $name) {
                $daemons[$name] = new ServerProcess($server, ['--background', '--status', "unix:$dir/$name-status.sock", '--exec', 'sh', '-c', self::JOB], "unix://$dir/$name.sock");
            }
            $statusPort = (int) substr((string) $daemons['jobs']->status, strrpos((string) $daemons['jobs']->status, ':') + 1);
            foreach ($snippets as $i => $code) {
                $target = match (true) {
                    str_contains($code, 'lineSession(') => $daemons['line'],
                    str_contains($code, '->request(') => $daemons['echo'],
                    str_contains($code, 'submit(') || str_contains($code, 'accepted') => $daemons['jobs'],
                    default => $daemons['echo'],
                };
                $code = strtr($code, [
                    '12387' => (string) $target->port,
                    '12388' => (string) $statusPort,
                    '/run/sockecho/' => "$dir/",
                    "__DIR__ . '/vendor/autoload.php'" => var_export(dirname(__DIR__) . '/autoload.php', true),
                ]);
                $file = "$dir/snippet-$i.php";
                file_put_contents($file, $code);
                [$status, $stdout, $stderr] = self::runPhp([PHP_BINARY, '-d', 'display_errors=stderr', '-d', 'error_reporting=-1', $file]);
                same(0, $status, "snippet $i's exit status (stdout " . show($stdout) . ', stderr ' . show($stderr) . "):\n$code");
                same('', $stderr, "snippet $i's stderr:\n$code");
            }
            foreach ($daemons as $name => $daemon) {
                same(0, $daemon->stop(), "$name exits 0 after SIGTERM");
            }
        } finally {
            exec('rm -rf ' . escapeshellarg($dir));
        }
    }

    /** @return array{int, string, string} exit status, stdout, stderr; killed after 30 s */
    private static function runPhp(array $command): array
    {
        $process = proc_open($command, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
        check($process !== false, 'proc_open');
        $out = ['', ''];
        $open = [1 => $pipes[1], 2 => $pipes[2]];
        $deadline = hrtime(true) + 30 * 1000000000;
        while ($open !== []) {
            $left = $deadline - hrtime(true);
            if ($left <= 0) {
                proc_terminate($process, 9);
                break;
            }
            $read = array_values($open);
            $none = null;
            if (@stream_select($read, $none, $none, intdiv($left, 1000000000), intdiv($left % 1000000000, 1000)) === false) {
                continue;
            }
            foreach ($read as $stream) {
                $which = array_search($stream, $open, true);
                $chunk = (string) fread($stream, 65536);
                if ($chunk === '' && feof($stream)) {
                    fclose($stream);
                    unset($open[$which]);
                } else {
                    $out[$which - 1] .= $chunk;
                }
            }
        }
        foreach ($open as $stream) {
            fclose($stream);
        }
        return [proc_close($process), $out[0], $out[1]];
    }
}
