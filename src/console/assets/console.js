// The payoutd operator console (docs/console.md). Plain JavaScript, no build step, no
// dependency. It renders what the JSON API answers, with the operator's token, and puts
// every value into the page as text (never as markup): see `el`.
"use strict";

const POLL_MS = 2000;

// ---- building the page, safely --------------------------------------------------------

/** An element with attributes and children; strings become text nodes, never markup. */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** Replaces the children of `target` (absent ones, null or false, are left out). */
function put(target, ...children) {
  target.replaceChildren(...children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
}

const payoutLink = (id) => el("a", { href: "#/payout/" + encodeURIComponent(id), "data-testid": "payout-link" }, id);
const stateTag = (s) => el("span", { class: "state " + s, "data-testid": "state" }, s);
const ms = (n) => (n >= 60000 ? Math.round(n / 60000) + " min" : Math.round(n / 1000) + " s");

function flash(text, kind) {
  const f = document.getElementById("flash");
  f.textContent = text || "";
  f.className = kind === "info" ? "info" : "";
  f.hidden = !text;
}

// ---- the API --------------------------------------------------------------------------

const tokens = {
  get api() { return sessionStorage.getItem("payoutd.token") || ""; },
  get admin() { return sessionStorage.getItem("payoutd.adminToken") || ""; },
};

/** Calls the API; resolves to the JSON body of a 2xx, throws an Error with the API's message otherwise. */
async function api(path, { method = "GET", body, admin = false } = {}) {
  const headers = {};
  const token = admin ? tokens.admin || tokens.api : tokens.api;
  if (token) headers.authorization = "Bearer " + token;
  if (body !== undefined) headers["content-type"] = "application/json";
  let r;
  try {
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new Error("payoutd cannot be reached: " + e.message);
  }
  const json = await r.json().catch(() => null);
  if (!r.ok) {
    const err = (json && json.error) || {};
    const hint = r.status === 401 ? " (enter a token above)" : r.status === 403 ? " (this needs an admin token)" : "";
    const e = new Error((err.code ? err.code + ": " : "HTTP " + r.status + ": ") + (err.message || r.statusText) + hint);
    e.status = r.status;
    throw e;
  }
  return json;
}

// ---- views ----------------------------------------------------------------------------

const views = { overview, payouts, payout, progress, webhooks };

/** The view under way: stopped when the operator goes elsewhere. */
let current = { stop() {} };

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const [name, ...rest] = path.split("/");
  let arg = "";
  try {
    arg = decodeURIComponent(rest.join("/"));
  } catch {
    arg = rest.join("/");
  }
  const view = name === "" ? "overview" : name;
  current.stop();
  flash("");
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.view === (view === "payout" ? "payouts" : view));
  }
  const main = document.getElementById("main");
  put(main);
  const fn = views[view];
  if (!fn) {
    main.append(el("p", {}, "No such page."));
    current = { stop() {} };
    return;
  }
  current = fn(main, params, arg);
}

/** Runs `draw` now and every POLL_MS until stopped; errors are shown, not thrown. */
function polling(draw) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    try {
      await draw();
    } catch (e) {
      flash(e.message);
    }
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  };
  tick();
  return { stop() { stopped = true; clearTimeout(timer); } };
}

