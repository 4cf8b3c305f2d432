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

use Sockecho\BusyException;
use Sockecho\Client;

function h(string $text): string
{
    return htmlspecialchars($text, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
}

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

header('Content-Type: text/html; charset=utf-8');
header("Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'");
header('X-Content-Type-Options: nosniff');
?>
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Background jobs · sockecho</title>
<style>
  :root { color-scheme: light; --accent: #1f6feb; --line: #d0d7de; --muted: #57606a; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", "Noto Sans", sans-serif; color: #1f2328; background: #f6f8fa; }
  main { max-width: 44rem; margin: 2rem auto; padding: 2rem; background: #fff; border: 1px solid var(--line); border-radius: 12px; }
  h1 { margin: 0 0 .25rem; font-size: 1.5rem; }
  h2 { font-size: 1rem; margin: 1.5rem 0 .5rem; }
  p.lead { margin: 0 0 1.25rem; color: var(--muted); }
  .row { display: flex; gap: .5rem; }
  input[type=text] { flex: 1; padding: .55rem .75rem; font: inherit; border: 1px solid var(--line); border-radius: 6px; }
  button { padding: .55rem 1.1rem; font: inherit; font-weight: 600; color: #fff; background: var(--accent); border: 0; border-radius: 6px; }
  section { margin-top: 1.25rem; padding: .9rem 1.2rem; border-radius: 8px; }
  .accepted { background: #ddf4ff; border: 1px solid #54aeff; }
  .error { background: #ffebe9; border: 1px solid #ff8182; }
  section p { margin: 0; }
  table { width: 100%; border-collapse: collapse; font-size: .95rem; }
  th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line); }
  td.id, code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .85rem; }
  .empty { color: var(--muted); }
</style>
</head>
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
