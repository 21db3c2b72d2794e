// The soak's load (faults/soak.sh): steady traffic plus connection churn against the
// nodes of a cluster, directly (no balancer), spread over every URL in URLS.
//
// Steady: one driver per trip streaming positions at 1 Hz (the next update 1 s after the
// ack) and a `driver:status` every STATUS_EVERY_MS, two passengers per trip subscribed for
// the whole run (one on the driver's node, one on the other), a few SSE streams (trip
// status as a passenger, a driver's live location as an ADMIN) read with Node's fetch.
// Churn: CHURN_PER_SEC short-lived sockets a second (reconnection off), each one of
//   - a passenger with a booking: `passenger:subscribe`, held 0.5–2.5 s, half of them
//     `passenger:unsubscribe` first, then disconnect;
//   - a user with a `chat:` grant: `room:join`, `chat:typing`, held, half `room:leave`;
//   - an ADMIN: `admin:subscribe`, `heartbeat`;
// and one short SSE trip-status stream every SSE_CHURN_EVERY_MS (open, read `connected`,
// abort).
//
// Errors (all expected 0): acks not ok (by event and code), acks not answered within 5 s,
// connect_error (by message), churn sockets not connected within 10 s, steady sockets
// disconnected while running (by reason), churn sockets disconnected by the server before
// they left, SSE responses not 200, steady SSE streams that end or stay silent for 40 s,
// churn SSE streams without `connected` within 5 s.
//
// Every 10 s one progress line (JSON) on stderr: churn connects/disconnects per second in
// that window, open churn sockets, errors so far. At the end one JSON summary on stdout.
//
// env: URLS (comma-separated), SECRET, TRIPS_FILE (lines "trip driver pA pB cA cB"),
//      SECONDS, CHURN_PER_SEC, STATUS_EVERY_MS, SSE_STREAMS, SSE_CHURN_EVERY_MS, TENANT,
//      STEADY (1; 0 = churn only, no steady sockets or streams: to tell which part grows what),
//      SSE_ENCODING (unset: fetch's own `accept-encoding: gzip, deflate`; e.g. `identity`)
import { io } from "socket.io-client";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";

const env = process.env;
const URLS = env.URLS.split(",");
const SECRET = env.SECRET;
const TENANT = env.TENANT ?? "default";
const SECONDS = Number(env.SECONDS ?? 180);
const CHURN_PER_SEC = Number(env.CHURN_PER_SEC ?? 25);
const STATUS_EVERY_MS = Number(env.STATUS_EVERY_MS ?? 10000);
const SSE_STREAMS = Number(env.SSE_STREAMS ?? 6);
const SSE_CHURN_EVERY_MS = Number(env.SSE_CHURN_EVERY_MS ?? 2000);
const STEADY = env.STEADY !== "0";
const ACK_MS = 5000;
const EXP = Math.floor(Date.now() / 1000) + SECONDS + 3600; // outlives the run

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
function token(sub, role, extra = {}) {
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ sub, role, tenant: TENANT, exp: EXP, ...extra });
  const sig = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

const trips = readFileSync(env.TRIPS_FILE, "utf8").trim().split("\n").map((l) => l.split(" "));
const count = (m, k, n = 1) => (m[k] = (m[k] ?? 0) + n);
const errors = {
  ackRefused: {}, // "event:CODE"
  ackTimedOut: {}, // event
  connectError: {}, // message
  connectTimeout: 0,
  steadyDisconnected: {}, // reason
  churnCutByServer: {}, // reason
  sse: {}, // kind
};
const stats = {
  steadySockets: 0,
  locationsOk: 0,
  statusOk: 0,
  locationsDelivered: 0,
  statusDelivered: 0,
  churnStarted: 0,
  churnConnects: 0,
  churnDisconnects: 0,
  churnByKind: {},
  sseSteady: 0,
  sseEvents: {},
  sseChurnOpened: 0,
  sseEncodings: {},
};
let running = true;
let urlTurn = 0;
const nextUrl = () => URLS[urlTurn++ % URLS.length];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rand = (a, b) => a + Math.random() * (b - a);

// An ack within ACK_MS; refused and unanswered acks are errors.
function ack(socket, event, payload) {
  return new Promise((resolve) => {
    socket.timeout(ACK_MS).emit(event, payload, (err, reply) => {
      if (err) {
        count(errors.ackTimedOut, event);
        return resolve(null);
      }
      if (!reply?.ok) count(errors.ackRefused, `${event}:${reply?.error ?? "?"}`);
      resolve(reply);
    });
  });
}

function steady(url, sub, role) {
  const socket = io(url, {
    forceNew: true,
    auth: { token: token(sub, role) },
    transports: ["websocket"],
    reconnection: true,
    reconnectionDelay: 500,
    reconnectionDelayMax: 2000,
  });
  stats.steadySockets += 1;
  socket.on("connect_error", (e) => count(errors.connectError, `steady: ${e.message}`));
  socket.on("disconnect", (reason) => {
    if (running) count(errors.steadyDisconnected, reason);
  });
  return socket;
}

