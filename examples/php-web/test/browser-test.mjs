// Browser test of examples/php-web, the post's architecture end to end: Debian's headless
// Chromium, driven by playwright-core, submits a job through the PHP page, which hands it to a
// real sockecho-server through the PHP client; the reply must appear on the page. The jobs page
// hands three jobs to a --background daemon and follows them through its status listener: one
// that exits 75 once is seen retrying then ok, a queued one is cancelled from the page. Then the
// daemon is stopped and the page must tell the visitor the job service is not available.
//
// Usage (from anywhere):
//   node browser-test.mjs [--server PATH] [--php PATH] [--chromium PATH] [--screenshots DIR]
// Defaults: <repo>/build/tools/sockecho-server (or $SOCKECHO_SERVER), php on PATH,
// /usr/bin/chromium, <repo>/docs. It saves php-web.png (the reply), php-web-jobs-live.png (jobs
// queued, running and retrying), php-web-jobs.png (the same jobs ended) and php-web-down.png
// (the error) there. Exits 0 when every check passed, 1 otherwise. Every wait is bounded; ports are
// ephemeral (the daemon's from its ready line, PHP's picked free and retried on a collision).

import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
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
  // The background daemon of jobs.php, with its status listener: each job takes 2 s, one runs
  // at a time (so the third waits, and can be cancelled), a job that exits 75 runs again 1 s later.
  const jobs = await startProgram(opts.server, ['--host', '127.0.0.1', '--port', '0', '--background', '--jobs', '1',
    '--status', '127.0.0.1:0', '--retry-delay', '1',
    '--exec', opts.php, path.join(root, 'examples/php-web/jobs/slow-job.php')], {
    ready: /listening on 127\.0\.0\.1:(\d+)\n(?:.*\n)*?status on (127\.0\.0\.1:\d+)\n/,
    env: { SOCKECHO_JOB_SECONDS: '2' },
    label: 'sockecho-server --background',
  });
  const jobsPort = Number(jobs.match[1]);
  const statusAddress = jobs.match[2];
  console.log(`sockecho-server --background listening on 127.0.0.1:${jobsPort}, status on ${statusAddress}`);
  const php = await startPhp(daemonPort, { SOCKECHO_JOBS_PORT: String(jobsPort), SOCKECHO_STATUS: statusAddress });
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

    // Background jobs: three submitted, each acknowledged at once; the list follows them.
    const jobsPage = await page.goto(php.url + 'jobs.php');
    check(jobsPage?.status() === 200, `GET /jobs.php answers 200 (got ${jobsPage?.status()})`);
    check(await page.locator('#none').isVisible(), 'no jobs at first');
    const ids = [];
    for (const [name, flaky] of [['monthly report', true], ['resize photos', false], ['send newsletter', false]]) {
      if (flaky) await page.check('#flaky');
      const started = Date.now();
      const jobStatus = await submit(page, name, '#submit');
      const took = Date.now() - started;
      const id = (await page.locator('#accepted-id').textContent()) ?? '';
      check(jobStatus === 200 && /^[A-Za-z0-9_-]{22}$/.test(id), `"${name}" acknowledged with an id (status ${jobStatus}, id ${JSON.stringify(id)})`);
      check(took < 1000, `"${name}" acknowledged in under a second, while it takes 2 s to run (${took} ms)`);
      ids.push(id);
    }
    check(new Set(ids).size === 3, `three different job ids (${ids.join(', ')})`);
    check(await page.locator('#jobs tbody tr').count() === 3, 'the list shows the three jobs');
    const [flakyId, secondId, thirdId] = ids;
    const row = (id) => page.locator(`#job-${id}`);
    const stateOf = async (id) => ((await row(id).locator('.state').textContent()) ?? '').trim();
    const attemptsOf = async (id) => ((await row(id).locator('.attempts').textContent()) ?? '').trim();
    const outputOf = async (id) => ((await row(id).locator('.output').textContent()) ?? '').trim();

    // Reloads the list (bounded) until `done` holds; returns whether it did. Each state seen is noted.
    const seen = new Map(ids.map((id) => [id, new Set()]));
    async function reloadUntil(done, what) {
      const until = Date.now() + STEP_TIMEOUT_MS;
      while (Date.now() < until) {
        await page.goto(php.url + 'jobs.php');
        for (const id of ids) seen.get(id).add(await stateOf(id));
        if (await done()) return true;
        await page.waitForTimeout(100); // a poll interval, within the bound above
      }
      return check(false, `within ${STEP_TIMEOUT_MS} ms: ${what}`);
    }

    // The flaky job's first attempt exits 75 after 0.5 s: it is retrying, while the second runs
    // and the third waits.
    await reloadUntil(async () => (await stateOf(flakyId)) === 'retrying', 'the flaky job is retrying');
    check(await stateOf(flakyId) === 'retrying' && await attemptsOf(flakyId) === '1', `the flaky job is retrying after attempt 1 (${await stateOf(flakyId)}, attempts ${await attemptsOf(flakyId)})`);
    check(await stateOf(thirdId) === 'queued', `the third job is queued (${await stateOf(thirdId)})`);
    check(await row(thirdId).locator('button.cancel').count() === 1, 'a queued job has a Cancel button');
    check(await stateOf(secondId) === 'running' && await row(secondId).locator('button.cancel').count() === 0, `the second job is running, with no Cancel button (${await stateOf(secondId)})`);
    await page.screenshot({ path: path.join(opts.screenshots, 'php-web-jobs-live.png') });
    console.log(`saved ${path.join(opts.screenshots, 'php-web-jobs-live.png')}`);

    // Cancel the queued one from the page.
    const [cancelResponse] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST'),
      row(thirdId).locator('button.cancel').click(),
    ]);
    await page.waitForLoadState('load');
    check(cancelResponse.status() === 200, `the cancel answers 200 (got ${cancelResponse.status()})`);
    check(((await page.locator('#notice').textContent()) ?? '').includes(`${thirdId} is cancelled`), 'the page says the job is cancelled');
    check(await stateOf(thirdId) === 'cancelled' && await attemptsOf(thirdId) === '0', `the third job is cancelled, never run (${await stateOf(thirdId)}, attempts ${await attemptsOf(thirdId)})`);

    // Both others end ok; the flaky one on its second attempt.
    await reloadUntil(async () => (await stateOf(flakyId)) === 'ok' && (await stateOf(secondId)) === 'ok', 'the first two jobs end ok');
    check(await attemptsOf(flakyId) === '2' && await outputOf(flakyId) === 'MONTHLY REPORT', `the flaky job ends ok on attempt 2 with its output (attempts ${await attemptsOf(flakyId)}, ${JSON.stringify(await outputOf(flakyId))})`);
    check(await attemptsOf(secondId) === '1' && await outputOf(secondId) === 'RESIZE PHOTOS', 'the second job ends ok on attempt 1 with its output');
    check(await stateOf(thirdId) === 'cancelled', 'the cancelled job stays cancelled');
    const flakySeen = [...seen.get(flakyId)];
    check(flakySeen.includes('retrying') && flakySeen.includes('ok'), `the flaky job was seen ${flakySeen.join(', ')}`);
    check(await page.locator('button.cancel').count() === 0, 'no Cancel button on ended jobs');
    await page.screenshot({ path: path.join(opts.screenshots, 'php-web-jobs.png') });
    console.log(`saved ${path.join(opts.screenshots, 'php-web-jobs.png')}`);
    const jobsCode = await stopProgram(jobs.child, 'sockecho-server --background');
    check(jobsCode === 0, `the background daemon exits 0 on SIGTERM (got ${jobsCode})`);
    check(new RegExp(`job id=${flakyId} attempt=1 ms=\\S+ exit=75 retry_in_ms=`).test(jobs.child.output), 'its log has the exit 75 and the retry');
    check(new RegExp(`job id=${flakyId} attempt=2 ms=\\S+ exit=0`).test(jobs.child.output), 'and the second attempt ok');
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
