<?php

// Background jobs, the post's real use: the page hands a slow job to sockecho-server
// --background, which acknowledges it at once ("accepted ID"), so the page answers in
// milliseconds while the job runs on. Each job's handle is kept in the visitor's session, and
// the page lists them with their live state, attempts and output, asked of the daemon's status
// listener (--status); a job not yet running can be cancelled from the list.
//
// Run by hand (two terminals, from the repository root):
//   ./build/tools/sockecho-server --port 12388 --background --jobs 1 \
//       --status 127.0.0.1:12389 --retry-delay 1 --exec php examples/php-web/jobs/slow-job.php
//   SOCKECHO_JOBS_PORT=12388 SOCKECHO_STATUS=127.0.0.1:12389 php -S 127.0.0.1:8080 -t examples/php-web
// then open http://127.0.0.1:8080/jobs.php.

declare(strict_types=1);

require __DIR__ . '/../../clients/php/autoload.php';
require __DIR__ . '/page.php';

use Sockecho\BusyException;
use Sockecho\Client;
use Sockecho\JobState;
use Sockecho\JobStatus;
use Sockecho\UnknownJobException;

const KEPT = 20;  // the visitor's most recent jobs, listed

$host = getenv('SOCKECHO_HOST') ?: Client::DEFAULT_HOST;
$port = (int) (getenv('SOCKECHO_JOBS_PORT') ?: 12388);
$statusAddress = getenv('SOCKECHO_STATUS') ?: '127.0.0.1:12389';
// Short limits: a visitor is waiting. A cancel of a running job waits for its end; the page
// offers it only for jobs not yet running, so 5 s is plenty.
$client = new Client($host, $port, connectTimeout: 2.0, readTimeout: 5.0, status: $statusAddress, maxResultBytes: 1 << 20);

session_start();
/** @var list<array{handle: string, text: string, flaky: bool}> $mine newest first */
$mine = $_SESSION['jobs'] ?? [];

