<?php

// The background job of examples/php-web/jobs.php: the work a web request must not wait for.
// sockecho-server --background runs it after it has acknowledged the request: the job
// description arrives on stdin, SOCKECHO_JOB_ID names the job, and the result goes to a file in
// SOCKECHO_RESULTS (the page lists that directory). It takes SOCKECHO_JOB_SECONDS (default 2)
// to stand for real work: resizing images, sending mail, building a report.

declare(strict_types=1);

if (PHP_SAPI !== 'cli') {  // a program for the daemon, not a page
    http_response_code(404);
    exit;
}

$id = getenv('SOCKECHO_JOB_ID');
$dir = getenv('SOCKECHO_RESULTS');
if ($id === false || !preg_match('/^[A-Za-z0-9_-]{1,64}$/', $id) || $dir === false || !is_dir($dir)) {
    fwrite(STDERR, "slow-job: needs SOCKECHO_JOB_ID and an existing SOCKECHO_RESULTS directory\n");
    exit(2);
}
$job = stream_get_contents(STDIN);
$started = microtime(true);
usleep((int) ((float) (getenv('SOCKECHO_JOB_SECONDS') ?: '2') * 1e6));
$result = json_encode([
    'id' => $id,
    'job' => $job,
    'result' => strtoupper($job),
    'seconds' => round(microtime(true) - $started, 2),
], JSON_THROW_ON_ERROR | JSON_INVALID_UTF8_SUBSTITUTE);
// Written under a temporary name and renamed, so the page never reads half a result.
file_put_contents("$dir/.$id.tmp", $result);
rename("$dir/.$id.tmp", "$dir/$id.json");
fwrite(STDERR, "slow-job: $id done\n");
