// Browser test of examples/php-web, the post's architecture end to end: Debian's headless
// Chromium, driven by playwright-core, submits a job through the PHP page, which hands it to a
// real sockecho-server through the PHP client; the reply must appear on the page. Then the daemon
// is stopped and the page must tell the visitor the job service is not available.
//
// Usage (from anywhere):
//   node browser-test.mjs [--server PATH] [--php PATH] [--chromium PATH] [--screenshots DIR]
// Defaults: <repo>/build/tools/sockecho-server (or $SOCKECHO_SERVER), php on PATH,
// /usr/bin/chromium, <repo>/docs. It saves php-web.png (the reply) and php-web-down.png (the
// error) there. Exits 0 when every check passed, 1 otherwise. Every wait is bounded; ports are
// ephemeral (the daemon's from its ready line, PHP's picked free and retried on a collision).

import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../../..');

const { values: opts } = parseArgs({
  options: {
    server: { type: 'string', default: process.env.SOCKECHO_SERVER || path.join(root, 'build/tools/sockecho-server') },
    php: { type: 'string', default: 'php' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    screenshots: { type: 'string', default: path.join(root, 'docs') },
  },
});

const PREFIX = '数据是 ';
const STEP_TIMEOUT_MS = 15_000;
const WHOLE_TEST_MS = 120_000;

let passed = 0;
let failed = 0;
function check(condition, what) {
  if (condition) {
    passed++;
    console.log(`ok   ${what}`);
  } else {
    failed++;
    console.log(`FAIL ${what}`);
  }
  return condition;
}

const children = new Set();

// Starts a program; resolves with {child, match} once a line of its output (stdout or stderr)
// matches `ready`, rejects if it exits first or `timeoutMs` passes.
function startProgram(command, args, { ready, env, timeoutMs = STEP_TIMEOUT_MS, label }) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    child.output = '';
    child.exited = new Promise((done) => child.once('exit', (code, signal) => {
      children.delete(child);
      done({ code, signal });
    }));
    let settled = false;
    const timer = setTimeout(() => finish(new Error(`${label}: no ready line within ${timeoutMs} ms; output:\n${child.output}`)), timeoutMs);
    function finish(error, match) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error) {
        child.kill('SIGKILL');
        reject(error);
      } else {
        resolve({ child, match });
      }
    }
    const onData = (data) => {
      child.output += data.toString();
      const match = child.output.match(ready);
      if (match) finish(null, match);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('error', (error) => finish(new Error(`${label}: cannot start ${command}: ${error.message}`)));
    child.exited.then(({ code, signal }) => finish(new Error(`${label} exited (${signal ?? code}) before it was ready; output:\n${child.output}`)));
  });
}

// SIGTERM, then waits (bounded) for the exit; returns the exit code.
async function stopProgram(child, label) {
  child.kill('SIGTERM');
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${label} did not exit within ${STEP_TIMEOUT_MS} ms of SIGTERM`)), STEP_TIMEOUT_MS);
  });
  try {
    const { code, signal } = await Promise.race([child.exited, timeout]);
    return signal ?? code;
  } finally {
    clearTimeout(timer);
  }
}

// A port that was free a moment ago: bind port 0 on loopback, note the port, close.
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

// php -S cannot take port 0, so pick a free port and retry if someone takes it first.
async function startPhp(daemonPort, env = {}) {
  const docroot = path.join(root, 'examples/php-web');
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    try {
      const { child } = await startProgram(opts.php, ['-S', `127.0.0.1:${port}`, '-t', docroot], {
        ready: /Development Server \(http:\/\/127\.0\.0\.1:\d+\) started/,
        env: { SOCKECHO_HOST: '127.0.0.1', SOCKECHO_PORT: String(daemonPort), ...env },
        label: 'php -S',
      });
      return { child, url: `http://127.0.0.1:${port}/` };
    } catch (error) {
      if (attempt >= 5 || !/Address already in use/.test(error.message)) throw error;
      console.log(`php -S: port ${port} was taken meanwhile, trying another`);
    }
  }
}

// Fills the form, submits, and returns the HTTP status of the POST.
async function submit(page, job, button = '#send') {
  await page.fill('#job', job);
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST'),
    page.click(button),
  ]);
  await page.waitForLoadState('load');
  return response.status();
}

