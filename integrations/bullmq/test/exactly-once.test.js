// Every job ends in exactly one payment: jobs enqueued once, twice, while payoutd is down,
// and jobs whose worker was killed after payoutd had accepted them.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Queue } from 'bullmq';

import { answerSwallowingProxy, finished, freePort, payoutd, payoutId, startRedis, startWorker, until } from './harness.js';

/** Short timers so that a dead worker's jobs come back within seconds. */
const FAST = {
  PAYOUTD_BULLMQ_RETRY_DELAY_MIN_MS: '50',
  PAYOUTD_BULLMQ_RETRY_DELAY_MAX_MS: '400',
  PAYOUTD_BULLMQ_LOCK_DURATION_MS: '2000',
  PAYOUTD_BULLMQ_STALLED_INTERVAL_MS: '500',
};

/** @type {Awaited<ReturnType<typeof startRedis>>} */
let redis;
/** @type {Awaited<ReturnType<typeof payoutd>>} */
let service;
/** @type {Queue[]} */
const queues = [];

before(async () => {
  redis = await startRedis();
  // Not started yet: the first test starts it after the jobs are waiting.
  service = await payoutd({ port: await freePort() });
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
 * Awaits every job completed; returns their return values.
 * @param {Queue} q
 * @param {import('bullmq').Job[]} jobs
 */
async function allCompleted(q, jobs) {
  const ends = await finished(q, jobs);
  assert.deepEqual(ends.filter((e) => e.state !== 'completed'), [], 'every job completed');
  return ends.map((e) => e.value);
}

/**
 * Each payout confirmed in payoutd, and paid exactly once on the ledger (one payment with its
 * memo to the destination, in the transaction payoutd names).
 * @param {string} destination
 * @param {Array<{ payoutId: string, memo: number }>} payouts
 */
async function paidOnceEach(destination, payouts) {
  for (const p of payouts) await service.waitState(p.payoutId, 'confirmed');
  const payments = await service.payments(destination);
  for (const p of payouts) {
    const [, view] = await service.get(p.payoutId);
    const mine = payments.filter((x) => x.memo === `id:${p.memo}`);
    assert.equal(mine.length, 1, `payout ${p.payoutId}: ${mine.length} payments`);
    assert.equal(mine[0].tx_hash, view.tx_hash);
  }
  assert.equal(payments.length, payouts.length, 'no payment beyond one per payout');
}

test('jobs enqueued once, twice, and while payoutd is down are each paid once', async () => {
  const q = queue('payouts'); // the default queue name
  const worker = startWorker({
    REDIS_URL: redis.url,
    PAYOUTD_URL: service.base, // nothing listens there yet
    ...FAST,
  });
  try {
    const destination = 'GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2';
    const payouts = [1, 2, 3].map((n) => ({ payoutId: payoutId(`down-${n}`), destination, asset: 'native', amount: `1.000000${n}`, memo: 1000 + n }));
    const jobs = [];
    for (const p of payouts) jobs.push(await q.add('payout', p));
    // The second payout enqueued twice: two jobs, same content.
    jobs.push(await q.add('payout', payouts[1]));
    await until('every job active, retrying against a payoutd that is down', async () => {
      const retrying = new Set(
        worker
          .records()
          .filter((r) => r.msg.startsWith('payoutd not reachable'))
          .map((r) => r.job_id),
      );
      return jobs.every((j) => retrying.has(j.id)) && (await q.getActiveCount()) === jobs.length;
    });
    await service.start();
    const results = await allCompleted(q, jobs);
    // Exactly one of the twin jobs created the payout; the other was a duplicate.
    assert.equal(results[0].outcome, 'created');
    assert.equal(results[2].outcome, 'created');
    assert.deepEqual([results[1].outcome, results[3].outcome].sort(), ['created', 'duplicate']);
    for (const r of results) assert.ok([200, 202].includes(r.status));
    assert.equal(results[1].payout.payout_id, payouts[1].payoutId);

    // With payoutd up, the first payout enqueued once more (a producer's retry).
    const [late] = await allCompleted(q, [await q.add('payout', payouts[0])]);
    assert.equal(late.outcome, 'duplicate');
    assert.equal(late.status, 200);
    await paidOnceEach(destination, payouts);
  } finally {
    assert.equal(await worker.stop(), 0, 'the worker stops cleanly on SIGTERM');
  }
});

test('a worker killed after payoutd accepted its jobs loses nothing and pays nothing twice', async () => {
  const name = 'payouts-kill';
  const q = queue(name);
  const destination = await service.newAccount();
  const proxy = await answerSwallowingProxy(service.base);
  const first = startWorker({
    REDIS_URL: redis.url,
    PAYOUTD_URL: proxy.url,
    PAYOUTD_BULLMQ_QUEUE: name,
    PAYOUTD_BULLMQ_CONCURRENCY: '4',
    ...FAST,
  });
  /** @type {ReturnType<typeof startWorker> | null} */
  let second = null;
  try {
    const payouts = [1, 2, 3, 4].map((n) => ({ payoutId: payoutId(`kill-${n}`), destination, asset: 'native', amount: `2.5${n}`, memo: 2000 + n }));
    // attempts: 3 as a producer might set it; re-runs after a crash must not use them up.
    const jobs = [];
    for (const p of payouts) jobs.push(await q.add('payout', p, { attempts: 3 }));
    // payoutd has accepted every payout; the worker never heard back.
    await until('payoutd answered every request (answers held back)', () => proxy.state.forwarded === jobs.length);
    assert.deepEqual(proxy.state.answers, [202, 202, 202, 202]);
    assert.equal(await q.getActiveCount(), jobs.length);
    assert.equal(await first.stop('SIGKILL'), 'SIGKILL');

    // Another worker, straight to payoutd: BullMQ hands it the stalled jobs.
    second = startWorker({ REDIS_URL: redis.url, PAYOUTD_URL: service.base, PAYOUTD_BULLMQ_QUEUE: name, ...FAST });
    const results = await allCompleted(q, jobs);
    assert.deepEqual(
      results.map((r) => r.outcome),
      ['duplicate', 'duplicate', 'duplicate', 'duplicate'],
      'every re-run was answered as a duplicate',
    );
    await paidOnceEach(destination, payouts);
  } finally {
    if (first.child.exitCode === null && first.child.signalCode === null) await first.stop('SIGKILL');
    if (second) assert.equal(await second.stop(), 0);
    await proxy.close();
  }
});