// Steady traffic.
const steadySockets = [];
(STEADY ? trips : []).forEach(([trip, driver, pa, pb], i) => {
  const home = URLS[i % URLS.length];
  const away = URLS[(i + 1) % URLS.length];
  for (const [p, url] of [[pa, away], [pb, home]]) {
    const s = steady(url, p, "PASSENGER");
    steadySockets.push(s);
    const subscribe = async () => {
      const r = await ack(s, "passenger:subscribe", { tripId: trip });
      if (!r?.ok && running && s.connected) setTimeout(subscribe, 1000);
    };
    s.on("connect", subscribe);
    s.on("server:location:update", () => (stats.locationsDelivered += 1));
    s.on("server:trip:status", () => (stats.statusDelivered += 1));
  }
  const d = steady(home, driver, "DRIVER");
  steadySockets.push(d);
  let n = 0;
  const tick = async () => {
    if (!running) return;
    n += 1;
    if (d.connected) {
      const r = await ack(d, "driver:location:update", {
        tripId: trip,
        lat: 48.8 + (n % 100) * 0.0001,
        lng: 2.3 + (n % 100) * 0.0001,
      });
      if (r?.ok) stats.locationsOk += 1;
    }
    setTimeout(tick, 1000);
  };
  let s = 0;
  const status = async () => {
    if (!running) return;
    s += 1;
    if (d.connected) {
      const r = await ack(d, "driver:status", { tripId: trip, status: s % 2 ? "STARTED" : "PAUSED" });
      if (r?.ok) stats.statusOk += 1;
    }
    setTimeout(status, STATUS_EVERY_MS);
  };
  // Spread the connects and the first ticks over a few seconds.
  setTimeout(tick, 3000 + Math.random() * 2000);
  setTimeout(status, 5000 + Math.random() * STATUS_EVERY_MS);
});

// SSE: read a stream with fetch; calls onEvent(type) per data line.
async function sse(url, tok, onEvent, controller) {
  const res = await fetch(url, {
    headers: {
      authorization: `Bearer ${tok}`,
      accept: "text/event-stream",
      ...(env.SSE_ENCODING ? { "accept-encoding": env.SSE_ENCODING } : {}),
    },
    signal: controller.signal,
  });
  if (res.status !== 200) {
    count(errors.sse, `status ${res.status}`);
    await res.body?.cancel().catch(() => {});
    return false;
  }
  count(stats.sseEncodings, res.headers.get("content-encoding") ?? "none");
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return true;
    buf += dec.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line.startsWith("data:")) continue;
      let type = "?";
      try {
        type = JSON.parse(line.slice(5)).type ?? "?";
      } catch {}
      onEvent(type);
    }
  }
}

const sseControllers = [];
for (let k = 0; k < (STEADY ? SSE_STREAMS : 0); k++) {
  const i = k % trips.length;
  const [trip, driver, pa] = trips[i];
  const base = URLS[k % URLS.length];
  const url =
    k % 2 === 0
      ? `${base}/api/realtime/trip-status/${trip}`
      : `${base}/api/v1/realtime/drivers/${driver}/location`;
  const tok = k % 2 === 0 ? token(pa, "PASSENGER") : token(`sse-admin-${k}`, "ADMIN");
  const c = new AbortController();
  sseControllers.push(c);
  stats.sseSteady += 1;
  let last = Date.now();
  const watch = setInterval(() => {
    if (running && Date.now() - last > 40000) {
      count(errors.sse, "steady stream silent 40 s");
      last = Date.now();
    }
  }, 5000);
  (async () => {
    while (running) {
      try {
        await sse(url, tok, (type) => {
          last = Date.now();
          count(stats.sseEvents, type);
        }, c);
        if (running) count(errors.sse, "steady stream ended");
      } catch (e) {
        if (running) count(errors.sse, `steady stream: ${e.cause?.code ?? e.name}`);
      }
      if (running) await sleep(3000); // as EventSource's retry
    }
    clearInterval(watch);
  })();
}

