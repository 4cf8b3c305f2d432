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

use Sockecho\Client;

const SERVICE_UNAVAILABLE = 'The job service is not available right now';

function h(string $text): string
{
    // ENT_SUBSTITUTE: a reply is bytes, and bytes that are not UTF-8 must not blank the output.
    return htmlspecialchars($text, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
}

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
<title>Send a job · sockecho</title>
<style>
  :root { color-scheme: light; --accent: #1f6feb; --line: #d0d7de; --muted: #57606a; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", "Noto Sans", "Noto Sans CJK SC", sans-serif;
         color: #1f2328; background: #f6f8fa; }
  main { max-width: 40rem; margin: 3rem auto; padding: 2rem; background: #fff; border: 1px solid var(--line);
         border-radius: 12px; box-shadow: 0 1px 3px rgba(0, 0, 0, .06); }
  h1 { margin: 0 0 .25rem; font-size: 1.5rem; }
  p.lead { margin: 0 0 1.5rem; color: var(--muted); }
  label { display: block; font-weight: 600; margin-bottom: .4rem; }
  .row { display: flex; gap: .5rem; }
  input[type=text] { flex: 1; padding: .55rem .75rem; font: inherit; border: 1px solid var(--line); border-radius: 6px; }
  input[type=text]:focus { outline: 2px solid var(--accent); outline-offset: -1px; border-color: var(--accent); }
  button { padding: .55rem 1.1rem; font: inherit; font-weight: 600; color: #fff; background: var(--accent);
           border: 0; border-radius: 6px; cursor: pointer; }
  button:hover { filter: brightness(1.1); }
  section { margin-top: 1.5rem; padding: 1rem 1.25rem; border-radius: 8px; }
  section h2 { margin: 0 0 .5rem; font-size: 1rem; }
  .reply { background: #dafbe1; border: 1px solid #4ac26b; }
  .error { background: #ffebe9; border: 1px solid #ff8182; }
  pre { margin: 0; white-space: pre-wrap; word-break: break-all; font: 1.1rem/1.4 ui-monospace, "DejaVu Sans Mono", monospace; }
  .error p { margin: 0; }
  .meta { margin: .5rem 0 0; font-size: .85rem; color: var(--muted); }
  footer { margin-top: 1.5rem; font-size: .85rem; color: var(--muted); }
  code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
</style>
</head>
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
