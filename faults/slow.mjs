// The slow-consumer case of faults/run.sh, two roles:
//
//   node faults/slow.mjs driver   the busy trip's driver: location updates at RATE per second
//                                 (acked, at most 64 in flight) through the balancer, until
//                                 SIGTERM; then one JSON line of what it got.
//   node faults/slow.mjs reader   the consumer that will stop reading, connected straight to
//                                 one node (URL): the official socket.io-client (websocket,
//                                 no reconnection, so a cut-off stays visible) subscribed to
//                                 the busy trip, and an SSE stream of the busy driver's
//                                 location (plain HTTP/1.1, no compression asked). It prints
//                                 "ready" once both get events; run.sh then freezes it with
//                                 SIGSTOP, so neither reads again. After SIGCONT it prints
//                                 what became of each ("ws-disconnect <reason>", "sse-end").
//   node faults/slow.mjs probe    a few light subscribers of other trips on given nodes, their
//                                 delivery latencies by second (LAT_FILE) on SIGTERM.
//
// env: URL, SECRET, TENANT, BUSY_TRIP, BUSY_DRIVER, RATE (driver), READER (reader's user id),
//   TARGETS (probe: label=url,…), PROBE_TRIPS (probe: trip ids), LAT_FILE (probe)
import { io } from "socket.io-client";
import { createHmac } from "node:crypto";
import http from "node:http";
import { writeFileSync } from "node:fs";

const { URL, SECRET, TENANT = "default", BUSY_TRIP, BUSY_DRIVER } = process.env;
const role = process.argv[2];
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
function token(sub, r) {
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ sub, role: r, tenant: TENANT, exp: Math.floor(Date.now() / 1000) + 3600 });
  const sig = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

if (role === "driver") {
  const RATE = Number(process.env.RATE ?? 500);
  const MAX_IN_FLIGHT = 64;
  const stats = { sent: 0, ok: 0, refused: {}, timedOut: 0, skipped: 0 };
  const socket = io(URL, { auth: { token: token(BUSY_DRIVER, "DRIVER") }, transports: ["websocket"], reconnection: true });
  let inFlight = 0;
  let n = 0;
  const one = () => {
    if (!socket.connected || inFlight >= MAX_IN_FLIGHT) return (stats.skipped += 1);
    inFlight += 1;
    n += 1;
    stats.sent += 1;
    const payload = { tripId: BUSY_TRIP, lat: 48.8 + (n % 1000) * 0.00001, lng: 2.3 + (n % 1000) * 0.00001, speed: 12.5, heading: 90 };
    socket.timeout(5000).emit("driver:location:update", payload, (err, reply) => {
      inFlight -= 1;
      if (err) stats.timedOut += 1;
      else if (reply?.ok) stats.ok += 1;
      else {
        const k = reply?.error ?? "?";
        stats.refused[k] = (stats.refused[k] ?? 0) + 1;
      }
    });
  };
  // 10 ms ticks, RATE/100 updates each (fractions carried over).
  let credit = 0;
  setInterval(() => {
    credit += RATE / 100;
    while (credit >= 1) {
      credit -= 1;
      one();
    }
  }, 10);
  process.on("SIGTERM", () => {
    console.log(JSON.stringify(stats));
    process.exit(0);
  });
} else if (role === "reader") {
  const me = process.env.READER ?? "slow-reader";
  const tok = token(me, "BUSINESS");
  let wsUp = false;
  let sseUp = false;
  let ssePort = 0;
  // "ready", then the local ports of the websocket and the SSE stream (run.sh follows them with ss).
  const ready = () => {
    if (!(wsUp && sseUp)) return;
    console.log("ready");
    console.log(`ports ${socket.io.engine?.transport?.ws?._socket?.localPort ?? 0} ${ssePort}`);
  };
  const socket = io(URL, { auth: { token: tok }, transports: ["websocket"], reconnection: false });
  let got = 0;
  socket.on("connect", () => {
    socket.timeout(5000).emit("passenger:subscribe", { tripId: BUSY_TRIP }, (err, reply) => {
      if (err || !reply?.ok) {
        console.error("subscribe failed", err?.message ?? JSON.stringify(reply));
        process.exit(1);
      }
    });
  });
  socket.on("server:location:update", () => {
    got += 1;
    if (!wsUp && got >= 10) {
      wsUp = true;
      ready();
    }
  });
  socket.on("connect_error", (e) => {
    console.error("connect_error", e.message);
    process.exit(1);
  });
  socket.on("disconnect", (reason) => console.log(`ws-disconnect ${reason}`));
  const u = new globalThis.URL(`${URL}/api/v1/realtime/drivers/${encodeURIComponent(BUSY_DRIVER)}/location`);
  u.searchParams.set("token", tok);
  let sseEvents = 0;
  const req = http.get(u, { headers: { accept: "text/event-stream" } }, (res) => {
    if (res.statusCode !== 200) {
      console.error("sse status", res.statusCode);
      process.exit(1);
    }
    res.setEncoding("utf8");
    res.on("data", (chunk) => {
      sseEvents += (chunk.match(/driver_location/g) ?? []).length;
      if (!sseUp && sseEvents >= 10) {
        sseUp = true;
        ready();
      }
    });
    res.on("end", () => console.log("sse-end"));
    res.on("error", (e) => console.log(`sse-error ${e.message}`));
  });
  req.on("socket", (sock) => sock.on("connect", () => (ssePort = sock.localPort)));
  req.on("error", (e) => console.log(`sse-error ${e.message}`));
  setInterval(() => {}, 1000);
} else if (role === "probe") {
  // A few light subscribers beside the traffic (whose one process is saturated): per node
  // label, BUSINESS sockets each subscribed to PER trips; every location's latency
  // (now - emittedAt) by epoch second, written to LAT_FILE on SIGTERM.
  const targets = process.env.TARGETS.split(","); // label=url
  const trips = process.env.PROBE_TRIPS.split(",");
  const PER = 5; // the default subscription limit per user
  const bins = {};
  let k = 0;
  for (const t of targets) {
    const [label, url] = t.split("=");
    bins[label] = {};
    for (let i = 0; i + PER <= trips.length && i < 10; i += PER) {
      const mine = trips.slice(i, i + PER);
      const socket = io(url, { auth: { token: token(`probe-${label}-${k++}`, "BUSINESS") }, transports: ["websocket"] });
      socket.on("connect", () => socket.emit("passenger:subscribe", { tripIds: mine }, () => {}));
      socket.on("server:location:update", (e) => {
        const at = Date.now();
        const emitted = Date.parse(e?.emittedAt);
        if (!Number.isFinite(emitted)) return;
        const sec = Math.floor(at / 1000);
        (bins[label][sec] ??= []).push(at - emitted);
      });
    }
  }
  process.on("SIGTERM", () => {
    writeFileSync(process.env.LAT_FILE, JSON.stringify(bins));
    process.exit(0);
  });
} else {
  console.error("usage: slow.mjs driver|reader|probe");
  process.exit(2);
}
