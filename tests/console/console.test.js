// The operator console, end to end in a real headless Chromium (Debian's `chromium`,
// driven by playwright-core) against a real payoutd (its private PostgreSQL, its built-in
// ledger simulator): submit payouts, watch them confirm, open one, resume a parked one,
// cancel a held one, follow a run's progress, and see a caller's markup shown as text.
//
// PAYOUTD_CHROMIUM points at another Chromium; PAYOUTD_CONSOLE_SCREENSHOTS=DIR saves the
// screenshots docs/console.md shows.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

import { payoutd, until } from '../../integrations/bullmq/test/harness.js';

const TOKEN = 'console-test-token-0001';
const ADMIN = 'console-test-admin-0001';
const DEST = 'GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2';
// 28 bytes, the longest text memo: markup a careless page would run.
const HOSTILE_MEMO = '<img src=x onerror=alert(1)>';

const CHROMIUM = process.env.PAYOUTD_CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.PAYOUTD_CONSOLE_SCREENSHOTS;

let service;
let browser;
let page;
const dialogs = [];
const pageErrors = [];

async function post(p, body, token = TOKEN) {
  const r = await fetch(`${service.base}${p}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  return [r.status, await r.json()];
}

async function shot(name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `console-${name}.png`), fullPage: true });
}

/** Opens a console page and waits until `testid` shows `text`. */
async function open(hash, testid, text) {
  await page.goto(`${service.base}/console${hash}`);
  await page.getByTestId(testid).filter({ hasText: text }).first().waitFor({ timeout: 20_000 });
}

before(async () => {
  const probe = spawnSync(CHROMIUM, ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    throw new Error(
      `no Chromium at ${CHROMIUM}: install it with \`apt-get install -y chromium\` (scripts/test does this), ` +
        'or point PAYOUTD_CHROMIUM at one',
    );
  }
  service = await payoutd({
    tokens: [TOKEN],
    env: {
      PAYOUTD__SERVER__ADMIN_TOKENS: `console:${ADMIN}`,
      // Above 100 XLM a payout waits for an operator (held).
      PAYOUTD__LIMITS__ASSETS: '[{asset = "native", per_payout_max = "100"}]',
      PAYOUTD__LIMITS__WHEN_REACHED: 'hold',
      // Envelopes that are refused die soon (their max_time passes within seconds).
      PAYOUTD__PAYOUTS__TX_VALIDITY_S: '2',
      // A webhook receiver that is not there: its deliveries are dead after one attempt.
      PAYOUTD__WEBHOOKS__ENDPOINTS: '[{name = "gone", url = "http://127.0.0.1:1/hook", events = ["confirmed"], secret_env = "CONSOLE_HOOK_SECRET"}]',
      PAYOUTD__WEBHOOKS__ATTEMPTS_MAX: '1',
      CONSOLE_HOOK_SECRET: 'console-hook-secret-0001',
    },
  });
  await service.start();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    d.dismiss();
  });
  page.on('pageerror', (e) => pageErrors.push(e.message));
  // The token goes in through the form, as an operator would type it.
  await page.goto(`${service.base}/console`);
  await page.locator('#token').fill(TOKEN);
  await page.locator('#admin-token').fill(ADMIN);
  await page.locator('#tokens button').click();
  await page.getByTestId('count-confirmed').waitFor();
});

after(async () => {
  await browser?.close();
  await service?.remove();
});

test('without a token the console says so, and the page holds no data and no secret', async () => {
  const r = await fetch(`${service.base}/console`);
  assert.equal(r.status, 200);
  const csp = r.headers.get('content-security-policy') ?? '';
  assert.match(csp, /script-src 'self'/);
  const html = await r.text();
  assert.ok(!html.includes(TOKEN) && !html.includes(ADMIN));
  const bare = await browser.newPage();
  await bare.goto(`${service.base}/console`);
  await bare.locator('#flash').filter({ hasText: 'unauthenticated' }).waitFor();
  assert.match(await bare.locator('#flash').innerText(), /enter a token above/);
  await bare.close();
});

test('payouts submitted are watched until confirmed, and one opens with its timeline and envelope', async () => {
  for (let i = 0; i < 5; i++) {
    const [status] = await post('/v1/payouts', { payout_id: `run-7-${i}`, destination: DEST, asset: 'native', amount: `${i + 1}` });
    assert.equal(status, 202);
  }
  await open('#/payouts?id_prefix=run-7-', 'payouts', 'run-7-4');
  // The list refreshes by itself until every row is confirmed.
  await until('five confirmed rows', async () => (await page.locator('tr[data-payout] .state.confirmed').count()) === 5, {
    timeoutMs: 30_000,
  });
  await shot('payouts');
  await page.getByTestId('payout-link').filter({ hasText: 'run-7-2' }).click();
  await page.getByTestId('timeline').locator('tr[data-kind="confirmed"]').waitFor();
  const envelope = page.getByTestId('envelopes').locator('tr').nth(1);
  await envelope.waitFor();
  const cells = await envelope.locator('td').allInnerTexts();
  assert.match(cells[0], /^[0-9a-f]{64}$/, 'the hash');
  assert.equal(cells[1], 'applied');
  assert.match(cells[2], /^\d+$/, 'the ledger');
  assert.match(cells[4], /^index \d+ of \d+$/, 'its operation index in the envelope');
  await shot('payout');
  // The run's progress.
  await open('#/progress?id_prefix=run-7-', 'progress-done', '5');
  assert.equal(await page.getByTestId('progress-total').locator('.n').innerText(), '5');
  assert.equal(await page.getByTestId('progress-pending').locator('.n').innerText(), '0');
  await shot('progress');
  // The overview counts them.
  await open('#/', 'count-confirmed', '5');
  assert.match(await page.getByTestId('paused').innerText(), /running/);
  await shot('overview');
});

