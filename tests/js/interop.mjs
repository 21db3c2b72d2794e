// Interop check with the official socket.io-client, run by tests/it/interop_js.rs against
// a two-node cluster. Exits non-zero with a message on the first failure; every wait is
// bounded.
import { io } from "socket.io-client";

const { URL_A, URL_B, TRIP, DRIVER_TOKEN, PASSENGER_TOKEN, BAD_TOKEN } = process.env;
const fail = (msg) => {
  console.error("FAIL:", msg);
  process.exit(1);
};
const within = (ms, what, p) =>
  Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`timeout: ${what}`)), ms))]);

function connect(url, token, transports, path = "/socket.io/") {
  const s = io(url, { auth: token === undefined ? undefined : { token }, transports, reconnection: false, path, forceNew: true });
  return within(5000, `connect ${url}`, new Promise((resolve, reject) => {
    s.on("connect", () => resolve(s));
    s.on("connect_error", (e) => { s.close(); reject(e); });
  }));
}

async function refused(url, token, expected) {
  try {
    const s = await connect(url, token, ["websocket"]);
    s.close();
    fail(`expected ${expected}, got a connection`);
  } catch (e) {
    if (e.message !== expected) fail(`expected ${expected}, got ${e.message}`);
  }
}

async function run(transports) {
  const driver = await connect(URL_A, DRIVER_TOKEN, transports);
  const passenger = await connect(URL_B, PASSENGER_TOKEN, transports, "/api/socket/");
  const hb = await within(5000, "heartbeat ack", passenger.emitWithAck("heartbeat", {}));
  if (hb.ok !== true || typeof hb.serverTime !== "string") fail(`heartbeat ack ${JSON.stringify(hb)}`);
  const bad = await within(5000, "invalid ack", driver.emitWithAck("driver:location:update", { lat: "x" }));
  if (bad.ok !== false || bad.error !== "INVALID_PAYLOAD") fail(`invalid ack ${JSON.stringify(bad)}`);
  const sub = await within(5000, "subscribe ack", passenger.emitWithAck("passenger:subscribe", { tripId: TRIP }));
  if (sub.ok !== true || !("current" in sub)) fail(`subscribe ack ${JSON.stringify(sub)}`);
  passenger.off("server:location:update");
  const got = new Promise((resolve) => passenger.on("server:location:update", (loc) => { if (loc.lat === 5.5) resolve(loc); }));
  const ack = await within(5000, "location ack", driver.emitWithAck("driver:location:update", { tripId: TRIP, lat: 5.5, lng: 6.5 }));
  if (ack.ok !== true) fail(`location ack ${JSON.stringify(ack)}`);
  const loc = await within(5000, "cross-node location", got);
  if (loc.tripId !== TRIP || loc.driverId !== "d1" || loc.lng !== 6.5 || !loc.emittedAt) fail(`location ${JSON.stringify(loc)}`);
  driver.close();
  passenger.close();
  console.log(`transport ${transports.join("+")} ok`);
}

try {
  await refused(URL_A, undefined, "NO_TOKEN");
  await refused(URL_A, "", "NO_TOKEN");
  await refused(URL_A, BAD_TOKEN, "INVALID_TOKEN");
  await run(["websocket"]);
  await run(["polling"]);
  console.log("interop ok");
  process.exit(0);
} catch (e) {
  fail(e.stack || String(e));
}