async function main() {
  mkdirSync(opts.screenshots, { recursive: true });
  const daemon = await startProgram(opts.server, ['--host', '127.0.0.1', '--port', '0'], {
    ready: /listening on 127\.0\.0\.1:(\d+)/,
    label: 'sockecho-server',
  });
  const daemonPort = Number(daemon.match[1]);
  console.log(`sockecho-server listening on 127.0.0.1:${daemonPort}`);
  // The background daemon of jobs.php: each job takes 2 s, two run at once.
  const results = mkdtempSync(path.join(os.tmpdir(), 'sockecho-php-web-'));
  const jobs = await startProgram(opts.server, ['--host', '127.0.0.1', '--port', '0', '--background', '--jobs', '2',
    '--exec', opts.php, path.join(root, 'examples/php-web/jobs/slow-job.php')], {
    ready: /listening on 127\.0\.0\.1:(\d+)/,
    env: { SOCKECHO_RESULTS: results, SOCKECHO_JOB_SECONDS: '2' },
    label: 'sockecho-server --background',
  });
  const jobsPort = Number(jobs.match[1]);
  console.log(`sockecho-server --background listening on 127.0.0.1:${jobsPort}`);
  const php = await startPhp(daemonPort, { SOCKECHO_JOBS_PORT: String(jobsPort), SOCKECHO_RESULTS: results });
  console.log(`php -S serving examples/php-web at ${php.url}`);

  const browser = await chromium.launch({
    executablePath: opts.chromium,
    headless: true,
    timeout: STEP_TIMEOUT_MS,
    // Playwright gives every launch a new, empty profile (--user-data-dir in a fresh temp dir).
    // The network here is closed: keep Chromium from trying to reach its services at all.
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 820, height: 560 }, deviceScaleFactor: 1 });
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    const problems = [];
    let daemonDown = false; // then the page's own 503 is expected, and Chromium logs it as an error
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      if (daemonDown && /status of 503/.test(m.text()) && m.location().url === php.url) return;
      problems.push(`console: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('request', (r) => { if (!r.url().startsWith(php.url) && !r.url().startsWith('data:')) problems.push(`request outside the page: ${r.url()}`); });

    const first = await page.goto(php.url);
    check(first?.status() === 200, `GET / answers 200 (got ${first?.status()})`);
    check(await page.locator('#job').isVisible(), 'the form shows a job field');

    // Markup in the job must come back as text, not as HTML.
    const job = 'resize photo-42.jpg <b>now</b> & then';
    const status = await submit(page, job);
    check(status === 200, `POST with the daemon up answers 200 (got ${status})`);
    const reply = await page.locator('#reply-text').textContent();
    check(reply === PREFIX + job, `the page shows the reply "${PREFIX}${job}" (got ${JSON.stringify(reply)})`);
    check(await page.locator('#reply-text b').count() === 0, 'the reply is escaped (no <b> element made from it)');
    check(await page.locator('#job').inputValue() === job, 'the job stays in the field');
    await page.screenshot({ path: path.join(opts.screenshots, 'php-web.png') });
    console.log(`saved ${path.join(opts.screenshots, 'php-web.png')}`);

    // Background jobs: three submitted, each acknowledged at once, all finished later.
    const jobsPage = await page.goto(php.url + 'jobs.php');
    check(jobsPage?.status() === 200, `GET /jobs.php answers 200 (got ${jobsPage?.status()})`);
    check(await page.locator('#none').isVisible(), 'no finished jobs at first');
    const ids = [];
    for (const name of ['monthly report', 'resize photos', 'send newsletter']) {
      const started = Date.now();
      const jobStatus = await submit(page, name, '#submit');
      const took = Date.now() - started;
      const id = (await page.locator('#accepted-id').textContent()) ?? '';
      check(jobStatus === 200 && /^[A-Za-z0-9_-]{22}$/.test(id), `"${name}" acknowledged with an id (status ${jobStatus}, id ${JSON.stringify(id)})`);
      check(took < 1000, `"${name}" acknowledged in under a second, while it takes 2 s to run (${took} ms)`);
      ids.push(id);
    }
    check(new Set(ids).size === 3, `three different job ids (${ids.join(', ')})`);
    check(await page.locator('#finished tbody tr').count() < 3, 'not all finished when the last was acknowledged');
    // Bounded wait for the jobs to finish: reload the list until all three are there.
    const until = Date.now() + STEP_TIMEOUT_MS;
    let rows = 0;
    while (Date.now() < until) {
      await page.goto(php.url + 'jobs.php');
      rows = await page.locator('#finished tbody tr').count();
      if (rows >= 3) break;
      await page.waitForTimeout(250); // a poll interval, within the bound above
    }
    check(rows === 3, `all three jobs listed as finished (${rows})`);
    const listed = (await page.locator('#finished').textContent()) ?? '';
    check(ids.every((id) => listed.includes(id)) && listed.includes('MONTHLY REPORT'), 'each finished job shows its id and result');
    await page.screenshot({ path: path.join(opts.screenshots, 'php-web-jobs.png') });
    console.log(`saved ${path.join(opts.screenshots, 'php-web-jobs.png')}`);
    const jobsCode = await stopProgram(jobs.child, 'sockecho-server --background');
    check(jobsCode === 0, `the background daemon exits 0 on SIGTERM (got ${jobsCode})`);
    check(/job id=\S+ attempt=1 ms=\S+ exit=0/.test(jobs.child.output), 'its log has a job end line');
    rmSync(results, { recursive: true, force: true });
    await page.goto(php.url);

    daemonDown = true;
    const code = await stopProgram(daemon.child, 'sockecho-server');
    check(code === 0, `sockecho-server exits 0 on SIGTERM (got ${code})`);

    const downStatus = await submit(page, 'are you there?');
    check(downStatus === 503, `POST with the daemon down answers 503 (got ${downStatus})`);
    const error = (await page.locator('#error-text').textContent()) ?? '';
    check(error.includes('The job service is not available right now'), `the page says the service is not available (got ${JSON.stringify(error)})`);
    check(error.includes(`connect 127.0.0.1:${daemonPort}: Connection refused`), 'the message names the address and the reason');
    check(await page.locator('#reply').count() === 0, 'no reply is shown while the daemon is down');
    await page.screenshot({ path: path.join(opts.screenshots, 'php-web-down.png') });
    console.log(`saved ${path.join(opts.screenshots, 'php-web-down.png')}`);

    check(problems.length === 0, `no console errors, page errors or outside requests${problems.length ? ': ' + problems.join('; ') : ''}`);
  } finally {
    await browser.close();
    const phpCode = await stopProgram(php.child, 'php -S');
    if (failed) console.log(`php -S log:\n${php.child.output}`);
    void phpCode;
  }
}

const watchdog = setTimeout(() => {
  console.log(`FAIL the whole test took longer than ${WHOLE_TEST_MS} ms`);
  for (const child of children) child.kill('SIGKILL');
  process.exit(1);
}, WHOLE_TEST_MS);
watchdog.unref();

try {
  await main();
} catch (error) {
  failed++;
  console.log(`FAIL ${error.stack ?? error}`);
} finally {
  for (const child of children) child.kill('SIGKILL');
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 && passed > 0 ? 0 : 1;
