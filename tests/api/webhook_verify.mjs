// The receiver's check of a payoutd webhook signature, as docs/webhooks.md shows it.
//
// Run by tests/api/webhooks.rs with WEBHOOK_SECRET, WEBHOOK_SIGNATURE (the
// Payoutd-Signature header) and WEBHOOK_BODY (the raw body); exits 0 when it verifies.
import { createHmac, timingSafeEqual } from "node:crypto";

const TOLERANCE_S = 300; // refuse signatures older than five minutes (replays)

export function verify(secret, header, rawBody, nowSeconds) {
  const parts = header.split(",").map((p) => p.trim().split("="));
  const t = parts.filter(([k]) => k === "t").map(([, v]) => v);
  const v1 = parts.filter(([k]) => k === "v1").map(([, v]) => v);
  if (t.length !== 1 || !/^\d+$/.test(t[0])) return false;
  if (Math.abs(nowSeconds - Number(t[0])) > TOLERANCE_S) return false;
  const expected = createHmac("sha256", secret).update(`${t[0]}.`).update(rawBody).digest();
  return v1.some((s) => {
    const given = Buffer.from(s, "hex");
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

const ok = verify(
  process.env.WEBHOOK_SECRET,
  process.env.WEBHOOK_SIGNATURE,
  Buffer.from(process.env.WEBHOOK_BODY, "utf8"),
  Date.now() / 1000,
);
process.exit(ok ? 0 : 1);
