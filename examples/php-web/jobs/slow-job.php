<?php

// The background job of examples/php-web/jobs.php: the work a web request must not wait for.
// sockecho-server --background --status runs it after it has acknowledged the request: the job
// arrives on stdin as JSON ({"text": "...", "flaky": false}), and what it prints on stdout is its
// result, kept by the daemon and read by the page through the status listener (`result ID`).
// It takes SOCKECHO_JOB_SECONDS (default 2) to stand for real work: resizing images, sending
// mail, building a report. A "flaky" job stands for a service that is down for a moment: its
// first attempt gives up after a quarter of that time with exit 75 (EX_TEMPFAIL), which asks the
// daemon to run it again after --retry-delay.

declare(strict_types=1);

if (PHP_SAPI !== 'cli') {  // a program for the daemon, not a page
    http_response_code(404);
    exit;
}

$job = json_decode((string) stream_get_contents(STDIN), true);
if (!is_array($job) || !is_string($job['text'] ?? null)) {
    fwrite(STDERR, "slow-job: expected {\"text\": \"...\"} on stdin\n");
    exit(2);
}
$seconds = (float) (getenv('SOCKECHO_JOB_SECONDS') ?: '2');
$attempt = (int) (getenv('SOCKECHO_JOB_ATTEMPT') ?: '1');
$started = microtime(true);
if (($job['flaky'] ?? false) === true && $attempt === 1) {
    usleep((int) ($seconds / 4 * 1e6));
    fwrite(STDERR, "slow-job: the mail server did not answer; try again later\n");
    exit(75);
}
usleep((int) ($seconds * 1e6));
echo json_encode([
    'result' => strtoupper($job['text']),
    'seconds' => round(microtime(true) - $started, 2),
], JSON_THROW_ON_ERROR | JSON_INVALID_UTF8_SUBSTITUTE | JSON_UNESCAPED_UNICODE), "\n";
