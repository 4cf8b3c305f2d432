<?php

// What the example's two pages share: escaping, the response headers, and the start of the
// document with the styles both use. Each page adds its own styles and its body.

declare(strict_types=1);

function h(string $text): string
{
    // ENT_SUBSTITUTE: a reply is bytes, and bytes that are not UTF-8 must not blank the output.
    return htmlspecialchars($text, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
}

// HTML in UTF-8, under a policy that allows the page's inline styles and its own form, nothing
// else: whatever a reply holds, it cannot load or run anything.
function send_page_headers(): void
{
    header('Content-Type: text/html; charset=utf-8');
    header("Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'");
    header('X-Content-Type-Options: nosniff');
}

// Everything up to <body>: the title, the shared styles, then $css, the page's own.
function page_head(string $title, string $css): void
{
    ?>
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title><?= h($title) ?> · sockecho</title>
<style>
  :root { color-scheme: light; --accent: #1f6feb; --line: #d0d7de; --muted: #57606a; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", "Noto Sans", "Noto Sans CJK SC", sans-serif;
         color: #1f2328; background: #f6f8fa; }
  main { padding: 2rem; background: #fff; border: 1px solid var(--line); border-radius: 12px; }
  h1 { margin: 0 0 .25rem; font-size: 1.5rem; }
  p.lead { color: var(--muted); }
  .row { display: flex; gap: .5rem; }
  input[type=text] { flex: 1; padding: .55rem .75rem; font: inherit; border: 1px solid var(--line); border-radius: 6px; }
  input[type=text]:focus { outline: 2px solid var(--accent); outline-offset: -1px; border-color: var(--accent); }
  button { padding: .55rem 1.1rem; font: inherit; font-weight: 600; color: #fff; background: var(--accent);
           border: 0; border-radius: 6px; cursor: pointer; }
  button:hover { filter: brightness(1.1); }
  section { border-radius: 8px; }
  .error { background: #ffebe9; border: 1px solid #ff8182; }
  code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
<?= $css ?>
</style>
</head>
<?php
}
