// Real parts for the tests: a redis-server and a payoutd (with its private PostgreSQL and
// built-in ledger simulator) per test file, worker processes, and a few helpers. Nothing is
// mocked. A missing redis-server or payoutd binary fails the test and says how to get it.

import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants, chmodSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Job } from 'bullmq';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const PACKAGE_DIR = path.resolve(HERE, '..');
const WORKER_BIN = path.join(PACKAGE_DIR, 'bin', 'payoutd-bullmq-worker.js');

/** Every child started here, killed if the test process exits early. */
const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/**
 * Awaits `cond` (polled every `everyMs`), failing with `what` after `timeoutMs`.
 * @template T
 * @param {string} what
 * @param {() => Promise<T> | T} cond  a truthy value ends the wait and is returned
 * @param {{ timeoutMs?: number, everyMs?: number }} [o]
 * @returns {Promise<T>}
 */
export async function until(what, cond, { timeoutMs = 20_000, everyMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what} (last: ${String(last)})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Awaits the end of every job (completed or failed) and returns what each ended with.
 * @param {import('bullmq').Queue} q
 * @param {Array<{ id?: string }>} jobs
 * @param {number} [timeoutMs]
 */
export async function finished(q, jobs, timeoutMs = 30_000) {
  return until(
    `${jobs.length} job(s) finished`,
    async () => {
      // The states first: a job read before it ends has no return value or reason yet.
      const states = await Promise.all(jobs.map((j) => q.getJobState(/** @type {string} */ (j.id))));
      if (!states.every((s) => s === 'completed' || s === 'failed')) return null;
      const read = await Promise.all(jobs.map((j) => Job.fromId(q, /** @type {string} */ (j.id))));
      return read.map((j, i) => ({
        state: states[i],
        value: j?.returnvalue,
        reason: j?.failedReason,
        attemptsMade: j?.attemptsMade,
      }));
    },
    { timeoutMs },
  );
}

/** A TCP port free right now on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (s.address());
      s.close(() => resolve(port));
    });
  });
}

/** A temp folder the `postgres` user can reach too (payoutd runs PostgreSQL as it under root). */
export function tempDir(tag) {
  const dir = mkdtempSync(path.join(tmpdir(), `payoutd-bullmq-${tag}-`));
  chmodSync(dir, 0o755);
  return dir;
}

/**
 * Resolves when `child` exits, with its exit code (or signal name).
 * @param {import('node:child_process').ChildProcess} child
 * @returns {Promise<number | string>}
 */
function exited(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode ?? child.signalCode ?? -1);
    child.once('exit', (code, signal) => resolve(code ?? signal ?? -1));
  });
}

/**
 * Collects a child's output lines (stdout and stderr) into `lines`.
 * @param {import('node:child_process').ChildProcess} child
 * @param {string[]} lines
 */
function collect(child, lines) {
  for (const stream of [child.stdout, child.stderr]) {
    let rest = '';
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk) => {
      rest += chunk;
      const parts = rest.split('\n');
      rest = parts.pop() ?? '';
      lines.push(...parts);
    });
  }
}

