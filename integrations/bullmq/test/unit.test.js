// The pure parts: mapping, classification of payoutd's answers, backoff, configuration.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import {
  DEFAULT_MAPPING,
  MappingError,
  classify,
  configFromEnv,
  headerSafe,
  jsonLogger,
  mapJob,
  parseMapping,
  retryDelayMs,
} from '../src/index.js';
import { PACKAGE_DIR } from './harness.js';

const DEST = 'GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2';

test('the old job shape maps to the request; amounts go through as the same string', () => {
  for (const amount of ['12.5', '0.0000001', '922337203685.4775807', '1e5', '-1', ' 7 ', '0.30000000000000004']) {
    const { body, notes } = mapJob({ payoutId: 'p-1', destination: DEST, asset: 'native', amount, memo: 'hi', extra: 1 });
    assert.deepEqual(body, { payout_id: 'p-1', destination: DEST, asset: 'native', amount, memo: { type: 'text', value: 'hi' } });
    assert.deepEqual(notes, []);
    // Byte for byte in the JSON sent.
    assert.ok(JSON.stringify(body).includes(`"amount":${JSON.stringify(amount)}`));
  }
});

test('memo: absent, string, number, object', () => {
  const base = { payoutId: 'p', destination: DEST, asset: 'native', amount: '1' };
  assert.equal(mapJob(base).body.memo, undefined);
  assert.equal(mapJob({ ...base, memo: null }).body.memo, undefined);
  assert.deepEqual(mapJob({ ...base, memo: 42 }).body.memo, { type: 'id', value: '42' });
  assert.deepEqual(mapJob({ ...base, memo: 0 }).body.memo, { type: 'id', value: '0' });
  assert.deepEqual(mapJob({ ...base, memo: { type: 'hash', value: 'ab'.repeat(32) } }).body.memo, { type: 'hash', value: 'ab'.repeat(32) });
  assert.deepEqual(mapJob({ ...base, memo: { type: 'id', value: 7 } }).body.memo, { type: 'id', value: '7' });
  // Numbers JavaScript does not hold exactly are passed as numbers, for payoutd to refuse.
  for (const memo of [2 ** 60, -1, 1.5]) {
    const { body, notes } = mapJob({ ...base, memo });
    assert.deepEqual(body.memo, { type: 'id', value: memo });
    assert.match(notes[0], /send it as a string/);
  }
});

test('numbers: a whole payout id is converted exactly; an amount never is', () => {
  const { body, notes } = mapJob({ payoutId: 12345, destination: DEST, asset: 'native', amount: 12 });
  assert.equal(body.payout_id, '12345');
  assert.equal(body.amount, 12, 'passed through as a number: payoutd refuses it');
  assert.equal(notes.length, 1);
  assert.match(notes[0], /"amount" is a JSON number \(12\)/);
});

test('a mapping file: paths, defaults, memo types; typos refused', () => {
  const mapping = parseMapping({
    fields: { payout_id: 'payout.ref', amount: 'payout.amount', asset: null, memo: 'payout.reference' },
    defaults: { asset: 'USDC:GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN' },
    memo: { string: 'hash', number: 'text' },
  });
  const { body } = mapJob({ payout: { ref: 'r-9', amount: '3', reference: 77 }, destination: DEST, asset: 'ignored' }, mapping);
  assert.deepEqual(body, {
    payout_id: 'r-9',
    destination: DEST,
    asset: 'USDC:GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN',
    amount: '3',
    memo: { type: 'text', value: '77' },
  });
  // Inherited properties are not job data.
  assert.equal(mapJob({ payoutId: 'x' }, parseMapping({ fields: { amount: 'constructor' } })).body.amount, undefined);
  for (const bad of [
    [],
    { field: {} },
    { fields: { payoutId: 'x' } },
    { fields: { amount: '' } },
    { fields: { amount: 'a..b' } },
    { defaults: { amount: 1 } },
    { memo: { string: 'return' } },
    { memo: { number: 'hash' } },
  ]) {
    assert.throws(() => parseMapping(bad), MappingError, JSON.stringify(bad));
  }
  // The file shipped as an example is the default.
  const shipped = JSON.parse(readFileSync(path.join(PACKAGE_DIR, 'mapping.default.json'), 'utf8'));
  assert.deepEqual(parseMapping(shipped), parseMapping({}));
  assert.deepEqual(parseMapping({}), { ...DEFAULT_MAPPING, fields: { ...DEFAULT_MAPPING.fields }, memo: { ...DEFAULT_MAPPING.memo }, defaults: {} });
});

