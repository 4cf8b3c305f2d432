<?php

// Background jobs, the post's real use: the page hands a slow job to sockecho-server
// --background, which acknowledges it at once ("accepted ID"), so the page answers in
// milliseconds while the job runs on; finished jobs are listed from the results directory the
// job writes to (jobs/slow-job.php).
//
// Run by hand (two terminals, from the repository root):
//   mkdir -p /tmp/sockecho-results
//   SOCKECHO_RESULTS=/tmp/sockecho-results ./build/tools/sockecho-server --port 12388 \
//       --background --exec php examples/php-web/jobs/slow-job.php
//   SOCKECHO_RESULTS=/tmp/sockecho-results SOCKECHO_JOBS_PORT=12388 \
//       php -S 127.0.0.1:8080 -t examples/php-web
// then open http://127.0.0.1:8080/jobs.php.

declare(strict_types=1);

require __DIR__ . '/../../clients/php/autoload.php';
require __DIR__ . '/page.php';

use Sockecho\BusyException;
use Sockecho\Client;

$host = getenv('SOCKECHO_HOST') ?: Client::DEFAULT_HOST;
$port = (int) (getenv('SOCKECHO_JOBS_PORT') ?: 12388);
$results = getenv('SOCKECHO_RESULTS') ?: sys_get_temp_dir() . '/sockecho-results';

$accepted = null;
$error = null;
$millis = null;
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    $job = (string) ($_POST['job'] ?? '');
    $start = hrtime(true);
    try {
        $client = new Client($host, $port, connectTimeout: 2.0, readTimeout: 5.0);
        $accepted = $client->submit($job);
        $millis = (hrtime(true) - $start) / 1e6;
    } catch (BusyException $e) {
        http_response_code(503);
        header('Retry-After: 10');
        $error = 'The job queue is full; please try again in a moment.';
    } catch (\Sockecho\Exception $e) {
        http_response_code(503);
        $error = 'The job service is not available right now (' . $e->getMessage() . ').';
        error_log('php-web jobs: ' . $e->getMessage());
    }
}

// Finished jobs, newest first.
$finished = [];
foreach (glob("$results/*.json") ?: [] as $file) {
    $data = json_decode((string) file_get_contents($file), true);
    if (is_array($data)) {
        $finished[] = $data + ['time' => filemtime($file)];
    }
}
usort($finished, static fn (array $a, array $b): int => $b['time'] <=> $a['time']);

send_page_headers();
page_head('Background jobs', <<<'CSS'
  main { max-width: 44rem; margin: 2rem auto; }
  h2 { font-size: 1rem; margin: 1.5rem 0 .5rem; }
  p.lead { margin: 0 0 1.25rem; }
  section { margin-top: 1.25rem; padding: .9rem 1.2rem; }
  .accepted { background: #ddf4ff; border: 1px solid #54aeff; }
  section p { margin: 0; }
  table { width: 100%; border-collapse: collapse; font-size: .95rem; }
  th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line); }
  td.id, code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .85rem; }
  .empty { color: var(--muted); }
CSS);
?>
<body>
<main>
  <h1>Background jobs</h1>
  <p class="lead">Each job goes to <code><?= h($host) ?>:<?= h((string) $port) ?></code>, which acknowledges it at once and runs it afterwards.</p>
  <form method="post" action="jobs.php">
    <div class="row">
      <input type="text" id="job" name="job" placeholder="a slow job" autofocus autocomplete="off" aria-label="Job">
      <button type="submit" id="submit">Submit</button>
    </div>
  </form>
<?php if ($accepted !== null): ?>
  <section class="accepted" id="accepted" role="status">
    <p>Job <code id="accepted-id"><?= h($accepted) ?></code> accepted in <span id="accepted-ms"><?= h(sprintf('%.1f', $millis)) ?></span> ms; it runs in the background.</p>
  </section>
<?php elseif ($error !== null): ?>
  <section class="error" id="error" role="alert"><p id="error-text"><?= h($error) ?></p></section>
<?php endif ?>
  <h2>Finished jobs</h2>
<?php if ($finished === []): ?>
  <p class="empty" id="none">None yet.</p>
<?php else: ?>
  <table id="finished">
    <thead><tr><th>Job id</th><th>Job</th><th>Result</th><th>Took</th></tr></thead>
    <tbody>
<?php foreach ($finished as $f): ?>
      <tr><td class="id"><?= h((string) $f['id']) ?></td><td><?= h((string) $f['job']) ?></td><td><?= h((string) $f['result']) ?></td><td><?= h(sprintf('%.1f s', (float) $f['seconds'])) ?></td></tr>
<?php endforeach ?>
    </tbody>
  </table>
<?php endif ?>
</main>
</body>
</html>
