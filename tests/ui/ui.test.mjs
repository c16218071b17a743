// The status page (`GET /ui`) in headless Chromium (Debian's `chromium`, or `CHROMIUM`)
// driven by playwright-core, against a real three-node cluster with access control on:
// the page asks for a key, shows the leader, shows a lock acquired with curl within a
// second and drops it within a second of its release, follows the events, and filters
// by prefix. `UI_SCREENSHOT=path.png` also saves a screenshot of the page.
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { Cluster } from './cluster.mjs';

const OPS = 'bk_ops_0123456789abcdef';
const VIEWER = 'bk_viewer_0123456789abcdef';
/** How soon a change made with curl must show on the page, ms (issue 18). */
const SHOWN_WITHIN_MS = 1_000;

const run = promisify(execFile);

function chromiumPath() {
  const path = process.env.CHROMIUM ?? '/usr/bin/chromium';
  if (!existsSync(path)) throw new Error(`no Chromium at ${path}: apt-get install chromium, or set CHROMIUM`);
  return path;
}

/** `curl` a JSON request with `key`; the parsed answer. */
async function curl(key, url, body) {
  const { stdout } = await run('curl', [
    '-sS', '-X', 'POST', url, '-H', `Authorization: Bearer ${key}`,
    '-H', 'content-type: application/json', '-d', JSON.stringify(body),
  ]);
  return JSON.parse(stdout);
}

let cluster;
let browser;
let leader;

before(async () => {
  cluster = await Cluster.start({
    ops: [OPS, 'admin=*'],
    viewer: [VIEWER, 'read=deploy-'],
  });
  leader = await cluster.leader(OPS);
  browser = await chromium.launch({
    executablePath: chromiumPath(),
    // Root in a container has no user namespaces for Chromium's sandbox.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
});

after(async () => {
  await browser?.close();
  await cluster?.stop();
});

test('the page asks for a key, then shows the cluster, the locks and the events live', async () => {
  const follower = cluster.nodes.find((n) => n.id !== leader).id;
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // The first reads are refused until the key is given: Chromium logs each 401.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(m.text());
  });

  // From a follower, with no key: the page loads (it holds no data) and asks for one.
  const resp = await page.goto(`http://${cluster.api(follower)}/ui`);
  assert.equal(resp.status(), 200);
  await page.locator('#key-panel').waitFor({ state: 'visible' });
  await page.fill('#key-input', OPS);
  await page.click('#key-form button[type=submit]');
  await page.locator('#key-panel').waitFor({ state: 'hidden' });

  // The leader, as this follower knows it.
  const leaderRow = page.locator(`#nodes tr[data-node="${leader}"]`);
  await leaderRow.waitFor();
  assert.equal(await leaderRow.getAttribute('data-role'), 'leader');
  assert.match(await page.textContent('#served-by'), new RegExp(`node ${follower} \\(follower\\)`));
  assert.match(await page.textContent('#cluster-summary'), new RegExp(`leader: node ${leader}`));
  // The feed is connected before anything happens, so it sees every event below.
  await page.waitForFunction(() => document.getElementById('feed-state').textContent.includes('live'));

  const shot = process.env.UI_SCREENSHOT ? await leaderPage() : null;

  // A lock acquired with curl shows within a second.
  const web = await curl(OPS, `http://${cluster.api(leader)}/v1/locks/deploy-web/acquire`, {
    owner: 'ci-1',
    ttl_ms: 60_000,
  });
  assert.ok(web.token, JSON.stringify(web));
  const webRow = page.locator('#locks tr[data-key="deploy-web"]');
  await webRow.waitFor({ timeout: SHOWN_WITHIN_MS });
  const cells = await webRow.locator('td').allTextContents();
  assert.equal(cells[0], 'deploy-web');
  assert.equal(cells[1], 'ci-1');
  assert.equal(cells[2], String(web.token));
  assert.match(cells[3], /^\d+\.\d s$/);
  assert.equal(cells[4], '0');
  await page.locator('#events tr[data-event="acquired"][data-key="deploy-web"]').waitFor({ timeout: SHOWN_WITHIN_MS });

  // A held lock with a waiter behind it, and a key outside the prefix filtered below.
  await curl(OPS, `http://${cluster.api(leader)}/v1/locks/deploy-db/acquire`, { owner: 'migrate-7', ttl_ms: 60_000 });
  await curl(OPS, `http://${cluster.api(leader)}/v1/locks/report-nightly/acquire`, { owner: 'cron', ttl_ms: 60_000 });
  const waiter = spawn('curl', [
    '-sS', '-X', 'POST', `http://${cluster.api(follower)}/v1/locks/deploy-db/acquire`,
    '-H', `Authorization: Bearer ${OPS}`, '-H', 'content-type: application/json',
    '-d', JSON.stringify({ owner: 'migrate-8', ttl_ms: 60_000, wait_ms: 30_000 }),
  ], { stdio: 'ignore' });
  try {
    await page.waitForFunction(
      () => document.querySelector('#locks tr[data-key="deploy-db"] td:nth-child(5)')?.textContent === '1',
      null,
      { timeout: 10_000 },
    );
    await page.locator('#events tr[data-event="queued"][data-key="deploy-db"]').waitFor();
    if (shot) await screenshot(shot, process.env.UI_SCREENSHOT);

    // Its release takes it off the page within a second.
    await curl(OPS, `http://${cluster.api(leader)}/v1/locks/deploy-web/release`, { token: web.token });
    await webRow.waitFor({ state: 'detached', timeout: SHOWN_WITHIN_MS });
    await page.locator('#events tr[data-event="released"][data-key="deploy-web"]').waitFor({ timeout: SHOWN_WITHIN_MS });

    // The prefix filter narrows the list.
    await page.locator('#locks tr[data-key="report-nightly"]').waitFor();
    await page.fill('#prefix', 'deploy-');
    await page.locator('#locks tr[data-key="report-nightly"]').waitFor({ state: 'detached' });
    await page.locator('#locks tr[data-key="deploy-db"]').waitFor();
  } finally {
    waiter.kill('SIGKILL');
  }
  assert.deepEqual(problems, []);
  await context.close();
});

