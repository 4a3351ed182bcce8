#!/usr/bin/env node
// The CLI: configuration from the environment (README.md), JSON-line logs on stdout.
// Exit codes: 0 stopped by SIGTERM/SIGINT, 78 configuration error (bad setting, or payoutd
// refused the worker's token or URL; no job was failed), 1 anything else.

import { configFromEnv, createWorker, jsonLogger } from '../src/index.js';

const EXIT_CONFIG = 78;

async function main() {
  // Before the token is known, scrub the raw variable in case configuration fails on it.
  let log = jsonLogger({ secrets: [process.env.PAYOUTD_API_TOKEN ?? ''] });
  let config;
  try {
    config = await configFromEnv(process.env);
  } catch (e) {
    log('error', 'invalid configuration', { error: /** @type {Error} */ (e).message });
    return EXIT_CONFIG;
  }
  log = jsonLogger({ secrets: [config.payoutdApiToken ?? ''], level: config.logLevel });
  const payouts = createWorker({ ...config, log });
  let signals = 0;
  const onSignal = (/** @type {NodeJS.Signals} */ signal) => {
    signals += 1;
    if (signals > 1) {
      // Safe at any point: an unfinished job is re-run by another worker after its lock expires.
      log('warn', 'second signal: exiting now', { signal });
      process.exit(130);
    }
    log('info', 'stopping: no new jobs; jobs waiting on payoutd go back to the queue', { signal });
    void payouts.close();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  const ended = await payouts.ended;
  return ended.reason === 'configuration' ? EXIT_CONFIG : 0;
}

main().then(
  // Explicit exit: idle keep-alive sockets to payoutd must not hold the process open.
  (code) => process.exit(code),
  (e) => {
    const log = jsonLogger({ secrets: [process.env.PAYOUTD_API_TOKEN ?? ''] });
    log('error', 'worker crashed', { error: String(e?.stack ?? e) });
    process.exit(1);
  },
);