test('answers: complete, fail, stop, or send again', () => {
  const payout = JSON.stringify({ payout_id: 'p', state: 'accepted' });
  const err = (code) => JSON.stringify({ error: { code, message: 'm' } });
  assert.equal(classify(202, payout).kind, 'created');
  assert.equal(classify(200, payout).kind, 'duplicate');
  for (const s of [400, 409, 413, 415, 422]) assert.equal(classify(s, err('c')).kind, 'refused', String(s));
  for (const s of [401, 403, 404, 405, 410, 302]) assert.equal(classify(s, err('c')).kind, 'configuration', String(s));
  for (const s of [408, 425, 429, 500, 502, 503, 504]) assert.equal(classify(s, 'not json').kind, 'transient', String(s));
  assert.equal(classify(200, '<html>').kind, 'configuration', 'a 200 that is not a payout');
  assert.deepEqual(classify(422, JSON.stringify({ error: { code: 'amount_format', message: 'bad', field: 'amount' } })), {
    kind: 'refused',
    status: 422,
    code: 'amount_format',
    message: 'bad',
    field: 'amount',
  });
  assert.equal(classify(413, '').code, 'http_413');
  const busy = classify(503, err('overloaded'), '2');
  assert.equal(busy.kind === 'transient' && busy.retryAfterMs, 2000);
});

test('backoff doubles from the minimum, stays within the bounds, and jitters', () => {
  const bounds = { retryDelayMinMs: 100, retryDelayMaxMs: 5000 };
  for (let attempt = 1; attempt < 80; attempt++) {
    for (const r of [0, 0.5, 0.999]) {
      const d = retryDelayMs(attempt, bounds, undefined, () => r);
      assert.ok(d >= 100 && d <= 5000, `${attempt}: ${d}`);
    }
  }
  assert.equal(retryDelayMs(1, bounds, undefined, () => 0.999), 100);
  assert.equal(retryDelayMs(4, bounds, undefined, () => 1), 800);
  assert.equal(retryDelayMs(4, bounds, undefined, () => 0), 400);
  assert.equal(retryDelayMs(30, bounds, undefined, () => 1), 5000);
  assert.equal(retryDelayMs(1, bounds, 60_000), 5000, 'Retry-After is capped');
  assert.equal(retryDelayMs(1, bounds, 0), 100);
});

test('configuration from the environment; errors never show the token', async () => {
  const c = await configFromEnv({});
  assert.equal(c.queueName, 'payouts');
  assert.equal(c.redisUrl, 'redis://127.0.0.1:6379');
  assert.equal(c.payoutdUrl, 'http://127.0.0.1:8080');
  assert.equal(c.payoutdApiToken, undefined);
  const dir = mkdtempSync(path.join(tmpdir(), 'payoutd-bullmq-unit-'));
  const file = path.join(dir, 'token');
  writeFileSync(file, 'from-a-file\n');
  assert.equal((await configFromEnv({ PAYOUTD_API_TOKEN_FILE: file })).payoutdApiToken, 'from-a-file');
  const secret = 'sekrit-value-99';
  for (const env of [
    { PAYOUTD_API_TOKEN: `${secret} x` },
    { PAYOUTD_API_TOKEN: secret, PAYOUTD_API_TOKEN_FILE: file },
    { PAYOUTD_API_TOKEN: secret, PAYOUTD_URL: `http://u:${secret}@h` },
    { PAYOUTD_API_TOKEN: secret, PAYOUTD_BULLMQ_RETRY_DELAY_MIN_MS: '900', PAYOUTD_BULLMQ_RETRY_DELAY_MAX_MS: '100' },
    { PAYOUTD_BULLMQ_CONCURRENCY: '0' },
    { PAYOUTD_BULLMQ_CONCURRENCY: '1.5' },
    { REDIS_URL: 'http://x' },
    { PAYOUTD_BULLMQ_MAPPING: path.join(dir, 'missing.json') },
  ]) {
    await assert.rejects(configFromEnv(env), (e) => {
      assert.ok(!String(/** @type {Error} */ (e).message).includes(secret), /** @type {Error} */ (e).message);
      return true;
    });
  }
});

test('log lines are JSON with every secret scrubbed, escaped forms too', () => {
  const lines = [];
  const log = jsonLogger({ secrets: ['t0k"en'], write: (l) => lines.push(l) });
  log('info', 'got t0k"en', { nested: { error: 'Bearer t0k"en' } });
  assert.equal(lines.length, 1);
  assert.ok(!lines[0].includes('t0k'), lines[0]);
  assert.equal(JSON.parse(lines[0]).level, 'info');
});

test('the source reference is always a valid header value', () => {
  assert.equal(headerSafe('payouts:payout-job:42:pay'), 'payouts:payout-job:42:pay');
  assert.equal(headerSafe('payouts:jöb\n1'), 'payouts:j%C3%B6b%0A1');
  assert.equal(headerSafe('q:\uD800'), 'q:%EF%BF%BD');
  for (const v of ['payouts:jöb\n1', 'q:\uD800', 'q:\u{1F600}']) new Headers({ 'payoutd-source-ref': headerSafe(v) });
});