function overview(main) {
  const body = el("div", { "data-testid": "overview" });
  main.append(el("h2", {}, "Overview"), body);
  return polling(async () => {
    const o = await api("/v1/overview");
    const perMinute = o.confirmed_per_minute;
    const peak = Math.max(1, ...perMinute.map((m) => m.payouts));
    const last = perMinute.length ? perMinute[perMinute.length - 1].payouts : 0;
    const bars = perMinute.map((m) => {
      const b = el("div", { class: "bar", title: m.minute + ": " + m.payouts });
      b.style.height = Math.round((m.payouts / peak) * 100) + "%";
      return b;
    });
    const ch = o.channels;
    put(body, 
      o.paused
        ? el("div", { class: "banner paused", "data-testid": "paused" }, "Paying is PAUSED by ", o.pause.by, ": ", o.pause.reason)
        : el("div", { class: "banner running", "data-testid": "paused" }, "Paying: running"),
      el("h2", {}, "Payouts by state (" + o.total + ")"),
      el("div", { class: "cards" }, Object.entries(o.counts).map(([s, n]) =>
        el("a", { class: "card", href: "#/payouts?state=" + s, "data-testid": "count-" + s },
          el("span", { class: "n" }, n), el("span", { class: "label" }, s)))),
      el("h2", {}, "Confirmed per minute, last " + perMinute.length + " minutes"),
      el("div", { class: "bars" }, bars),
      el("p", { "data-testid": "rate" }, "This minute so far: " + last + " payouts (" + (last / 60).toFixed(1) + "/s over a full minute)"),
      el("h2", {}, "Oldest unfinished payout"),
      o.oldest_unfinished
        ? el("p", { "data-testid": "oldest" }, payoutLink(o.oldest_unfinished.payout_id), " ", stateTag(o.oldest_unfinished.state),
            " waiting for " + ms(o.oldest_unfinished.age_ms))
        : el("p", { "data-testid": "oldest" }, "None: every payout is settled."),
      el("h2", {}, "Channels of instance ", o.instance),
      el("p", {}, ch.usable + " usable, " + ch.busy + " busy, " + ch.disabled + " disabled"),
      el("table", {},
        el("tr", {}, el("th", {}, "account"), el("th", {}, "state"), el("th", {}, "envelope"), el("th", {}, "payouts")),
        ch.detail.map((c) => el("tr", {},
          el("td", { class: "mono" }, c.account), el("td", {}, c.state, c.disabled_reason ? " (" + c.disabled_reason + ")" : ""),
          el("td", { class: "mono" }, c.envelope || "—"), el("td", {}, c.payouts ?? "—")))),
      o.warnings.length ? el("ul", { class: "warnings" }, o.warnings.map((w) => el("li", {}, w))) : null,
      el("h2", {}, "Last reconciliation"),
      o.last_reconcile
        ? el("p", { "data-testid": "reconcile" }, o.last_reconcile.result, " at ", o.last_reconcile.finished_at,
            o.last_reconcile.from_ledger ? " (ledgers " + o.last_reconcile.from_ledger + "–" + o.last_reconcile.to_ledger + ")" : "",
            o.last_reconcile.mismatches ? ", " + o.last_reconcile.mismatches + " mismatches" : "",
            o.last_reconcile.error ? ": " + o.last_reconcile.error : "")
        : el("p", { "data-testid": "reconcile" }, "None yet."),
      el("h2", {}, "Webhooks"),
      el("p", {}, o.webhooks.pending + " deliveries pending, ",
        el("a", { href: "#/webhooks", "data-testid": "webhooks-dead" }, o.webhooks.dead + " dead-lettered")),
    );
  });
}

function payouts(main, params) {
  const form = el("form", { class: "filters", "data-testid": "filters" },
    el("label", {}, "State", el("select", { name: "state" }, el("option", { value: "" }, "any"),
      ["accepted", "prepared", "submitted", "confirmed", "failed", "parked", "cancelled", "held"].map((s) =>
        el("option", { value: s, selected: params.get("state") === s }, s)))),
    el("label", {}, "Id starts with", el("input", { name: "id_prefix", value: params.get("id_prefix") || "" })),
    el("label", {}, "Created since", el("input", { name: "since", type: "datetime-local", value: params.get("since") || "" })),
    el("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    location.hash = "#/payouts?" + q;
  });
  const table = el("div", { "data-testid": "payouts" });
  const pager = el("p", {});
  main.append(el("h2", {}, "Payouts"), form, table, pager);
  const query = new URLSearchParams();
  if (params.get("state")) query.set("state", params.get("state"));
  if (params.get("id_prefix")) query.set("id_prefix", params.get("id_prefix"));
  if (params.get("since")) query.set("since_unix_ms", String(new Date(params.get("since")).getTime()));
  if (params.get("after")) query.set("after", params.get("after"));
  query.set("limit", "50");
  return polling(async () => {
    const page = await api("/v1/payouts?" + query);
    put(table, el("table", {},
      el("tr", {}, ["payout", "state", "amount", "asset", "destination", "memo", "reason"].map((h) => el("th", {}, h))),
      page.payouts.map((p) => el("tr", { "data-payout": p.payout_id },
        el("td", {}, payoutLink(p.payout_id)), el("td", {}, stateTag(p.state)), el("td", {}, p.amount),
        el("td", { class: "mono" }, p.asset), el("td", { class: "mono" }, p.destination),
        el("td", { "data-testid": "memo" }, p.memo ? p.memo.value ?? "" : ""), el("td", {}, p.reason || "")))));
    const next = new URLSearchParams(params);
    put(pager, 
      params.get("after") ? el("a", { href: "#/payouts?" + withoutAfter(params) }, "First page") : null,
      " ",
      page.next_cursor ? el("a", { href: (next.set("after", page.next_cursor), "#/payouts?" + next) }, "Next page") : null);
  });
}

function withoutAfter(params) {
  const p = new URLSearchParams(params);
  p.delete("after");
  return p;
}