/** Starts a redis-server on a free port with a temp dir and no persistence. */
export async function startRedis() {
  const bin = process.env.PAYOUTD_REDIS_SERVER || 'redis-server';
  const probe = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    throw new Error(
      `redis-server not found (${bin}): install it with \`apt-get install -y redis-server\` ` +
        '(scripts/test does this), or point PAYOUTD_REDIS_SERVER at the binary',
    );
  }
  const port = await freePort();
  const dir = tempDir('redis');
  const child = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const lines = [];
  collect(child, lines);
  await until('redis-server ready', () => {
    if (child.exitCode !== null) throw new Error(`redis-server exited: ${lines.join('\n')}`);
    return lines.some((l) => l.includes('Ready to accept connections'));
  });
  return {
    url: `redis://127.0.0.1:${port}`,
    connection: { host: '127.0.0.1', port },
    async stop() {
      child.kill('SIGTERM');
      await exited(child);
      children.delete(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The payoutd binary: PAYOUTD_BIN, else the workspace's debug build. */
export function payoutdBin() {
  const bin = process.env.PAYOUTD_BIN || path.resolve(PACKAGE_DIR, '../../target/debug/payoutd');
  try {
    accessSync(bin, constants.X_OK);
  } catch {
    throw new Error(
      `no payoutd binary at ${bin}: build it with \`cargo build\` at the repository root ` +
        '(scripts/test builds it and sets PAYOUTD_BIN), or point PAYOUTD_BIN at one',
    );
  }
  return bin;
}

/**
 * A payoutd on `port` with its own data folder (kept across stop/start of the same handle).
 * @param {{ port?: number, tokens?: string[], env?: Record<string, string> }} [o]  env: more settings
 */
export async function payoutd(o = {}) {
  const bin = payoutdBin();
  const port = o.port ?? (await freePort());
  const dir = tempDir('payoutd');
  const base = `http://127.0.0.1:${port}`;
  /** @type {import('node:child_process').ChildProcess | null} */
  let child = null;
  /** @type {string[]} */
  const lines = [];
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PAYOUTD_')));
  Object.assign(env, {
    PAYOUTD__SERVER__LISTEN: `127.0.0.1:${port}`,
    PAYOUTD__DATABASE__LOCAL_DATA_DIR: path.join(dir, 'pg'),
    PAYOUTD__LEDGER__SIMULATOR__STATE_FILE: path.join(dir, 'simulator.json'),
    PAYOUTD__LEDGER__SIMULATOR__CLOSE_INTERVAL_MS: '200',
    PAYOUTD__PAYOUTS__POLL_INTERVAL_MS: '50',
    PAYOUTD__PAYOUTS__BATCH_LINGER_MS: '10',
    PAYOUTD__TELEMETRY__LOG_FORMAT: 'json',
  });
  if (o.tokens) env.PAYOUTD__SERVER__API_TOKENS = o.tokens.join(',');
  Object.assign(env, o.env ?? {});
  const handle = {
    base,
    port,
    lines,
    /** The simulator's URL (from payoutd's start-up log). */
    simulator: '',
    async start() {
      child = spawn(bin, ['serve'], { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
      children.add(child);
      collect(child, lines);
      const c = child;
      handle.simulator = await until('payoutd prints its simulator URL', () => {
        if (c.exitCode !== null) throw new Error(`payoutd exited (${c.exitCode}):\n${lines.join('\n')}`);
        const line = lines.find((l) => l.includes('built-in ledger simulator listening'));
        return line ? JSON.parse(line).url : null;
      });
      await until('payoutd ready', async () => (await fetch(`${base}/readyz`)).ok, { everyMs: 50 });
    },
    async stop() {
      if (!child) return;
      child.kill('SIGTERM');
      await exited(child);
      children.delete(child);
      child = null;
    },
    async remove() {
      await handle.stop();
      rmSync(dir, { recursive: true, force: true });
    },
    /** GET /v1/payouts/{id}: [status, body]. */
    async get(id, token) {
      const r = await fetch(`${base}/v1/payouts/${encodeURIComponent(id)}`, {
        headers: token ? { authorization: `Bearer ${token}` } : {},
      });
      return [r.status, await r.json()];
    },
    /** Awaits a payout's state. */
    async waitState(id, state, token) {
      return until(`payout ${id} ${state}`, async () => {
        const [status, body] = await handle.get(id, token);
        return status === 200 && body.state === state ? body : null;
      });
    },
    /** Creates and funds a new account on the simulator; returns its G… id. */
    async newAccount() {
      const account = accountId(randomBytes(32));
      const r = await fetch(`${handle.simulator}/friendbot?addr=${account}`);
      if (!r.ok) throw new Error(`friendbot: ${r.status} ${await r.text()}`);
      return account;
    },
    /** Payments the simulator applied to `destination`. */
    async payments(destination) {
      const r = await fetch(`${handle.simulator}/sim/payments?destination=${destination}`);
      return /** @type {{ payments: Array<{ tx_hash: string, memo: string | null, amount_stroops: number }> }} */ (await r.json())
        .payments;
    },
  };
  return handle;
}

/**
 * A worker process (the CLI) with `env` on top of a clean environment.
 * @param {Record<string, string>} env
 */
export function startWorker(env) {
  const base = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('PAYOUTD_') && k !== 'REDIS_URL'),
  );
  const child = spawn(process.execPath, [WORKER_BIN], { env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  /** @type {string[]} */
  const lines = [];
  collect(child, lines);
  const done = exited(child).then((code) => {
    children.delete(child);
    return code;
  });
  return {
    child,
    lines,
    done,
    /** The log lines parsed (every stdout line must be JSON). */
    records: () => lines.filter((l) => l.trim()).map((l) => JSON.parse(l)),
    async stop(signal = 'SIGTERM') {
      child.kill(signal);
      return done;
    },
  };
}

/**
 * An HTTP proxy in front of payoutd that forwards each request and, while `hold` is on,
 * keeps payoutd's answer from the client: the request has reached payoutd (and the payout
 * exists there), but the worker never hears back. The crash the old design could not take.
 * @param {string} target  payoutd's base URL
 */
export async function answerSwallowingProxy(target) {
  const state = { hold: true, forwarded: 0, answers: /** @type {number[]} */ ([]) };
  const sockets = new Set();
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const headers = { ...req.headers };
    delete headers.host;
    delete headers.connection;
    delete headers['content-length'];
    const answer = await fetch(`${target}${req.url}`, { method: req.method, headers, body: Buffer.concat(chunks) });
    const body = await answer.text();
    state.forwarded += 1;
    state.answers.push(answer.status);
    if (state.hold) return; // never answered
    res.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/json' });
    res.end(body);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', () => r(undefined)));
  const { port } = /** @type {net.AddressInfo} */ (server.address());
  return {
    url: `http://127.0.0.1:${port}`,
    state,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(() => r(undefined)));
    },
  };
}

/**
 * A Stellar account id (G…) for 32 public-key bytes: StrKey, version byte 6 << 3, payload,
 * CRC16-XModem little-endian, base32 without padding.
 * @param {Buffer} key
 */
export function accountId(key) {
  const data = Buffer.concat([Buffer.from([6 << 3]), key]);
  let crc = 0;
  for (const byte of data) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  const all = Buffer.concat([data, Buffer.from([crc & 0xff, crc >> 8])]);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of all) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

/** A payout id unique to this run. */
export function payoutId(label) {
  return `bq-${label}-${createHash('sha256').update(randomBytes(8)).digest('hex').slice(0, 10)}`;
}
