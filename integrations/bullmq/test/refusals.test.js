// What payoutd refuses fails the job for good, with payoutd's code; a wrong token stops the
// worker without failing anything; the token shows up in no log line and no failure reason.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Job, Queue } from 'bullmq';

import { finished, freePort, payoutd, payoutId, startRedis, startWorker, until } from './harness.js';

const TOKEN = 'tok-3f9a1c2e7b-right';
const WRONG = 'tok-8d04b6e51a-wrong';
const DEST = 'GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2';
const FAST = { PAYOUTD_BULLMQ_RETRY_DELAY_MIN_MS: '50', PAYOUTD_BULLMQ_RETRY_DELAY_MAX_MS: '400' };

/** @type {Awaited<ReturnType<typeof startRedis>>} */
let redis;
/** @type {Awaited<ReturnType<typeof payoutd>>} */
let service;
/** @type {Queue[]} */
const queues = [];

before(async () => {
  redis = await startRedis();
  service = await payoutd({ tokens: [TOKEN] });
  await service.start();
});

after(async () => {
  for (const q of queues) await q.close();
  await service?.remove();
  await redis?.stop();
});

/** @param {string} name */
function queue(name) {
  const q = new Queue(name, { connection: redis.connection });
  queues.push(q);
  return q;
}

/**
 * Awaits a job's end: ['completed', return value] or ['failed', reason, attempts made].
 * @param {Queue} q
 * @param {Job} job
 */
async function outcome(q, job) {
  const [e] = await finished(q, [job]);
  return e.state === 'completed' ? [e.state, e.value] : [e.state, e.reason, e.attemptsMade];
}

/** @param {ReturnType<typeof startWorker>} worker */
function assertNoToken(worker) {
  const text = worker.lines.join('\n');
  assert.ok(text.length > 0);
  for (const t of [TOKEN, WRONG]) assert.ok(!text.includes(t), 'a token appears in the worker log');
}

test('payoutd refusals fail the job for good with payoutd code; the token is never shown', async () => {
  const name = 'payouts-refused';
  const q = queue(name);
  const worker = startWorker({
    REDIS_URL: redis.url,
    PAYOUTD_URL: service.base,
    PAYOUTD_API_TOKEN: TOKEN,
    PAYOUTD_BULLMQ_QUEUE: name,
    ...FAST,
  });
  try {
    const id = payoutId('conflict');
    const good = { payoutId: id, destination: DEST, asset: 'native', amount: '1.5', memo: 'thanks' };
    // attempts: 5 as producers set it: a refusal must not be tried five times.
    const opts = { attempts: 5, backoff: { type: 'fixed', delay: 10 } };
    const jobs = {
      good: await q.add('payout', good, opts),
      badDestination: await q.add('payout', { ...good, payoutId: payoutId('bad-dest'), destination: 'GBPXXOA5N4JYPESHAADMQKBPWZWQDQ64ZV6ZL2S3LAGW4SY7NTCMWIVT' }, opts),
      numericAmount: await q.add('payout', { ...good, payoutId: payoutId('num'), amount: 1.5 }, opts),
      noAmount: await q.add('payout', { payoutId: payoutId('none'), destination: DEST, asset: 'native' }, opts),
    };
    const [state, value] = await outcome(q, jobs.good);
    assert.equal(state, 'completed');
    assert.equal(value.outcome, 'created');
    assert.deepEqual(value.payout.memo, { type: 'text', value: 'thanks' });
    // Same payoutId, another amount: a conflict, after the first one is known.
    const conflict = await q.add('payout', { ...good, amount: '2' }, opts);

    for (const [job, code] of [
      [jobs.badDestination, 'destination_invalid'],
      [jobs.numericAmount, 'field_type'],
      [jobs.noAmount, 'field_missing'],
      [conflict, 'payout_conflict'],
    ]) {
      const [s, reason, attemptsMade] = await outcome(q, /** @type {Job} */ (job));
      assert.equal(s, 'failed', `job ${job.id}`);
      assert.match(reason, new RegExp(`HTTP (400|409|422) ${code}\\b`), reason);
      assert.equal(attemptsMade, 1, `job ${job.id} was tried once, not up to its attempts`);
      assert.ok(!reason.includes(TOKEN));
    }
    const [, numeric] = await outcome(q, jobs.numericAmount);
    assert.match(numeric, /never converts a number into an amount/);
    // The stored payout is the first one, untouched by the conflict.
    const [, view] = await service.get(id, TOKEN);
    assert.equal(view.amount, '1.5');
    await service.waitState(id, 'confirmed', TOKEN);
  } finally {
    assert.equal(await worker.stop(), 0);
  }
  assertNoToken(worker);
  assert.ok(worker.records().some((r) => r.msg.startsWith('payout refused by payoutd')));
});

test('a wrong token stops the worker and fails no job; the right one then pays it', async () => {
  const name = 'payouts-token';
  const q = queue(name);
  const id = payoutId('token');
  const job = await q.add('payout', { payoutId: id, destination: DEST, asset: 'native', amount: '0.25' }, { attempts: 2 });
  const env = { REDIS_URL: redis.url, PAYOUTD_URL: service.base, PAYOUTD_BULLMQ_QUEUE: name, ...FAST };

  const wrong = startWorker({ ...env, PAYOUTD_API_TOKEN: WRONG });
  assert.equal(await wrong.done, 78, 'exit code 78: configuration error');
  const stuck = await Job.fromId(q, /** @type {string} */ (job.id));
  assert.equal(await stuck?.getState(), 'waiting', 'the job is back in the queue, untouched');
  assert.equal(stuck?.attemptsMade, 0);
  assert.ok(wrong.records().some((r) => r.level === 'error' && r.status === 401 && r.code === 'unauthenticated'));
  assertNoToken(wrong);

  const right = startWorker({ ...env, PAYOUTD_API_TOKEN: TOKEN });
  try {
    const [state, value] = await outcome(q, job);
    assert.equal(state, 'completed');
    assert.equal(value.outcome, 'created');
  } finally {
    assert.equal(await right.stop(), 0);
  }
  assertNoToken(right);
});

test('SIGTERM while jobs wait for payoutd puts them back in the queue, untouched', async () => {
  const name = 'payouts-shutdown';
  const q = queue(name);
  const nobody = `http://127.0.0.1:${await freePort()}`;
  const worker = startWorker({ REDIS_URL: redis.url, PAYOUTD_URL: nobody, PAYOUTD_BULLMQ_QUEUE: name, ...FAST });
  const jobs = [];
  for (let n = 0; n < 3; n++) {
    jobs.push(await q.add('payout', { payoutId: payoutId(`term-${n}`), destination: DEST, asset: 'native', amount: '1' }, { attempts: 1 }));
  }
  await until('every job active', async () => (await q.getActiveCount()) === jobs.length);
  assert.equal(await worker.stop('SIGTERM'), 0);
  for (const job of jobs) {
    const j = await Job.fromId(q, /** @type {string} */ (job.id));
    assert.equal(await j?.getState(), 'waiting');
    assert.equal(j?.attemptsMade, 0);
  }
  // A job put back while the worker's last fetch was under way can be taken once more; it
  // is put back at once, without a request.
  const back = new Set(worker.records().filter((r) => r.msg === 'job back in the queue').map((r) => r.job_id));
  assert.deepEqual([...back].sort(), jobs.map((j) => j.id).sort());
});
