// JSON-lines logging on stdout, with every configured secret scrubbed from every line.

/** @typedef {'debug' | 'info' | 'warn' | 'error'} Level */
/** @typedef {(level: Level, msg: string, fields?: Record<string, unknown>) => void} Logger */

const REDACTED = '[redacted]';

/**
 * Replaces every occurrence of each secret in `text`.
 * @param {string} text
 * @param {readonly string[]} secrets
 * @returns {string}
 */
export function scrub(text, secrets) {
  let out = text;
  for (const s of secrets) {
    if (s) out = out.split(s).join(REDACTED);
  }
  return out;
}

/**
 * A URL as it may be shown: no user name, no password, no query (which may carry a token).
 * @param {string} url
 * @returns {string}
 */
export function displayUrl(url) {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    u.search = '';
    return u.toString();
  } catch {
    return '[unparsable URL]';
  }
}

/**
 * A logger that writes one JSON object per line: `time`, `level`, `msg`, then the fields.
 * The whole line is scrubbed of `secrets` after it is serialised, so a secret cannot slip
 * through in a nested field or an error message.
 * @param {{ secrets?: readonly string[], write?: (line: string) => void, level?: Level }} [options]
 * @returns {Logger}
 */
export function jsonLogger(options = {}) {
  // The raw form and the JSON-escaped form (a token with `"` or `\` in it).
  const secrets = (options.secrets ?? [])
    .filter((s) => s)
    .flatMap((s) => [s, JSON.stringify(s).slice(1, -1)]);
  const write = options.write ?? ((line) => process.stdout.write(line));
  const order = { debug: 0, info: 1, warn: 2, error: 3 };
  const min = order[options.level ?? 'info'];
  return (level, msg, fields = {}) => {
    if (order[level] < min) return;
    const line = JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields });
    write(`${scrub(line, secrets)}\n`);
  };
}