function payout(main, _params, id) {
  const summary = el("div", { "data-testid": "payout" });
  const actions = el("div", { "data-testid": "actions" });
  const timeline = el("div", { "data-testid": "timeline" });
  const envelopes = el("div", { "data-testid": "envelopes" });
  main.append(el("h2", {}, "Payout ", el("span", { class: "mono" }, id)), summary, actions,
    el("h2", {}, "Envelopes"), envelopes, el("h2", {}, "Timeline"), timeline);
  let shownFor = null;
  const path = "/v1/payouts/" + encodeURIComponent(id);
  const act = (what, explain, button, cls) => {
    const reason = el("input", { name: "reason", placeholder: "why (goes into the payout's history)", maxlength: "500" });
    const go = el("button", { type: "button", class: cls, "data-testid": what }, button);
    go.addEventListener("click", async () => {
      go.disabled = true;
      try {
        const body = reason.value.trim() ? { reason: reason.value.trim() } : undefined;
        const p = await api(path + "/" + what, { method: "POST", body });
        flash("Done: the payout is now " + p.state + ".", "info");
        shownFor = null;
        await draw();
      } catch (e) {
        flash(e.message);
      } finally {
        go.disabled = false;
      }
    });
    return el("div", { class: "action" }, el("p", {}, explain), reason, " ", go);
  };
  const draw = async () => {
    const [p, env] = await Promise.all([api(path), api(path + "/envelopes")]);
    put(summary, el("dl", { class: "kv" },
      el("dt", {}, "state"), el("dd", {}, stateTag(p.state)),
      el("dt", {}, "amount"), el("dd", {}, p.amount + " (" + p.amount_stroops + " stroops) ", el("span", { class: "mono" }, p.asset)),
      el("dt", {}, "destination"), el("dd", { class: "mono" }, p.destination),
      el("dt", {}, "memo"), el("dd", { "data-testid": "memo" }, p.memo ? p.memo.type + ": " + (p.memo.value ?? "") : "none"),
      el("dt", {}, "paid by"), el("dd", {}, p.op_kind, p.balance_id ? " " + p.balance_id : ""),
      el("dt", {}, "attempts"), el("dd", {}, p.attempts),
      el("dt", {}, "reason"), el("dd", { "data-testid": "reason" }, p.reason || "—"),
      el("dt", {}, "transaction"), el("dd", { class: "mono" }, p.tx_hash || "—",
        p.ledger ? " in ledger " + p.ledger + ", fee " + p.fee_charged_stroops + " stroops" : "")));
    // The actions are rebuilt only when what they offer changes (so a reason being typed
    // stays): the state, or whether an envelope still holds the payout (a parked payout's
    // envelope is watched until it is provably dead, and only then can it be cancelled).
    const live = env.envelopes.some((e) => e.status === "live");
    const offer = p.state + (live ? "/live" : "");
    if (shownFor !== offer) {
      shownFor = offer;
      put(actions, 
        ["parked", "held"].includes(p.state)
          ? act("resume", live
            ? "Resume: gives it a fresh attempt budget and sends its envelope again (it still has one, so it cannot be paid twice)."
            : "Resume: gives it a fresh attempt budget and puts it back in the queue to be paid.", "Resume", "")
          : null,
        ["accepted", "held", "parked"].includes(p.state) && !live
          ? act("cancel", "Cancel: it will never be paid (only possible while no transaction envelope holds it).", "Cancel payout", "danger")
          : null);
    }
    put(envelopes, env.envelopes.length
      ? el("table", {},
        el("tr", {}, ["hash", "status", "ledger", "fee (stroops)", "its operation", "channel / sequence", "note"].map((h) => el("th", {}, h))),
        env.envelopes.map((e) => el("tr", {},
          el("td", { class: "mono" }, e.tx_hash), el("td", {}, e.status), el("td", {}, e.ledger ?? "—"),
          el("td", {}, e.fee_charged_stroops ?? "—", " charged of ", e.fee_stroops, " offered"),
          el("td", {}, "index " + (e.op_index ?? "?") + " of " + e.operations),
          el("td", { class: "mono" }, e.source + " #" + e.sequence), el("td", {}, e.note || ""))))
      : el("p", { class: "muted" }, "None yet."));
    put(timeline, el("table", {},
      el("tr", {}, ["version", "event", "state", "at", "detail"].map((h) => el("th", {}, h))),
      p.events.map((e) => el("tr", { "data-kind": e.kind },
        el("td", {}, e.version), el("td", {}, e.kind), el("td", {}, stateTag(e.state)), el("td", {}, e.at),
        el("td", {}, el("pre", {}, JSON.stringify(e.detail, null, 1)))))));
  };
  return polling(draw);
}

