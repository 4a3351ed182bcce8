// The BullMQ worker: each payout job becomes one request to payoutd, sent again (the same
// request, with backoff) until payoutd answers for good.
//
// Why this cannot pay twice: payoutd is idempotent by payout_id. Whatever BullMQ does with a
// job (retry it, re-run it after a stalled lock, hand it to a second worker after a crash),
// the worst that happens is that payoutd gets the same request again and answers 200
// (duplicate) without paying anything. The worker keeps no state of its own.

import { Worker, UnrecoverableError, WaitingError } from 'bullmq';
import { Redis } from 'ioredis';

import { DEFAULT_MAPPING, mapJob } from './mapping.js';
import { checkPayoutdUrl, submitPayout } from './payoutd.js';
import { displayUrl, jsonLogger, scrub } from './log.js';

/** The `Payoutd-Source` this worker sends: payoutd files its refusals under this name. */
export const SOURCE = 'bullmq';

/**
 * @typedef {object} WorkerOptions
 * @property {string} redisUrl  e.g. redis://127.0.0.1:6379
 * @property {string} [queueName]  the producers' queue (default "payouts")
 * @property {string} [prefix]  BullMQ key prefix (default "bull", BullMQ's own default)
 * @property {string} payoutdUrl  payoutd's base URL, e.g. http://127.0.0.1:8080
 * @property {string} [payoutdApiToken]  bearer token; never logged
 * @property {number} [concurrency]  jobs in flight at once (default 8)
 * @property {import('./mapping.js').Mapping} [mapping]  job data → request (default: the old
 *   system's shape)
 * @property {number} [retryDelayMinMs]  first pause before sending a request again (default 200)
 * @property {number} [retryDelayMaxMs]  longest pause between two sends (default 30000)
 * @property {number} [requestTimeoutMs]  time allowed for one request (default 30000)
 * @property {number} [lockDurationMs]  BullMQ job lock, renewed while a job runs (default 30000)
 * @property {number} [stalledIntervalMs]  how often BullMQ looks for jobs of dead workers
 *   (default 30000)
 * @property {number} [maxStalledCount]  re-runs after a stall before BullMQ fails a job
 *   (default: no practical limit; a re-run is always safe)
 * @property {import('./log.js').Logger} [log]  default: JSON lines on stdout
 */

/**
 * How a worker ended: `closed` (close() was called) or `configuration` (payoutd refused
 * the worker itself: bad token or URL; the jobs are back in the queue, untouched).
 * @typedef {{ reason: 'closed' } | { reason: 'configuration', status: number, code: string, message: string }} Ended
 */

/**
 * @typedef {object} PayoutWorker
 * @property {Worker} worker  the BullMQ worker (for its events)
 * @property {() => Promise<void>} close  graceful stop: no new jobs; jobs waiting for payoutd
 *   go back to the queue; resolves once the worker is closed
 * @property {Promise<Ended>} ended  resolves once the worker has stopped, and why
 */

export const DEFAULTS = Object.freeze({
  queueName: 'payouts',
  prefix: 'bull',
  concurrency: 8,
  retryDelayMinMs: 200,
  retryDelayMaxMs: 30_000,
  requestTimeoutMs: 30_000,
  lockDurationMs: 30_000,
  stalledIntervalMs: 30_000,
  maxStalledCount: Number.MAX_SAFE_INTEGER,
});

/**
 * The pause before send number `attempt + 1` (attempt counts from 1): doubling from
 * `minMs`, capped at `maxMs`, with jitter over the upper half so that many jobs waiting
 * for the same payoutd do not come back in step. A Retry-After from payoutd is honoured
 * within the same bounds.
 * @param {number} attempt
 * @param {{ retryDelayMinMs: number, retryDelayMaxMs: number }} bounds
 * @param {number} [retryAfterMs]
 * @param {() => number} [random]
 * @returns {number}
 */
export function retryDelayMs(attempt, bounds, retryAfterMs, random = Math.random) {
  const { retryDelayMinMs: min, retryDelayMaxMs: max } = bounds;
  if (retryAfterMs !== undefined) return Math.min(max, Math.max(min, retryAfterMs));
  const cap = Math.min(max, min * 2 ** Math.min(attempt - 1, 40));
  return Math.max(min, Math.round(cap / 2 + random() * (cap / 2)));
}

