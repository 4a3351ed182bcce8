// payoutd-bullmq-worker: a BullMQ worker that hands payout jobs to payoutd.

export { createWorker, headerSafe, retryDelayMs, DEFAULTS, SOURCE } from './worker.js';
export { DEFAULT_MAPPING, MappingError, REQUEST_FIELDS, loadMapping, mapJob, parseMapping } from './mapping.js';
export { classify, submitPayout, REFUSED_STATUSES, TRANSIENT_STATUSES } from './payoutd.js';
export { ConfigError, configFromEnv } from './config.js';
export { jsonLogger } from './log.js';