function progress(main, params) {
  const form = el("form", { class: "filters" },
    el("label", {}, "Id starts with", el("input", { name: "id_prefix", value: params.get("id_prefix") || "", "data-testid": "prefix" })),
    el("label", {}, "Created since", el("input", { name: "since", type: "datetime-local", value: params.get("since") || "" })),
    el("button", { type: "submit" }, "Watch"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    location.hash = "#/progress?" + q;
  });
  const out = el("div", { "data-testid": "progress" });
  main.append(el("h2", {}, "Progress of a run"),
    el("p", { class: "muted" }, "A run is the payouts whose ids start alike (a CSV file's, a burst from NATS) or that were created since a time."),
    form, out);
  const query = new URLSearchParams();
  if (params.get("id_prefix")) query.set("id_prefix", params.get("id_prefix"));
  if (params.get("since")) query.set("since_unix_ms", String(new Date(params.get("since")).getTime()));
  let before = null;
  return polling(async () => {
    const p = await api("/v1/progress?" + query);
    const now = Date.now();
    const rate = before && now > before.at ? ((p.done - before.done) * 1000) / (now - before.at) : null;
    before = { at: now, done: p.done };
    const settled = p.done + p.failed;
    put(out, 
      el("progress", { max: Math.max(1, p.total), value: settled }),
      el("div", { class: "cards" },
        [["done", p.done], ["pending", p.pending], ["failed", p.failed], ["waiting for an operator", p.waiting_for_operator], ["total", p.total]]
          .map(([label, n]) => el("div", { class: "card", "data-testid": "progress-" + label.split(" ")[0] },
            el("span", { class: "n" }, n), el("span", { class: "label" }, label)))),
      el("p", { "data-testid": "progress-rate" },
        p.confirmed_last_minute + " confirmed in the last minute",
        rate === null ? "" : "; " + rate.toFixed(1) + " payouts/s right now",
        rate && p.pending ? "; about " + ms((p.pending / rate) * 1000) + " to go" : ""),
      p.oldest_unfinished ? el("p", {}, "Oldest unfinished: ", payoutLink(p.oldest_unfinished.payout_id), " ", stateTag(p.oldest_unfinished.state)) : null);
  });
}

function webhooks(main, params) {
  const out = el("div", { "data-testid": "deliveries" });
  const pager = el("p", {});
  const reason = el("input", { name: "reason", placeholder: "why replay (goes into the audit trail)", maxlength: "500", "data-testid": "replay-reason" });
  main.append(el("h2", {}, "Dead-lettered webhook deliveries"),
    el("p", { class: "muted" }, "Every attempt allowed failed. Replay sends the same event (same id, same body) again. Needs an admin token."),
    el("div", { class: "action" }, reason), out, pager);
  const query = new URLSearchParams({ state: "dead", limit: "50" });
  if (params.get("after")) query.set("after", params.get("after"));
  return polling(async () => {
    const page = await api("/v1/webhooks/deliveries?" + query, { admin: true });
    put(out, page.deliveries.length
      ? el("table", {},
        el("tr", {}, ["id", "endpoint", "event", "attempts", "last error", ""].map((h) => el("th", {}, h))),
        page.deliveries.map((d) => {
          const replay = el("button", { type: "button", class: "secondary", "data-testid": "replay" }, "Replay");
          replay.addEventListener("click", async () => {
            if (!reason.value.trim()) {
              flash("Say why first: the reason goes into the audit trail.");
              reason.focus();
              return;
            }
            try {
              await api("/v1/webhooks/deliveries/" + d.id + "/replay", { method: "POST", body: { reason: reason.value.trim() }, admin: true });
              flash("Delivery " + d.id + " queued again.", "info");
            } catch (e) {
              flash(e.message);
            }
          });
          return el("tr", {}, el("td", {}, d.id), el("td", {}, d.endpoint), el("td", {}, payoutLink(d.payout_id), " ", d.kind, " (v" + d.version + ")"),
            el("td", {}, d.attempts), el("td", {}, (d.last_status ? "HTTP " + d.last_status + ": " : "") + (d.last_error || "")), el("td", {}, replay));
        }))
      : el("p", { class: "muted" }, "None."));
    put(pager,
      params.get("after") ? el("a", { href: "#/webhooks" }, "Newest") : null,
      " ",
      page.next_cursor ? el("a", { href: "#/webhooks?after=" + encodeURIComponent(page.next_cursor) }, "Older") : null);
  });
}

// ---- start ----------------------------------------------------------------------------

document.getElementById("tokens").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("payoutd.token", document.getElementById("token").value.trim());
  sessionStorage.setItem("payoutd.adminToken", document.getElementById("admin-token").value.trim());
  document.getElementById("token").value = "";
  document.getElementById("admin-token").value = "";
  route();
});
window.addEventListener("hashchange", route);
route();