/**
 * Starts a worker on the producers' queue.
 * @param {WorkerOptions} options
 * @returns {PayoutWorker}
 */
export function createWorker(options) {
  const o = { ...DEFAULTS, mapping: DEFAULT_MAPPING, ...definedOnly(options) };
  checkPayoutdUrl(o.payoutdUrl);
  if (!(o.retryDelayMinMs >= 1 && o.retryDelayMinMs <= o.retryDelayMaxMs)) {
    throw new Error('retryDelayMinMs must be at least 1 and at most retryDelayMaxMs');
  }
  if (o.payoutdApiToken !== undefined && !/^[\x21-\x7e]+$/.test(o.payoutdApiToken)) {
    // fetch would refuse the header on every send, and the jobs would wait for ever.
    throw new Error('payoutdApiToken: printable ASCII only, no spaces');
  }
  const secrets = [o.payoutdApiToken ?? ''];
  const log = o.log ?? jsonLogger({ secrets });
  // Shutdown: aborts every pause between sends and every request in flight.
  const closing = new AbortController();
  /** @type {(e: Ended) => void} */
  let end = () => {};
  /** @type {Promise<Ended>} */
  const ended = new Promise((resolve) => {
    end = resolve;
  });
  /** @type {Ended} */
  let why = { reason: 'closed' };

  const connection = new Redis(o.redisUrl, { maxRetriesPerRequest: null });
  connection.on('error', (e) => log('warn', 'redis connection error', { error: scrub(String(e.message), secrets) }));

  /**
   * @param {import('bullmq').Job} job
   * @param {string | undefined} token
   * @param {AbortSignal | undefined} cancelled  BullMQ's per-job cancellation
   */
  const processor = async (job, token, cancelled) => {
    const { body, notes } = mapJob(job.data, o.mapping);
    const sourceRef = headerSafe(`${o.queueName}:${job.id}`);
    const stop = cancelled ? AbortSignal.any([closing.signal, cancelled]) : closing.signal;
    const fields = { queue: o.queueName, job_id: job.id, payout_id: body.payout_id };
    for (let attempt = 1; ; attempt++) {
      // A job taken while the worker closes (its last fetch was under way) goes straight back.
      if (stop.aborted) return backToQueue(job, token, 'the worker is stopping');
      let answer;
      try {
        answer = await submitPayout({
          url: o.payoutdUrl,
          token: o.payoutdApiToken,
          body,
          source: SOURCE,
          sourceRef,
          requestTimeoutMs: o.requestTimeoutMs,
          signal: stop,
        });
      } catch (e) {
        // submitPayout rejects only when `stop` aborted the request.
        if (stop.aborted) return backToQueue(job, token, 'the worker is stopping');
        throw e;
      }
      switch (answer.kind) {
        case 'created':
        case 'duplicate': {
          const payout = answer.payout;
          log('info', 'payout handed to payoutd', {
            ...fields,
            outcome: answer.kind,
            status: answer.status,
            state: payout.state,
            tx_hash: payout.tx_hash ?? null,
            attempts: attempt,
          });
          return { outcome: answer.kind, status: answer.status, payout };
        }
        case 'refused': {
          const field = answer.field ? `, field ${answer.field}` : '';
          const hint = notes.length ? ` (${notes.join('; ')})` : '';
          const reason = scrub(
            `payoutd refused the payout: HTTP ${answer.status} ${answer.code}${field}: ${answer.message}${hint}`,
            secrets,
          );
          log('warn', 'payout refused by payoutd; job failed', { ...fields, status: answer.status, code: answer.code, reason });
          throw Object.assign(new UnrecoverableError(reason), { logged: true });
        }
        case 'configuration': {
          stopForConfiguration(answer);
          return backToQueue(job, token, `payoutd refused the worker (HTTP ${answer.status} ${answer.code})`);
        }
        case 'transient': {
          const delayMs = retryDelayMs(attempt, o, answer.retryAfterMs);
          log(attempt === 1 ? 'warn' : 'info', 'payoutd not reachable or busy; sending the same request again', {
            ...fields,
            status: answer.status,
            code: answer.code,
            attempt,
            delay_ms: delayMs,
          });
          if (!(await pause(delayMs, stop))) return backToQueue(job, token, 'the worker is stopping');
          break;
        }
        default:
          throw new Error(`unexpected answer ${JSON.stringify(answer)}`);
      }
    }
  };

  /**
   * Puts an unfinished job back in the queue, untouched: not failed, no attempt used. A
   * later run sends the same request; payoutd answers it as a duplicate if the first one
   * got through.
   * @param {import('bullmq').Job} job
   * @param {string | undefined} token
   * @param {string} why
   */
  async function backToQueue(job, token, why) {
    try {
      await job.moveToWait(token);
      log('info', 'job back in the queue', { queue: o.queueName, job_id: job.id, why });
    } catch (e) {
      // The lock then lapses and BullMQ's stalled-job check hands the job out again.
      log('warn', 'could not put the job back; it will be re-run after its lock expires', {
        queue: o.queueName,
        job_id: job.id,
        error: scrub(String(/** @type {Error} */ (e).message), secrets),
      });
    }
    throw new WaitingError();
  }

  /** @param {{ status: number, code: string, message: string }} answer */
  function stopForConfiguration(answer) {
    if (why.reason === 'configuration') return;
    why = { reason: 'configuration', status: answer.status, code: answer.code, message: scrub(answer.message, secrets) };
    log('error', 'payoutd refused this worker: check PAYOUTD_API_TOKEN and PAYOUTD_URL; stopping (jobs stay in the queue)', {
      status: answer.status,
      code: answer.code,
      message: why.message,
      payoutd_url: displayUrl(o.payoutdUrl),
    });
    // Not awaited: close() waits for the running jobs, this one among them.
    void close();
  }

  const worker = new Worker(o.queueName, processor, {
    connection,
    prefix: o.prefix,
    concurrency: o.concurrency,
    lockDuration: o.lockDurationMs,
    stalledInterval: o.stalledIntervalMs,
    maxStalledCount: o.maxStalledCount,
    autorun: true,
  });
  worker.on('error', (e) => log('error', 'worker error', { error: scrub(String(e?.message ?? e), secrets) }));
  worker.on('failed', (job, e) => {
    // Refusals are logged where they happen, with payoutd's code; this is for the rest.
    if (job && !(/** @type {{ logged?: boolean }} */ (e).logged)) {
      log('error', 'job failed', { queue: o.queueName, job_id: job.id, reason: scrub(e.message, secrets) });
    }
  });
  worker.on('stalled', (jobId) => log('warn', 'job stalled (its worker died); it runs again', { queue: o.queueName, job_id: jobId }));

  /** @type {Promise<void> | null} */
  let closed = null;
  function close() {
    if (!closed) {
      // Stop fetching first, then release the jobs waiting on payoutd.
      const done = worker.close();
      closing.abort();
      closed = done
        .catch((e) => log('error', 'error while closing the worker', { error: scrub(String(e?.message ?? e), secrets) }))
        .then(() => connection.quit().catch(() => connection.disconnect()))
        .then(() => {
          log('info', 'worker stopped', { queue: o.queueName, reason: why.reason });
          end(why);
        });
    }
    return closed;
  }

  log('info', 'worker started', {
    queue: o.queueName,
    prefix: o.prefix,
    redis: displayUrl(o.redisUrl),
    payoutd_url: displayUrl(o.payoutdUrl),
    concurrency: o.concurrency,
    authenticated: Boolean(o.payoutdApiToken),
  });
  return { worker, close, ended };
}

/**
 * Text as a header value can carry it: printable ASCII as it is, anything else
 * percent-encoded (a custom job id may hold any character; fetch refuses such a header,
 * and the job would never get through).
 * @param {string} text
 */
export function headerSafe(text) {
  return text.replace(/[^\x20-\x7e]/gu, (c) => {
    try {
      return encodeURIComponent(c);
    } catch {
      return '%EF%BF%BD'; // a lone surrogate: U+FFFD
    }
  });
}

/**
 * Waits `ms`; false if `signal` aborted first.
 * @param {number} ms
 * @param {AbortSignal} signal
 * @returns {Promise<boolean>}
 */
function pause(ms, signal) {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * @template {object} T
 * @param {T} obj
 * @returns {Partial<T>}
 */
function definedOnly(obj) {
  return /** @type {Partial<T>} */ (Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined)));
}
