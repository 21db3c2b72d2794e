// The fault suite's traffic (faults/run.sh): drivers streaming positions at 1 Hz and a
// status event every few seconds, three passengers per trip, all through the balancer,
// with the official socket.io-client (websocket, reconnection on) spread over source
// addresses 127.0.0.2… so that nginx's `hash $remote_addr` spreads them over the nodes.
// Passengers re-subscribe with `since` on every (re)connect, as a real app does. At the end
// it prints one JSON summary: status events acked ok that some subscriber never got
// (expected 0), locations acked ok and delivered (at most once), acks that timed out or
// were cut by a disconnect, reconnect times.
//
// Drivers use the client's own at-least-once emits (`retries`, socket.io-client ≥ 4.6): an
// event whose ack was cut by a disconnect is sent again after the reconnect, as an app that
// must not lose a status change does; a node guarantees that an event it did not answer was
// not applied, so the retry is safe (counted: `retriedAfterCut`, `statusDuplicates`).
// RETRIES=0 turns that off (then a cut ack counts as `acksCutByDisconnect`).
//
// Each delivered location's latency is `now - emittedAt` (the node stamps `emittedAt` when
// it accepts the update, so this is accept → passenger, on one machine's clock). With
// LAT_FILE, every latency is written there at the end, by epoch second
// ({"bins": {"<epoch s>": [ms, …]}}), so faults/run.sh can take percentiles over the
// windows of a fault; the summary carries the whole run's p50/p99.
//
// env: URL, SECRET, TRIPS_FILE (lines "tripId driverId p1 p2 p3"), SECONDS, TENANT, RETRIES, LAT_FILE
import { io } from "socket.io-client";
import { createHmac } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";

const { URL, SECRET, TRIPS_FILE, TENANT = "default" } = process.env;
const SECONDS = Number(process.env.SECONDS ?? 60);
const STATUS_EVERY_MS = Number(process.env.STATUS_EVERY_MS ?? 3000);
const RETRIES = Number(process.env.RETRIES ?? 3);
const LAT_FILE = process.env.LAT_FILE;

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
function token(sub, role) {
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ sub, role, tenant: TENANT, exp: Math.floor(Date.now() / 1000) + 3600 });
  const sig = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

const trips = readFileSync(TRIPS_FILE, "utf8").trim().split("\n").map((l) => l.split(" "));
const stats = {
  sockets: 0,
  connectErrors: 0,
  locationsOk: 0,
  locationsRefused: {},
  locationsDelivered: 0,
  statusOk: 0,
  statusRefused: {},
  acksTimedOut: 0,
  acksCutByDisconnect: 0,
  retriedAfterCut: 0,
  statusDuplicates: 0,
  cutAfterMs: [],
  cutReasons: {},
  reconnects: 0,
  reconnectMs: [],
  replayedRecovered: 0,
  replayedIncomplete: 0,
};
const count = (m, k) => (m[k] = (m[k] ?? 0) + 1);
// Delivery latencies (ms) of locations, by epoch second of their arrival.
const latency = new Map();
function delivered(e) {
  stats.locationsDelivered += 1;
  const at = Date.now();
  const emitted = Date.parse(e?.emittedAt);
  if (!Number.isFinite(emitted)) return;
  const sec = Math.floor(at / 1000);
  let bin = latency.get(sec);
  if (!bin) latency.set(sec, (bin = []));
  bin.push(at - emitted);
}
const pct = (sorted, p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] : 0);
let running = true;
let addr = 0;
const nextAddr = () => `127.0.0.${2 + (addr++ % 250)}`;

// An ack within 5 s, or why not.
function ack(socket, event, payload) {
  return new Promise((resolve) => {
    if (!socket.connected) return resolve({ cut: true });
    let done = false;
    const sentAt = Date.now();
    const onDisconnect = (reason) => {
      if (done) return;
      stats.cutAfterMs.push(Date.now() - sentAt);
      count(stats.cutReasons, reason);
      if (RETRIES > 0) {
        // The client keeps the event queued and sends it again after the reconnect.
        stats.retriedAfterCut += 1;
        return;
      }
      done = true;
      resolve({ cut: true });
    };
    socket.on("disconnect", onDisconnect);
    socket.timeout(5000).emit(event, payload, (err, reply) => {
      socket.off("disconnect", onDisconnect);
      if (done) return;
      done = true;
      resolve(err ? { timedOut: true } : { reply });
    });
  });
}

function connect(sub, role, retries = 0) {
  const socket = io(URL, {
    retries,
    auth: { token: token(sub, role) },
    transports: ["websocket"],
    reconnection: true,
    reconnectionDelay: 200,
    reconnectionDelayMax: 2000,
    localAddress: nextAddr(),
  });
  stats.sockets += 1;
  let lostAt = null;
  let everConnected = false;
  socket.on("connect", () => {
    if (everConnected && lostAt !== null) {
      stats.reconnects += 1;
      stats.reconnectMs.push(Date.now() - lostAt);
    }
    everConnected = true;
    lostAt = null;
  });
  socket.on("disconnect", () => (lostAt = Date.now()));
  socket.on("connect_error", () => {
    stats.connectErrors += 1;
    if (lostAt === null) lostAt = Date.now();
  });
  return socket;
}

