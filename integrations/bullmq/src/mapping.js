// From a BullMQ job's data to the body of payoutd's `POST /v1/payouts`.
//
// The worker is not a second validator: payoutd checks every field and refuses what is
// wrong (and records a dead letter for it). The mapping only moves values, converts the few
// that can be converted exactly (a whole-number payout id or memo id), and passes anything
// else through unchanged, so that payoutd refuses it with its own code. Amounts are never
// parsed, rounded or converted: a string goes through as it is, a number is refused.

import { readFile } from 'node:fs/promises';

/** @typedef {'payout_id' | 'destination' | 'asset' | 'amount' | 'memo'} RequestField */

/**
 * @typedef {object} Mapping
 * @property {Record<RequestField, string | null>} fields  job data path (dots for nesting)
 *   that feeds each request field; null: never read from the job
 * @property {Partial<Record<RequestField, unknown>>} defaults  used when the job has no
 *   value (absent or null) at the field's path
 * @property {{ string: 'text' | 'hash' | 'id', number: 'id' | 'text' }} memo  the memo type
 *   a bare string and a bare number become
 */

/** @type {readonly RequestField[]} */
export const REQUEST_FIELDS = ['payout_id', 'destination', 'asset', 'amount', 'memo'];

/**
 * The old system's job shape: `{ payoutId, destination, asset, amount, memo }`.
 * @type {Mapping}
 */
export const DEFAULT_MAPPING = Object.freeze({
  fields: Object.freeze({
    payout_id: 'payoutId',
    destination: 'destination',
    asset: 'asset',
    amount: 'amount',
    memo: 'memo',
  }),
  defaults: Object.freeze({}),
  memo: Object.freeze({ string: 'text', number: 'id' }),
});

const MEMO_STRING_TYPES = ['text', 'hash', 'id'];
const MEMO_NUMBER_TYPES = ['id', 'text'];

export class MappingError extends Error {
  name = 'MappingError';
}

/**
 * Checks a mapping given as parsed JSON and fills in what it leaves out from the default.
 * Unknown keys are refused, so a typo does not silently fall back to the default.
 * @param {unknown} given
 * @returns {Mapping}
 */
export function parseMapping(given) {
  if (!isPlainObject(given)) throw new MappingError('the mapping must be a JSON object');
  for (const key of Object.keys(given)) {
    if (!['fields', 'defaults', 'memo'].includes(key)) {
      throw new MappingError(`unknown key "${key}" (expected fields, defaults, memo)`);
    }
  }
  const fields = { ...DEFAULT_MAPPING.fields };
  for (const [field, path] of Object.entries(objectAt(given, 'fields'))) {
    if (!isRequestField(field)) throw new MappingError(`fields: unknown request field "${field}"`);
    if (path !== null && (typeof path !== 'string' || path === '' || path.split('.').includes(''))) {
      throw new MappingError(`fields.${field}: a job data path like "payoutId" or "payout.id", or null`);
    }
    fields[field] = path;
  }
  /** @type {Partial<Record<RequestField, unknown>>} */
  const defaults = {};
  for (const [field, value] of Object.entries(objectAt(given, 'defaults'))) {
    if (!isRequestField(field)) throw new MappingError(`defaults: unknown request field "${field}"`);
    const ok = field === 'memo' ? isPlainObject(value) : typeof value === 'string';
    if (!ok) {
      throw new MappingError(`defaults.${field}: ${field === 'memo' ? 'a memo object {"type", "value"}' : 'a string'}`);
    }
    defaults[field] = value;
  }
  const memo = { ...DEFAULT_MAPPING.memo };
  for (const [kind, type] of Object.entries(objectAt(given, 'memo'))) {
    const allowed = kind === 'string' ? MEMO_STRING_TYPES : kind === 'number' ? MEMO_NUMBER_TYPES : null;
    if (!allowed) throw new MappingError(`memo: unknown key "${kind}" (expected string, number)`);
    if (!allowed.includes(/** @type {string} */ (type))) {
      throw new MappingError(`memo.${kind}: one of ${allowed.join(', ')}`);
    }
    memo[/** @type {'string' | 'number'} */ (kind)] = type;
  }
  return { fields, defaults, memo: /** @type {Mapping['memo']} */ (memo) };
}

