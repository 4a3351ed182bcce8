// One submission to payoutd's `POST /v1/payouts`, and what its answer means for the job.

/**
 * @typedef {object} PayoutView  payoutd's view of a payout (see payoutd's openapi.json)
 * @property {string} payout_id
 * @property {string} state
 * @property {string | null} [tx_hash]
 */

/**
 * What one submission came to.
 * - `created` (202) and `duplicate` (200): the payout is durable in payoutd; complete the job.
 * - `refused` (400, 409, 413, 415, 422): this request will never be accepted; fail the job
 *   for good (payoutd has recorded a dead letter for it).
 * - `configuration` (401, 403, 404, 405, a redirect, any other 4xx, or a 2xx that is not a
 *   payout): the worker is set up wrong (token, URL); no job can succeed, so stop the worker
 *   and leave the job in the queue.
 * - `transient` (no answer, a timeout, 408, 425, 429, 5xx): send the same request again.
 * @typedef {{ kind: 'created' | 'duplicate', status: number, payout: PayoutView }
 *   | { kind: 'refused' | 'configuration', status: number, code: string, message: string, field?: string }
 *   | { kind: 'transient', status: number | null, code: string, message: string, retryAfterMs?: number }
 * } Answer
 */

/** Statuses that mean "this request is wrong and stays wrong". */
export const REFUSED_STATUSES = Object.freeze([400, 409, 413, 415, 422]);
/** Statuses that mean "not now": the same request may be sent again. */
export const TRANSIENT_STATUSES = Object.freeze([408, 425, 429]);
/** Largest answer read, in bytes (payoutd's answers are far smaller). */
export const ANSWER_BYTES_MAX = 1024 * 1024;

/**
 * @typedef {object} Submission
 * @property {string} url  payoutd's base URL
 * @property {string} [token]  bearer token; only ever put in the Authorization header
 * @property {Record<string, unknown>} body
 * @property {string} source  `Payoutd-Source`
 * @property {string} sourceRef  `Payoutd-Source-Ref`
 * @property {number} requestTimeoutMs
 * @property {AbortSignal} [signal]  aborts the request (shutdown); the promise then rejects
 */

/**
 * Sends one payout request and classifies the answer. Never throws for a network error
 * (that is a `transient` answer); rejects only when `signal` aborts.
 * @param {Submission} s
 * @returns {Promise<Answer>}
 */
export async function submitPayout(s) {
  /** @type {Record<string, string>} */
  const headers = {
    'content-type': 'application/json',
    accept: 'application/json',
    'payoutd-source': s.source,
    'payoutd-source-ref': s.sourceRef,
  };
  if (s.token) headers.authorization = `Bearer ${s.token}`;
  const timeout = AbortSignal.timeout(s.requestTimeoutMs);
  const signal = s.signal ? AbortSignal.any([s.signal, timeout]) : timeout;
  let response;
  let text;
  try {
    response = await fetch(new URL('v1/payouts', withSlash(s.url)), {
      method: 'POST',
      headers,
      body: JSON.stringify(s.body),
      // A redirect is a configuration error, and following one could carry the token away.
      redirect: 'manual',
      signal,
    });
    text = await readText(response);
  } catch (e) {
    if (s.signal?.aborted) throw e;
    const err = /** @type {Error & { cause?: { code?: string } }} */ (e);
    if (timeout.aborted) {
      return { kind: 'transient', status: null, code: 'timeout', message: `no answer within ${s.requestTimeoutMs} ms` };
    }
    // Only the error's code and message: never the request (its headers hold the token).
    const code = err.cause?.code ?? err.name;
    return { kind: 'transient', status: null, code, message: `cannot reach payoutd: ${code}` };
  }
  return classify(response.status, text, response.headers.get('retry-after'));
}

/**
 * @param {number} status
 * @param {string} text  the answer's body
 * @param {string | null} [retryAfter]  the Retry-After header
 * @returns {Answer}
 */
export function classify(status, text, retryAfter = null) {
  const json = parseJson(text);
  if (status === 200 || status === 202) {
    if (json && typeof json.payout_id === 'string' && typeof json.state === 'string') {
      return { kind: status === 202 ? 'created' : 'duplicate', status, payout: /** @type {PayoutView} */ (json) };
    }
    return {
      kind: 'configuration',
      status,
      code: 'not_payoutd',
      message: `PAYOUTD_URL answered ${status} without a payout: is it payoutd's address?`,
    };
  }
  const error = json && typeof json.error === 'object' && json.error !== null ? json.error : {};
  const code = typeof error.code === 'string' ? error.code : `http_${status}`;
  const message = typeof error.message === 'string' ? error.message : `HTTP ${status}`;
  const field = typeof error.field === 'string' ? error.field : undefined;
  if (REFUSED_STATUSES.includes(status)) return { kind: 'refused', status, code, message, field };
  if (status >= 500 || TRANSIENT_STATUSES.includes(status)) {
    const answer = /** @type {Answer} */ ({ kind: 'transient', status, code, message });
    const seconds = retryAfter !== null && /^\d{1,6}$/.test(retryAfter.trim()) ? Number(retryAfter.trim()) : null;
    if (seconds !== null && answer.kind === 'transient') answer.retryAfterMs = seconds * 1000;
    return answer;
  }
  return { kind: 'configuration', status, code, message, field };
}

/**
 * Throws unless `url` is an http(s) URL without credentials (the token goes in a header).
 * @param {string} url
 */
export function checkPayoutdUrl(url) {
  let u;
  try {
    u = new URL(url);
  } catch {
    throw new Error('not a URL');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('an http:// or https:// URL');
  if (u.username || u.password) throw new Error('no credentials in the URL; give the token in PAYOUTD_API_TOKEN');
}

/** @param {string} url */
function withSlash(url) {
  return url.endsWith('/') ? url : `${url}/`;
}

/** @param {string} text */
function parseJson(text) {
  try {
    const v = JSON.parse(text);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

/**
 * The body as text, at most ANSWER_BYTES_MAX bytes of it.
 * @param {Response} response
 */
async function readText(response) {
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > ANSWER_BYTES_MAX) {
      await reader.cancel();
      break;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}