// Per trip: the timestamps of its status events acked ok.
const acked = new Map();
const passengers = [];

for (const [trip, driver, ...riders] of trips) {
  acked.set(trip, new Set());
  for (const p of riders) {
    const socket = connect(p, "PASSENGER");
    const me = { trip, seen: new Set(), since: undefined, subscribedAt: null, name: p, reconnectedAt: [], subscribes: [] };
    passengers.push(me);
    const subscribe = async () => {
      const r = await ack(socket, "passenger:subscribe", me.since ? { tripId: trip, since: me.since } : { tripId: trip });
      me.subscribes.push({ at: new Date().toISOString(), since: me.since, reply: r.reply ?? r });
      if (r.reply?.ok) {
        if (me.subscribedAt === null) me.subscribedAt = Date.now();
        if (me.since) r.reply.recovered ? stats.replayedRecovered++ : stats.replayedIncomplete++;
      } else if (running) {
        setTimeout(subscribe, 500);
      }
    };
    socket.on("connect", subscribe);
    socket.on("server:trip:status", (e) => {
      const ts = Date.parse(e.timestamp);
      if (me.seen.has(ts)) stats.statusDuplicates += 1;
      me.seen.add(ts);
      if (e.eventId) me.since = e.eventId;
    });
    socket.on("server:location:update", delivered);
  }
  const socket = connect(driver, "DRIVER", RETRIES);
  let n = 0;
  const tick = async () => {
    if (!running) return;
    n += 1;
    if (socket.connected) {
      const r = await ack(socket, "driver:location:update", {
        tripId: trip,
        lat: 48.8 + (n % 100) * 0.0001,
        lng: 2.3 + (n % 100) * 0.0001,
      });
      if (r.reply?.ok) stats.locationsOk += 1;
      else if (r.reply) count(stats.locationsRefused, r.reply.code ?? r.reply.error ?? "?");
      else if (r.timedOut) stats.acksTimedOut += 1;
      else if (r.cut) stats.acksCutByDisconnect += 1;
    }
    setTimeout(tick, 1000);
  };
  setTimeout(tick, Math.random() * 1000);
  let s = 0;
  const status = async () => {
    if (!running) return;
    s += 1;
    if (socket.connected) {
      const stamp = new Date().toISOString();
      const payload = { tripId: trip, status: s % 2 ? "STARTED" : "PAUSED", timestamp: stamp };
      const r = await ack(socket, "driver:status", payload);
      if (r.reply?.ok) {
        stats.statusOk += 1;
        acked.get(trip).add(Date.parse(stamp));
      } else if (r.reply) count(stats.statusRefused, r.reply.code ?? r.reply.error ?? "?");
      else if (r.timedOut) stats.acksTimedOut += 1;
      else if (r.cut) stats.acksCutByDisconnect += 1;
    }
    setTimeout(status, STATUS_EVERY_MS);
  };
  setTimeout(status, 2000 + Math.random() * STATUS_EVERY_MS);
}

const started = Date.now();
const progress = setInterval(() => {
  const t = Math.round((Date.now() - started) / 1000);
  console.error(JSON.stringify({ t, locationsOk: stats.locationsOk, delivered: stats.locationsDelivered, statusOk: stats.statusOk, reconnects: stats.reconnects }));
}, 5000);

setTimeout(async () => {
  running = false;
  // Let in-flight deliveries and re-subscriptions land.
  await new Promise((r) => setTimeout(r, 5000));
  clearInterval(progress);
  let missed = 0;
  let unsubscribed = 0;
  for (const p of passengers) {
    if (p.subscribedAt === null) {
      unsubscribed += 1;
      continue;
    }
    for (const ts of acked.get(p.trip)) {
      // Only events acked after this passenger first subscribed were promised to it.
      if (ts > p.subscribedAt && !p.seen.has(ts)) {
        missed += 1;
        if (process.env.MISSED_LOG) console.error("missed", JSON.stringify({ trip: p.trip, passenger: p.name, ts, subscribes: p.subscribes }));
      }
    }
  }
  const expected = stats.locationsOk * 3;
  const ms = stats.reconnectMs.sort((a, b) => a - b);
  const all = [...latency.values()].flat().sort((a, b) => a - b);
  if (LAT_FILE) writeFileSync(LAT_FILE, JSON.stringify({ bins: Object.fromEntries(latency) }));
  console.log(
    JSON.stringify({
      ...stats,
      reconnectMs: undefined,
      cutAfterMs: undefined,
      cutAfterMsMax: stats.cutAfterMs.length ? Math.max(...stats.cutAfterMs) : 0,
      reconnectP99Ms: ms.length ? ms[Math.floor(ms.length * 0.99)] : 0,
      reconnectMaxMs: ms.length ? ms[ms.length - 1] : 0,
      latencyP50Ms: pct(all, 0.5),
      latencyP99Ms: pct(all, 0.99),
      statusMissed: missed,
      passengersNeverSubscribed: unsubscribed,
      locationsExpected: expected,
      locationsLost: Math.max(0, expected - stats.locationsDelivered),
    }),
  );
  process.exit(0);
}, SECONDS * 1000);