/**
 * Reads and checks a mapping file (JSON).
 * @param {string} path
 * @returns {Promise<Mapping>}
 */
export async function loadMapping(path) {
  let text;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new MappingError(`cannot read the mapping file ${path}: ${/** @type {Error} */ (e).message}`);
  }
  let json;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new MappingError(`the mapping file ${path} is not JSON: ${/** @type {Error} */ (e).message}`);
  }
  try {
    return parseMapping(json);
  } catch (e) {
    throw new MappingError(`the mapping file ${path}: ${/** @type {Error} */ (e).message}`);
  }
}

/**
 * @typedef {object} Mapped
 * @property {Record<string, unknown>} body  the request body (fields without a value are left
 *   out, and payoutd names the first one missing)
 * @property {string[]} notes  why a value was passed through unconverted, for the failure
 *   reason if payoutd refuses it
 */

/**
 * Builds the request body for one job's data.
 * @param {unknown} data  the job's data
 * @param {Mapping} [mapping]
 * @returns {Mapped}
 */
export function mapJob(data, mapping = DEFAULT_MAPPING) {
  /** @type {Record<string, unknown>} */
  const body = {};
  /** @type {string[]} */
  const notes = [];
  for (const field of REQUEST_FIELDS) {
    const path = mapping.fields[field];
    let value = path === null ? undefined : valueAt(data, path);
    if (value === undefined || value === null) value = mapping.defaults[field];
    if (value === undefined || value === null) continue;
    const where = path ?? `defaults.${field}`;
    switch (field) {
      case 'amount':
        if (typeof value === 'number') {
          notes.push(
            `job field "${where}" is a JSON number (${value}); amounts must be decimal strings ` +
              'and this worker never converts a number into an amount',
          );
        }
        break;
      case 'payout_id':
        if (typeof value === 'number') value = exactInteger(value, where, notes);
        break;
      case 'memo':
        value = memoOf(value, mapping.memo, where, notes);
        break;
      default:
        break;
    }
    body[field] = value;
  }
  return { body, notes };
}

/**
 * The memo object for a job's memo value.
 * @param {unknown} value
 * @param {Mapping['memo']} types
 * @param {string} where
 * @param {string[]} notes
 */
function memoOf(value, types, where, notes) {
  if (typeof value === 'string') return { type: types.string, value };
  if (typeof value === 'number') return { type: types.number, value: exactInteger(value, where, notes) };
  if (isPlainObject(value) && typeof value.value === 'number') {
    return { ...value, value: exactInteger(value.value, `${where}.value`, notes) };
  }
  return value;
}

/**
 * A whole number that JavaScript holds exactly, as its decimal string; any other number is
 * returned as it is (payoutd refuses a number where it wants a string), with a note.
 * @param {number} n
 * @param {string} where
 * @param {string[]} notes
 * @returns {string | number}
 */
function exactInteger(n, where, notes) {
  if (Number.isSafeInteger(n) && n >= 0) return String(n);
  notes.push(
    `job field "${where}" is the number ${n}, which is not a whole number JavaScript holds ` +
      `exactly (0 to ${Number.MAX_SAFE_INTEGER}); send it as a string`,
  );
  return n;
}

/**
 * The value at a dotted path, through own properties only.
 * @param {unknown} data
 * @param {string} path
 * @returns {unknown}
 */
function valueAt(data, path) {
  let here = data;
  for (const key of path.split('.')) {
    if (!isPlainObject(here) || !Object.hasOwn(here, key)) return undefined;
    here = here[key];
  }
  return here;
}

/**
 * @param {unknown} v
 * @returns {v is Record<string, unknown>}
 */
function isPlainObject(v) {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * @param {string} f
 * @returns {f is RequestField}
 */
function isRequestField(f) {
  return /** @type {readonly string[]} */ (REQUEST_FIELDS).includes(f);
}

/**
 * @param {Record<string, unknown>} obj
 * @param {string} key
 * @returns {Record<string, unknown>}
 */
function objectAt(obj, key) {
  const v = obj[key];
  if (v === undefined) return {};
  if (!isPlainObject(v)) throw new MappingError(`${key}: must be an object`);
  return v;
}
