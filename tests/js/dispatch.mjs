// Dispatch (CONTRACT §7) with the official socket.io-client and a browser-compatible
// EventSource, run by tests/it/interop_js.rs against a two-node cluster: a dispatcher's
// live area (snapshot ack, conflated server:area:update frames, leaving), the same area as
// an SSE stream (connected snapshot, area_update without ids), and a user's missed
// notifications replayed by user:sync after a reconnect. Exits non-zero with a message on
// the first failure; every wait is bounded.
import { EventSource } from "eventsource";
import { io } from "socket.io-client";

const { URL_A, URL_B, DRIVER, DRIVER_TOKEN, VIEWER_TOKEN, USER, USER_TOKEN, SERVICE_TOKEN } = process.env;
const fail = (msg) => {
  console.error("FAIL:", msg);
  process.exit(1);
};
const within = (ms, what, p) =>
  Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`timeout: ${what}`)), ms))]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function connect(url, token) {
  const s = io(url, { auth: { token }, transports: ["websocket"], reconnection: false, forceNew: true });
  return within(5000, `connect ${url}`, new Promise((resolve, reject) => {
    s.on("connect", () => resolve(s));
    s.on("connect_error", (e) => { s.close(); reject(e); });
  }));
}

const next = (s, event, pred = () => true) =>
  within(5000, event, new Promise((resolve) => {
    const h = (p) => { if (pred(p)) { s.off(event, h); resolve(p); } };
    s.on(event, h);
  }));

async function ok(s, event, payload) {
  const ack = await within(5000, `${event} ack`, s.emitWithAck(event, payload));
  if (ack.ok !== true) fail(`${event} ${JSON.stringify(ack)}`);
  return ack;
}

async function notify(title) {
  const r = await fetch(`${URL_A}/api/v1/notifications`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${SERVICE_TOKEN}` },
    body: JSON.stringify({ users: [USER], title, body: "b" }),
  });
  if (r.status !== 202) fail(`notification ${r.status}`);
}

async function areas() {
  const driver = await connect(URL_A, DRIVER_TOKEN);
  await ok(driver, "driver:subscribe", {});
  await ok(driver, "driver:location:update", { lat: 48.85, lng: 2.35 });
  await sleep(300);
  const viewer = await connect(URL_B, VIEWER_TOKEN);
  const ack = await ok(viewer, "area:subscribe", { areaId: "paris", bbox: [2.25, 48.8, 2.55, 48.95], intervalMs: 250 });
  if (!Array.isArray(ack.drivers) || ack.drivers.length !== 1 || ack.drivers[0].driverId !== DRIVER || ack.truncated !== false)
    fail(`snapshot ${JSON.stringify(ack)}`);
  const moved = next(viewer, "server:area:update", (f) => f.drivers.some((d) => d.lat === 48.9));
  await ok(driver, "driver:location:update", { lat: 48.9, lng: 2.4 });
  const f = await moved;
  if (f.areaId !== "paris" || f.drivers[0].availability !== "AVAILABLE" || !f.emittedAt) fail(`frame ${JSON.stringify(f)}`);
  const left = next(viewer, "server:area:update", (f) => f.left.includes(DRIVER));
  await ok(driver, "driver:location:update", { lat: 47.0, lng: 2.4 });
  await left;
  await ok(viewer, "area:unsubscribe", { areaId: "paris" });

  // The same area over SSE: the snapshot in `connected`, then updates without ids.
  await ok(driver, "driver:location:update", { lat: 48.86, lng: 2.36 });
  await sleep(300);
  const es = new EventSource(`${URL_B}/api/v1/realtime/area?bbox=2.25,48.8,2.55,48.95&intervalMs=250&token=${VIEWER_TOKEN}`);
  const msgs = [];
  es.onmessage = (e) => msgs.push({ id: e.lastEventId, data: JSON.parse(e.data) });
  const take = (type, pred = () => true) =>
    within(5000, `sse ${type}`, (async () => {
      for (;;) {
        const i = msgs.findIndex((m) => m.data.type === type && pred(m.data));
        if (i >= 0) return msgs.splice(i, 1)[0];
        await sleep(20);
      }
    })());
  const connected = await take("connected");
  if (!connected.data.drivers.some((d) => d.driverId === DRIVER)) fail(`sse snapshot ${JSON.stringify(connected.data)}`);
  await ok(driver, "driver:location:update", { lat: 48.87, lng: 2.37 });
  const update = await take("area_update", (d) => d.drivers.some((x) => x.lat === 48.87));
  if (update.id) fail(`area_update carried an id ${update.id}`);
  es.close();
  driver.close();
  viewer.close();
  console.log("areas ok");
}

async function userSync() {
  const first = await connect(URL_B, USER_TOKEN);
  const got = next(first, "notification");
  await notify("one");
  const since = (await got).eventId;
  first.close();
  await notify("two");
  await notify("three");
  const back = await connect(URL_A, USER_TOKEN);
  const titles = [];
  back.on("notification", (n) => titles.push(n.title));
  const ack = await ok(back, "user:sync", { since });
  if (ack.recovered !== true) fail(`user:sync ${JSON.stringify(ack)}`);
  await within(5000, "replay", (async () => { while (titles.length < 2) await sleep(20); })());
  if (titles.join(",") !== "two,three") fail(`replayed ${titles}`);
  back.close();
  console.log("user:sync ok");
}

try {
  await areas();
  await userSync();
  console.log("dispatch interop ok");
  process.exit(0);
} catch (e) {
  fail(e.message);
}
