<?php

// The architecture the original blog post describes, end to end: a web page that hands a job to
// a blocking TCP daemon (sockecho-server) and shows its reply. The visitor types a job, the page
// sends it with the PHP client (clients/php), and shows the reply, or, when the daemon cannot be
// reached, says so instead of hanging or failing with a blank page.
//
// Run by hand (two terminals, from the repository root):
//   ./build/tools/sockecho-server
//   php -S 127.0.0.1:8080 -t examples/php-web
// then open http://127.0.0.1:8080/. The daemon's address comes from SOCKECHO_HOST and
// SOCKECHO_PORT (default 127.0.0.1:12387).

declare(strict_types=1);

// In an application installed with Composer this is vendor/autoload.php.
require __DIR__ . '/../../clients/php/autoload.php';

require __DIR__ . '/page.php';

use Sockecho\Client;

const SERVICE_UNAVAILABLE = 'The job service is not available right now';

$host = getenv('SOCKECHO_HOST') ?: Client::DEFAULT_HOST;
$port = (int) (getenv('SOCKECHO_PORT') ?: Client::DEFAULT_PORT);

$job = null;
$reply = null;
$error = null;
$millis = null;

if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    $job = (string) ($_POST['job'] ?? '');
    $start = hrtime(true);
    try {
        // Short limits: a visitor is waiting, and a page must never hang on a stuck daemon.
        $client = new Client($host, $port, connectTimeout: 2.0, readTimeout: 10.0, maxReplyBytes: 1 << 20);
        $reply = $client->request($job);
        $millis = (hrtime(true) - $start) / 1e6;
    } catch (\Sockecho\ConnectionException | \Sockecho\TimeoutException $e) {
        // The daemon is down, unreachable or stuck: a temporary condition, said so with 503.
        http_response_code(503);
        header('Retry-After: 30');
        $error = SERVICE_UNAVAILABLE . ' (' . $e->getMessage() . '). Please try again in a moment.';
        error_log('php-web: ' . $e->getMessage());
    } catch (\Sockecho\Exception | \InvalidArgumentException $e) {
        http_response_code(502);
        $error = 'The job service failed to answer (' . $e->getMessage() . ').';
        error_log('php-web: ' . $e->getMessage());
    }
}

send_page_headers();
page_head('Send a job', <<<'CSS'
  main { max-width: 40rem; margin: 3rem auto; box-shadow: 0 1px 3px rgba(0, 0, 0, .06); }
  p.lead { margin: 0 0 1.5rem; }
  label { display: block; font-weight: 600; margin-bottom: .4rem; }
  section { margin-top: 1.5rem; padding: 1rem 1.25rem; }
  section h2 { margin: 0 0 .5rem; font-size: 1rem; }
  .reply { background: #dafbe1; border: 1px solid #4ac26b; }
  pre { margin: 0; white-space: pre-wrap; word-break: break-all; font: 1.1rem/1.4 ui-monospace, "DejaVu Sans Mono", monospace; }
  .error p { margin: 0; }
  .meta { margin: .5rem 0 0; font-size: .85rem; color: var(--muted); }
  footer { margin-top: 1.5rem; font-size: .85rem; color: var(--muted); }
CSS);
?>
<body>
<main>
  <h1>Send a job</h1>
  <p class="lead">This page hands your text to the job daemon at <code><?= h($host) ?>:<?= h((string) $port) ?></code> and shows what it answers.</p>
  <form method="post" action="">
    <label for="job">Job</label>
    <div class="row">
      <input type="text" id="job" name="job" value="<?= h($job ?? '') ?>" placeholder="hello" autofocus autocomplete="off">
      <button type="submit" id="send">Send</button>
    </div>
  </form>
<?php if ($reply !== null): ?>
  <section class="reply" id="reply" role="status">
    <h2>Reply</h2>
    <pre id="reply-text"><?= h($reply) ?></pre>
    <p class="meta"><?= strlen($reply) ?> bytes from <?= h($host) ?>:<?= h((string) $port) ?> in <?= h(sprintf('%.1f', $millis)) ?> ms</p>
  </section>
<?php elseif ($error !== null): ?>
  <section class="error" id="error" role="alert">
    <h2>No reply</h2>
    <p id="error-text"><?= h($error) ?></p>
  </section>
<?php endif ?>
  <footer>Served by PHP <?= h(PHP_VERSION) ?> · the job goes over TCP with <code>Sockecho\Client</code>: connect, send, half-close, read until the daemon closes.</footer>
</main>
</body>
</html>