$notice = null;
$error = null;
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    $action = (string) ($_POST['action'] ?? 'submit');
    try {
        if ($action === 'cancel') {
            // Only a job of this visitor's: a handle is what allows a cancel, so never take one
            // from the form that the session does not hold.
            $handle = (string) ($_POST['job'] ?? '');
            if (!in_array($handle, array_column($mine, 'handle'), true)) {
                http_response_code(400);
                $error = 'No such job of yours.';
            } else {
                $status = $client->cancel($handle);
                $notice = ['Job ' . $status->job->id . ' is ' . $status->state->value . '.', null];
            }
        } else {
            $text = (string) ($_POST['job'] ?? '');
            $flaky = isset($_POST['flaky']);
            $start = hrtime(true);
            $job = $client->submit(json_encode(['text' => $text, 'flaky' => $flaky], JSON_THROW_ON_ERROR | JSON_INVALID_UTF8_SUBSTITUTE));
            $millis = (hrtime(true) - $start) / 1e6;
            array_unshift($mine, ['handle' => (string) $job, 'text' => $text, 'flaky' => $flaky]);
            $mine = array_slice($mine, 0, KEPT);
            $_SESSION['jobs'] = $mine;
            $notice = ['Job ' . $job->id . ' accepted in ' . sprintf('%.1f', $millis) . ' ms; it runs in the background.', $job->id];
        }
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
session_write_close();

// Each job as the daemon sees it now: a JobStatus (with the output once ended), 'unknown' when
// the daemon has forgotten it, or the failure met when it could not be asked.
$rows = [];
foreach ($mine as $entry) {
    try {
        $rows[] = [$entry, $client->result($entry['handle'])];
    } catch (UnknownJobException $e) {
        $rows[] = [$entry, 'unknown'];
    } catch (\Sockecho\Exception $e) {
        $rows[] = [$entry, $e->getMessage()];
        $error ??= 'The job service is not available right now (' . $e->getMessage() . ').';
    }
}

/** What the job printed, shown as its result; the raw bytes when it is not the job's JSON. */
function shown_output(JobStatus $status): string
{
    if ($status->output === null || $status->output === '') {
        return '';
    }
    $data = json_decode($status->output, true);
    return is_array($data) && isset($data['result']) ? (string) $data['result'] : $status->output;
}

send_page_headers();
page_head('Background jobs', <<<'CSS'
  main { max-width: 52rem; margin: 2rem auto; }
  h2 { font-size: 1rem; margin: 1.5rem 0 .5rem; }
  p.lead { margin: 0 0 1.25rem; }
  section { margin-top: 1.25rem; padding: .9rem 1.2rem; }
  .accepted { background: #ddf4ff; border: 1px solid #54aeff; }
  section p { margin: 0; }
  .check { display: block; margin-top: .5rem; font-size: .9rem; color: var(--muted); }
  table { width: 100%; border-collapse: collapse; font-size: .95rem; }
  th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line); vertical-align: middle; }
  td.id, code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .8rem; }
  td.num { text-align: right; }
  .state { display: inline-block; padding: 0 .5rem; border-radius: 1rem; font-size: .85rem; font-weight: 600; background: #eaeef2; }
  .state-running { background: #ddf4ff; color: #0969da; }
  .state-retrying { background: #fff8c5; color: #9a6700; }
  .state-ok { background: #dafbe1; color: #1a7f37; }
  .state-failed, .state-timeout, .state-too_large { background: #ffebe9; color: #cf222e; }
  .state-cancelled { background: #eaeef2; color: var(--muted); text-decoration: line-through; }
  td form { margin: 0; }
  td button { padding: .2rem .6rem; font-size: .85rem; background: #cf222e; }
  .empty { color: var(--muted); }
  nav { margin-top: .75rem; font-size: .9rem; }
CSS);
?>
<body>
<main>
  <h1>Background jobs</h1>
  <p class="lead">Each job goes to <code><?= h($client->address()) ?></code>, which acknowledges it at once and runs it afterwards; this list asks its status listener, <code><?= h((string) $client->statusAddress()) ?></code>.</p>
  <form method="post" action="jobs.php">
    <div class="row">
      <input type="text" id="job" name="job" placeholder="a slow job" autofocus autocomplete="off" aria-label="Job">
      <button type="submit" id="submit" name="action" value="submit">Submit</button>
    </div>
    <label class="check"><input type="checkbox" id="flaky" name="flaky" value="1"> its first attempt fails with exit 75 (the daemon runs it again)</label>
  </form>
<?php if ($notice !== null): ?>
  <section class="accepted" id="accepted" role="status">
    <p id="notice"><?= h($notice[0]) ?></p>
<?php if ($notice[1] !== null): ?>
    <code id="accepted-id" hidden><?= h($notice[1]) ?></code>
<?php endif ?>
  </section>
<?php endif ?>
<?php if ($error !== null): ?>
  <section class="error" id="error" role="alert"><p id="error-text"><?= h($error) ?></p></section>
<?php endif ?>
  <h2>Your jobs</h2>
<?php if ($rows === []): ?>
  <p class="empty" id="none">None yet.</p>
<?php else: ?>
  <table id="jobs">
    <thead><tr><th>Job</th><th>Id</th><th>State</th><th class="num">Attempts</th><th>Output</th><th class="num">Run</th><th></th></tr></thead>
    <tbody>
<?php foreach ($rows as [$entry, $status]): ?>
<?php $id = \Sockecho\Job::fromString($entry['handle'])->id; ?>
      <tr id="job-<?= h($id) ?>">
        <td class="text"><?= h($entry['text']) ?><?= $entry['flaky'] ? ' <small>(flaky)</small>' : '' ?></td>
        <td class="id"><?= h(substr($id, 0, 8)) ?>…</td>
<?php if ($status instanceof JobStatus): ?>
        <td><span class="state state-<?= h($status->state->value) ?>"><?= h($status->state->value) ?></span></td>
        <td class="num attempts"><?= $status->attempts ?></td>
        <td class="output"><?= h(shown_output($status)) ?></td>
        <td class="num"><?= $status->runMs === null ? '' : h(sprintf('%.1f s', $status->runMs / 1000)) ?></td>
        <td>
<?php if (in_array($status->state, [JobState::Queued, JobState::Retrying], true)): ?>
          <form method="post" action="jobs.php"><input type="hidden" name="job" value="<?= h($entry['handle']) ?>"><button type="submit" name="action" value="cancel" class="cancel">Cancel</button></form>
<?php endif ?>
        </td>
<?php else: ?>
        <td><span class="state"><?= h($status === 'unknown' ? 'unknown' : '?') ?></span></td>
        <td></td><td class="output"><?= h($status === 'unknown' ? 'forgotten by the daemon' : 'could not ask') ?></td><td></td><td></td>
<?php endif ?>
      </tr>
<?php endforeach ?>
    </tbody>
  </table>
  <nav><a href="jobs.php" id="refresh">Refresh</a> to see their states now.</nav>
<?php endif ?>
</main>
</body>
</html>
