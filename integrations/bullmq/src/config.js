// Worker options from environment variables (the CLI's configuration; see README.md).

import { readFile } from 'node:fs/promises';

import { DEFAULT_MAPPING, loadMapping } from './mapping.js';
import { checkPayoutdUrl } from './payoutd.js';
import { DEFAULTS } from './worker.js';

export class ConfigError extends Error {
  name = 'ConfigError';
}

/**
 * Each numeric setting: its variable, option, default and bounds (inclusive).
 * @type {ReadonlyArray<[string, keyof typeof DEFAULTS, number, number]>}
 */
const NUMBERS = [
  ['PAYOUTD_BULLMQ_CONCURRENCY', 'concurrency', 1, 1000],
  ['PAYOUTD_BULLMQ_RETRY_DELAY_MIN_MS', 'retryDelayMinMs', 1, 3_600_000],
  ['PAYOUTD_BULLMQ_RETRY_DELAY_MAX_MS', 'retryDelayMaxMs', 1, 3_600_000],
  ['PAYOUTD_BULLMQ_REQUEST_TIMEOUT_MS', 'requestTimeoutMs', 100, 600_000],
  ['PAYOUTD_BULLMQ_LOCK_DURATION_MS', 'lockDurationMs', 1000, 3_600_000],
  ['PAYOUTD_BULLMQ_STALLED_INTERVAL_MS', 'stalledIntervalMs', 100, 3_600_000],
  ['PAYOUTD_BULLMQ_MAX_STALLED_COUNT', 'maxStalledCount', 0, Number.MAX_SAFE_INTEGER],
];

/**
 * Reads the worker's options from `env`. Errors name the variable, never a secret's value.
 * @param {Record<string, string | undefined>} env
 * @returns {Promise<import('./worker.js').WorkerOptions & { logLevel: import('./log.js').Level }>}
 */
export async function configFromEnv(env) {
  const get = (/** @type {string} */ name) => {
    const v = env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  };
  const redisUrl = get('REDIS_URL') ?? 'redis://127.0.0.1:6379';
  if (!/^rediss?:\/\//.test(redisUrl)) throw new ConfigError('REDIS_URL: a redis:// or rediss:// URL');
  const payoutdUrl = get('PAYOUTD_URL') ?? 'http://127.0.0.1:8080';
  try {
    checkPayoutdUrl(payoutdUrl);
  } catch (e) {
    throw new ConfigError(`PAYOUTD_URL: ${/** @type {Error} */ (e).message}`);
  }

  let payoutdApiToken = env.PAYOUTD_API_TOKEN;
  const tokenFile = get('PAYOUTD_API_TOKEN_FILE');
  if (payoutdApiToken && tokenFile) {
    throw new ConfigError('set PAYOUTD_API_TOKEN or PAYOUTD_API_TOKEN_FILE, not both');
  }
  if (tokenFile) {
    try {
      payoutdApiToken = (await readFile(tokenFile, 'utf8')).trim();
    } catch (e) {
      throw new ConfigError(`PAYOUTD_API_TOKEN_FILE: cannot read ${tokenFile} (${/** @type {NodeJS.ErrnoException} */ (e).code})`);
    }
  }
  payoutdApiToken = payoutdApiToken?.trim() || undefined;
  if (payoutdApiToken && /[^\x21-\x7e]/.test(payoutdApiToken)) {
    throw new ConfigError('PAYOUTD_API_TOKEN: printable ASCII only, no spaces');
  }

  /** @type {Record<string, number>} */
  const numbers = {};
  for (const [name, option, min, max] of NUMBERS) {
    const text = get(name);
    if (text === undefined) {
      numbers[option] = DEFAULTS[option];
      continue;
    }
    const n = /^\d+$/.test(text) ? Number(text) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new ConfigError(`${name}: a whole number from ${min} to ${max}, not ${JSON.stringify(text)}`);
    }
    numbers[option] = n;
  }
  if (numbers.retryDelayMinMs > numbers.retryDelayMaxMs) {
    throw new ConfigError('PAYOUTD_BULLMQ_RETRY_DELAY_MIN_MS is larger than PAYOUTD_BULLMQ_RETRY_DELAY_MAX_MS');
  }
  const mappingPath = get('PAYOUTD_BULLMQ_MAPPING');
  const mapping = mappingPath ? await loadMapping(mappingPath) : DEFAULT_MAPPING;

  const logLevel = get('PAYOUTD_BULLMQ_LOG_LEVEL') ?? 'info';
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel)) {
    throw new ConfigError('PAYOUTD_BULLMQ_LOG_LEVEL: debug, info, warn or error');
  }

  return {
    redisUrl,
    queueName: get('PAYOUTD_BULLMQ_QUEUE') ?? DEFAULTS.queueName,
    prefix: get('PAYOUTD_BULLMQ_PREFIX') ?? DEFAULTS.prefix,
    payoutdUrl,
    payoutdApiToken,
    mapping,
    ...numbers,
    logLevel: /** @type {import('./log.js').Level} */ (logLevel),
  };
}