/** The README's picture: the leader's page (it knows the replication lag), opened
 * before the locks are taken so that its feed shows them. */
async function leaderPage() {
  const context = await browser.newContext({ viewport: { width: 1000, height: 660 } });
  const page = await context.newPage();
  await page.goto(`http://${cluster.api(leader)}/ui`);
  await page.fill('#key-input', OPS);
  await page.click('#key-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('feed-state').textContent.includes('live'));
  return page;
}

async function screenshot(page, path) {
  await page.waitForFunction(() => document.getElementById('cluster-summary').textContent.includes('3 locks stored'));
  await page.waitForFunction(() => document.querySelector('#nodes tr:last-child td:nth-child(6)')?.textContent === '0');
  await page.waitForFunction(() => document.querySelector('#locks tr[data-key="deploy-db"] td:nth-child(5)')?.textContent === '1');
  // The new events' highlight fades in 1.5 s.
  await page.waitForTimeout(1_600);
  await page.screenshot({ path });
  await page.context().close();
}

test('a key that may read some prefixes sees only what it may read', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`http://${cluster.api(leader)}/ui`);
  await page.fill('#key-input', VIEWER);
  await page.click('#key-form button[type=submit]');
  // Every key: not this application's to list.
  await page.waitForFunction(() => document.getElementById('locks-error').textContent.includes('no read permission'));
  await page.fill('#prefix', 'deploy-');
  await page.locator('#locks tr[data-key="deploy-db"]').waitFor();
  await page.waitForFunction(() => document.getElementById('locks-error').textContent === '');
  await context.close();
});