test('a parked payout is found, understood and resumed from the console', async () => {
  // Every submission is refused as malformed: the payout is parked with the reason, and its
  // envelope, watched until it is provably dead, dies unpaid.
  const faults = async (f) => {
    const r = await fetch(`${service.simulator}/sim/faults`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(f),
    });
    assert.ok(r.ok, await r.text());
  };
  await faults({ reject_next: { code: 'tx_malformed', count: 1000 } });
  await post('/v1/payouts', { payout_id: 'stuck-1', destination: DEST, asset: 'native', amount: '2' });
  await open('#/payouts?state=parked', 'payouts', 'stuck-1');
  await page.getByTestId('payout-link').filter({ hasText: 'stuck-1' }).click();
  await page.getByTestId('reason').filter({ hasText: 'tx_malformed' }).waitFor();
  await page.getByTestId('envelopes').locator('td', { hasText: /^dead$/ }).waitFor({ timeout: 30_000 });
  await shot('parked');
  // The operator fixes the cause, then resumes.
  await faults({});
  // Its envelope is dead now, so the actions say so, though the state stayed parked.
  await page.getByTestId('actions').filter({ hasText: 'puts it back in the queue' }).waitFor();
  assert.match(await page.getByTestId('actions').innerText(), /Cancel: it will never be paid/);
  await page.getByTestId('actions').locator('input[name=reason]').first().fill('simulator fault cleared');
  await page.getByTestId('resume').click();
  await page.getByTestId('payout').locator('.state.confirmed').waitFor({ timeout: 30_000 });
  const events = await page.getByTestId('timeline').innerText();
  assert.match(events, /resumed/);
  assert.match(events, /simulator fault cleared/);
  assert.equal(await page.getByTestId('envelopes').locator('tr').count(), 3, 'the dead envelope and the one that paid');
});

test('a held payout is cancelled from the console, with what the button does said first', async () => {
  const [status, body] = await post('/v1/payouts', { payout_id: 'big-1', destination: DEST, asset: 'native', amount: '500' });
  assert.equal(status, 202, JSON.stringify(body));
  await service.waitState('big-1', 'held', TOKEN);
  await open('#/payout/big-1', 'state', 'held');
  assert.match(await page.getByTestId('actions').innerText(), /Cancel: it will never be paid/);
  await page.getByTestId('cancel').click();
  await page.getByTestId('payout').locator('.state.cancelled').waitFor();
  assert.match(await page.locator('#flash').innerText(), /now cancelled/);
});

test('what callers sent is shown as text, never run as markup', async () => {
  const [status] = await post('/v1/payouts', {
    payout_id: 'memo-1',
    destination: DEST,
    asset: 'native',
    amount: '1',
    memo: { type: 'text', value: HOSTILE_MEMO },
  });
  assert.equal(status, 202);
  await open('#/payout/memo-1', 'memo', HOSTILE_MEMO);
  assert.equal(await page.getByTestId('memo').innerText(), `text: ${HOSTILE_MEMO}`);
  await open('#/payouts?id_prefix=memo-', 'memo', HOSTILE_MEMO);
  assert.equal(await page.locator('main img').count(), 0, 'no element was made of the memo');
  assert.deepEqual(dialogs, [], 'no script ran');
  assert.deepEqual(pageErrors, [], 'the console raised no error');
});

test('dead webhook deliveries are visible and replayed from the console', async () => {
  await open('#/webhooks', 'deliveries', 'run-7-0');
  const row = page.getByTestId('deliveries').locator('tr', { hasText: 'run-7-0' });
  assert.match(await row.innerText(), /error sending request/);
  await shot('webhooks');
  await row.getByTestId('replay').click();
  await page.locator('#flash').filter({ hasText: 'Say why first' }).waitFor();
  await page.getByTestId('replay-reason').fill('receiver back (INC-12)');
  await row.getByTestId('replay').click();
  await page.locator('#flash').filter({ hasText: 'queued again' }).waitFor();
  const r = await fetch(`${service.base}/v1/admin/audit`, { headers: { authorization: `Bearer ${ADMIN}` } });
  const audit = await r.json();
  assert.equal(audit.entries[0].action, 'webhook_replay');
  assert.equal(audit.entries[0].reason, 'receiver back (INC-12)');
});