// Churn: short-lived sockets.
let openChurn = 0;
let chatUser = 0;
let adminUser = 0;
function churnOne() {
  stats.churnStarted += 1;
  const url = nextUrl();
  const r = Math.random();
  let kind, sub, role, extra = {}, steps;
  if (r < 0.5) {
    kind = "subscribe";
    const [trip, , , , ca, cb] = trips[Math.floor(Math.random() * trips.length)];
    sub = Math.random() < 0.5 ? ca : cb;
    role = "PASSENGER";
    steps = async (s) => {
      await ack(s, "passenger:subscribe", { tripId: trip });
      await sleep(rand(500, 2500));
      if (Math.random() < 0.5 && s.connected) await ack(s, "passenger:unsubscribe", { tripId: trip });
    };
  } else if (r < 0.75) {
    kind = "room";
    const u = chatUser++ % 200;
    const chat = `c${u % 50}`;
    sub = `u${u}`;
    role = "PASSENGER";
    extra = { channels: [`chat:${chat}`] };
    steps = async (s) => {
      await ack(s, "room:join", { room: `chat:${chat}` });
      s.emit("chat:typing", { chatId: chat, isTyping: true });
      await sleep(rand(500, 2500));
      if (Math.random() < 0.5 && s.connected) await ack(s, "room:leave", { room: `chat:${chat}` });
    };
  } else {
    kind = "admin";
    sub = `adm${adminUser++ % 100}`;
    role = "ADMIN";
    steps = async (s) => {
      await ack(s, "admin:subscribe", {});
      await ack(s, "heartbeat", {});
      await sleep(rand(200, 1500));
    };
  }
  count(stats.churnByKind, kind);
  openChurn += 1;
  const s = io(url, {
    forceNew: true,
    auth: { token: token(sub, role, extra) },
    transports: ["websocket"],
    reconnection: false,
    timeout: 10000,
  });
  let leaving = false;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    openChurn -= 1;
  };
  s.on("connect_error", (e) => {
    if (e.message === "timeout") errors.connectTimeout += 1;
    else count(errors.connectError, `churn: ${e.message}`);
    finish();
  });
  s.on("disconnect", (reason) => {
    if (leaving) stats.churnDisconnects += 1;
    else count(errors.churnCutByServer, reason);
    finish();
  });
  s.on("connect", async () => {
    stats.churnConnects += 1;
    await steps(s);
    leaving = true;
    if (s.connected) s.disconnect();
    else finish();
  });
}

const t0 = Date.now();
let churnTimer = null;
// Churn starts after the steady sockets are up; paced on the clock (catches up after a stall).
setTimeout(() => {
  const start = Date.now();
  let made = 0;
  churnTimer = setInterval(() => {
    if (!running) return;
    const due = Math.floor(((Date.now() - start) / 1000) * CHURN_PER_SEC);
    while (made < due && openChurn < CHURN_PER_SEC * 20) {
      made += 1;
      churnOne();
    }
  }, 20);
}, 5000);

// SSE churn.
let sseChurnTimer = setInterval(() => {
  if (!running) return;
  stats.sseChurnOpened += 1;
  const [trip, , , , ca] = trips[Math.floor(Math.random() * trips.length)];
  const c = new AbortController();
  let connected = false;
  const timer = setTimeout(() => {
    if (!connected) count(errors.sse, "churn stream: no connected in 5 s");
    c.abort();
  }, 5000);
  sse(`${nextUrl()}/api/realtime/trip-status/${trip}`, token(ca, "PASSENGER"), (type) => {
    if (type === "connected") {
      connected = true;
      clearTimeout(timer);
      setTimeout(() => c.abort(), rand(200, 1500));
    }
  }, c).catch((e) => {
    if (e.name !== "AbortError") count(errors.sse, `churn stream: ${e.cause?.code ?? e.name}`);
  });
}, SSE_CHURN_EVERY_MS);

const errorTotal = () => {
  let n = errors.connectTimeout;
  for (const k of Object.keys(errors)) if (typeof errors[k] === "object") for (const v of Object.values(errors[k])) n += v;
  return n;
};

// Progress every 10 s.
let last = { t: Date.now(), c: 0, d: 0, loc: 0 };
const windows = [];
const progress = setInterval(() => {
  const now = Date.now();
  const dt = (now - last.t) / 1000;
  const w = {
    t: Math.round((now - t0) / 1000),
    connectsPerSec: +((stats.churnConnects - last.c) / dt).toFixed(1),
    disconnectsPerSec: +((stats.churnDisconnects - last.d) / dt).toFixed(1),
    locationsPerSec: +((stats.locationsOk - last.loc) / dt).toFixed(1),
    openChurn,
    errors: errorTotal(),
  };
  if (w.t > 15 && running) windows.push(w); // churn runs from 5 s
  last = { t: now, c: stats.churnConnects, d: stats.churnDisconnects, loc: stats.locationsOk };
  console.error(JSON.stringify(w));
}, 10000);

setTimeout(async () => {
  running = false;
  clearInterval(churnTimer);
  clearInterval(sseChurnTimer);
  // Let the churn sockets in flight finish their steps and leave.
  for (let i = 0; i < 100 && openChurn > 0; i++) await sleep(100);
  for (const s of steadySockets) s.disconnect();
  for (const c of sseControllers) c.abort();
  await sleep(1000);
  clearInterval(progress);
  const per = (k) => windows.map((w) => w[k]);
  const min = (a) => (a.length ? Math.min(...a) : 0);
  const avg = (a) => (a.length ? +(a.reduce((x, y) => x + y, 0) / a.length).toFixed(1) : 0);
  console.log(
    JSON.stringify({
      seconds: SECONDS,
      trips: trips.length,
      ...stats,
      churnStillOpen: openChurn,
      churnConnectsPerSec: { min: min(per("connectsPerSec")), avg: avg(per("connectsPerSec")) },
      churnDisconnectsPerSec: { min: min(per("disconnectsPerSec")), avg: avg(per("disconnectsPerSec")) },
      locationsPerSecAvg: avg(per("locationsPerSec")),
      errors,
      errorTotal: errorTotal() + openChurn,
    }),
  );
  process.exit(0);
}, SECONDS * 1000);
