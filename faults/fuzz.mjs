// The socket fuzzer (RELIABILITY.md, "bad input at volume"): many raw websockets speaking
// engine.io v4 / Socket.IO v5 framing by hand against one running node, sending random and
// mutated packets of every client→server event of CONTRACT.md (random JSON of every shape,
// huge and deep values, wrong types, malformed Socket.IO packets, binary attachments with and
// without their frames, engine.io garbage, oversized and invalid-UTF-8 frames), plus a little
// long-polling garbage. Meanwhile a CONTROL pair on the official socket.io-client (a driver
// streaming positions on a trip, a passenger subscribed to it) must see every ack ok and every
// delivery. The node's RSS is sampled from /proc; its log is searched for panics at the end.
//
// What is checked, per packet: an event packet the Socket.IO parser decodes (`42[…]` with a
// plain string event name, any payload) that carries an ack id must be answered within 5 s,
// exactly once, with `{ok:true,…}` or `{ok:false,error:CODE}` of the contract's codes; a first
// argument nested deeper than 32 levels, holding a string over 1 KiB, not an object, or an
// unknown event must be refused (`INVALID_PAYLOAD`, or `RATE_LIMITED` by the socket's flood
// limit, which comes first). A connection may be closed by the server only after a packet
// that breaks the framing (those are counted per kind, as protocol closes); any other close
// is an incident. Every incident is written with the connection's last packets to INCIDENTS.
//
// env: URL (http://127.0.0.1:3410), SECRET, MINUTES (10), CONNS (40 concurrent fuzz sockets),
//      RATE (packets/s per socket, 12), NODE_PID, NODE_LOG, TRIPS (fuzz trip ids, comma),
//      OPEN_TRIPS (driverless trips, comma), CONTROL_TRIP, CONTROL_DRIVER, CONTROL_PASSENGER,
//      SEED, INCIDENTS (jsonl path), OUT (faults/fuzz-results.md; "" = no row), MODE (label),
//      RSS_LIMIT_MB (512), POLLING (1 = also fuzz the long-polling transport), NODE_COMMIT (of a prebuilt node)
import WebSocket from "ws";
import { io } from "socket.io-client";
import { createHmac, randomBytes } from "node:crypto";
import { readFileSync, appendFileSync, existsSync, writeFileSync } from "node:fs";
import { execSync } from "node:child_process";
import http from "node:http";

const env = process.env;
const URL_ = env.URL ?? "http://127.0.0.1:3410";
const SECRET = env.SECRET ?? "fleetcast-fuzz-secret-0123456789";
const MINUTES = Number(env.MINUTES ?? 10);
const CONNS = Number(env.CONNS ?? 40);
const RATE = Number(env.RATE ?? 12);
const NODE_PID = env.NODE_PID ? Number(env.NODE_PID) : null;
const NODE_LOG = env.NODE_LOG ?? null;
const TRIPS = (env.TRIPS ?? "fz-t1,fz-t2,fz-t3").split(",").filter(Boolean);
const OPEN_TRIPS = (env.OPEN_TRIPS ?? "").split(",").filter(Boolean);
const CONTROL_TRIP = env.CONTROL_TRIP ?? "ctl-trip";
const CONTROL_DRIVER = env.CONTROL_DRIVER ?? "ctl-driver";
const CONTROL_PASSENGER = env.CONTROL_PASSENGER ?? "ctl-passenger";
const INCIDENTS = env.INCIDENTS ?? "/tmp/fleetcast-fuzz-incidents.jsonl";
const OUT = env.OUT ?? "faults/fuzz-results.md";
const MODE = env.MODE ?? "embedded";
const RSS_LIMIT_MB = Number(env.RSS_LIMIT_MB ?? 512);
const POLLING = (env.POLLING ?? "1") === "1";
const SEED = Number(env.SEED ?? Math.floor(Math.random() * 2 ** 31));
const ACK_DEADLINE_MS = 5000;
const WS_MAX = 65536; // the node's default --ws-max-message-bytes
const u = new URL(URL_);
const HOST = u.hostname;
const PORT = Number(u.port);

// ---------------------------------------------------------------- randomness (seeded)
let s0 = SEED >>> 0 || 1;
function rnd() {
  // mulberry32
  s0 = (s0 + 0x6d2b79f5) >>> 0;
  let t = s0;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (n) => Math.floor(rnd() * n);
const pick = (a) => a[int(a.length)];
const chance = (p) => rnd() < p;
const bytes = (n) => Buffer.from(Array.from({ length: n }, () => int(256)));

// ---------------------------------------------------------------- tokens
const b64 = (o) => Buffer.from(typeof o === "string" ? o : JSON.stringify(o)).toString("base64url");
function sign(claims, { secret = SECRET, alg = "HS256", header } = {}) {
  const head = b64(header ?? { alg, typ: "JWT" });
  const body = b64(claims);
  if (alg === "none") return `${head}.${body}.`;
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}
const now = () => Math.floor(Date.now() / 1000);
const ROLES = ["DRIVER", "DRIVER", "DRIVER", "PASSENGER", "PASSENGER", "CONDUCTOR", "ADMIN", "BUSINESS", "SERVICE"];
const CHATS = ["c1", "c2", "c3"];
function grants() {
  const g = [];
  for (const c of CHATS) if (chance(0.6)) g.push(`chat:${c}`);
  if (chance(0.5)) g.push(`trip:${pick(TRIPS)}`);
  if (chance(0.2)) g.push(`trip:${CONTROL_TRIP}`);
  if (chance(0.3)) g.push("order:o1", "run:r1", "driver:fz-DRIVER-1", "room-x");
  if (chance(0.1)) g.push("x".repeat(300), "bad\u0000grant", "", "\u001f");
  if (chance(0.02)) for (let i = 0; i < 1001; i++) g.push(`g${i}`); // > 1,000 grants: not our token
  return g;
}
function userToken(sub, role, extra = {}) {
  return sign({ sub, role, tenant: "default", exp: now() + 7200, name: `fuzz ${sub}`, channels: grants().slice(0, 1000), ...extra });
}
// A handshake token that is sometimes not ours (more than 1,000 grants: INVALID_TOKEN).
function handshakeToken(sub, role) {
  const channels = grants();
  return { token: sign({ sub, role, tenant: "default", exp: now() + 7200, name: `fuzz ${sub}`, channels }), good: channels.length <= 1000 };
}

// ---------------------------------------------------------------- strings and JSON text
const UNICODE = ["é", "ß", "日本語", "🚕", "👩‍👩‍👧‍👦", "\u202e", "\u200b", "\ufeff", "ﷺ", "e\u0301", "\u{10ffff}", "𝕏"];
const NANLIKE = ["NaN", "Infinity", "-Infinity", "1e999", "0x10", "null", "true", "undefined", "-0", "", " ", "1,5"];
function randStr() {
  switch (int(14)) {
    case 0: return "";
    case 1: return pick(NANLIKE);
    case 2: return Array.from({ length: 1 + int(12) }, () => pick(UNICODE)).join("");
    case 3: return String.fromCharCode(...Array.from({ length: 1 + int(8) }, () => int(32))); // control chars
    case 4: return "x".repeat(pick([127, 128, 129, 200, 201, 1023, 1024, 1025, 1500, 4096]));
    case 5: return "é".repeat(pick([511, 512, 513])); // 2-byte chars around the 1 KiB bound
    case 6: return "🚕".repeat(pick([128, 129, 256, 257])); // 4-byte chars: 128 chars = 512 bytes
    case 7: return pick(["' OR 1=1 --", "%s%n%x", "../../etc/passwd", "<script>", "${jndi:x}", "a\nb", "a\u001fb", "a\u001eb", "trip:x:subscribers"]);
    case 8: return pick(TRIPS.concat(OPEN_TRIPS, [CONTROL_TRIP]));
    case 9: return `fz-${int(1e6)}`;
    case 10: return new Date(Date.now() + (int(2) ? 1 : -1) * int(1e7)).toISOString();
    case 11: return "y".repeat(int(40000)); // huge (< 64 KiB frame)
    default: return Math.random().toString(36).slice(2, 2 + int(20));
  }
}
const NUMBERS = ["0", "-0", "1", "-1", "3.14", "1e308", "-1e308", "1e309", "-1e400", "1e-400", "5e-324",
  "123456789012345678901234567890", "9007199254740993", "-9223372036854775809", "18446744073709551616",
  "0.1e1", "1E+2", "90", "90.0000001", "-90", "-90.0000001", "180", "180.000001", "-180.0000001", "359.9999",
  "360", "359.99999999999999", "-1e-300", "2147483648", "4294967296", "1.7976931348623157e308"];
function jNum() {
  return chance(0.6) ? pick(NUMBERS) : String((rnd() - 0.5) * 10 ** int(12));
}
const RAW_STRINGS = ['"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', '"\\uDBFF\\uDFFF"', '"\\/\\b\\f\\n\\r\\t"', '"\\u00e9"', '"\\x41"'];
function jStr() {
  return chance(0.08) ? pick(RAW_STRINGS) : JSON.stringify(randStr());
}
function jDeep(n) {
  return chance(0.5) ? "[".repeat(n) + "]".repeat(n) : '{"a":'.repeat(n) + "1" + "}".repeat(n);
}
function jAny(depth = 0) {
  const r = int(depth > 3 ? 5 : 14);
  switch (r) {
    case 0: return "null";
    case 1: return pick(["true", "false"]);
    case 2: return jNum();
    case 3: case 4: return jStr();
    case 5: case 6: return "[" + Array.from({ length: int(5) }, () => jAny(depth + 1)).join(",") + "]";
    case 7: case 8: return "{" + Array.from({ length: int(5) }, () => `${jStr()}:${jAny(depth + 1)}`).join(",") + "}";
    case 9: return jDeep(pick([30, 31, 32, 33, 34, 40, 127, 128, 129, 500, 1000, 5000]));
    case 10: return "[" + Array.from({ length: pick([1000, 5000, 10000]) }, () => int(10)).join(",") + "]"; // huge array
    case 11: return "{" + Array.from({ length: pick([100, 1000, 3000]) }, (_, i) => `"k${i}":${i}`).join(",") + "}"; // many keys
    case 12: return '{"lat":1,"lat":"x","lat":null}'; // duplicate keys
    default: return pick(['{"_placeholder":true,"num":0}', '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{}}}', `{${JSON.stringify("k".repeat(2000))}:1}`]);
  }
}
// A JS value serialized with mutations: fields dropped, nulled, retyped, duplicated, added.
const RAW = Symbol("raw");
function longKey(argText) {
  try { return measure(JSON.parse(argText)).key > 1024; } catch { return false; }
}
const raw = (t) => ({ [RAW]: t });
function ser(v, p) {
  if (v && typeof v === "object" && RAW in v) return v[RAW];
  if (chance(p * 0.3)) return jAny(2);
  if (Array.isArray(v)) return "[" + v.map((x) => ser(x, p)).join(",") + "]";
  if (v && typeof v === "object") {
    const parts = [];
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) continue;
      if (chance(p * 0.3)) continue; // dropped
      const val = chance(p * 0.2) ? "null" : ser(x, p);
      parts.push(`${JSON.stringify(k)}:${val}`);
      if (chance(p * 0.05)) parts.push(`${JSON.stringify(k)}:${jAny(2)}`); // duplicate key
    }
    if (chance(p * 0.3)) parts.push(`${jStr()}:${jAny(1)}`); // unknown field
    return "{" + parts.join(",") + "}";
  }
  return JSON.stringify(v) ?? "null";
}

// ---------------------------------------------------------------- the contract's events
const iso = (offsetMs = 0) => new Date(Date.now() + offsetMs).toISOString();
const tripId = () => (chance(0.85) ? pick(TRIPS.concat(OPEN_TRIPS, [CONTROL_TRIP])) : chance(0.5) ? raw(jStr()) : raw(jAny(1)));
const since = () => pick([undefined, `${Date.now()}-0`, "0-0", "1-1", "x", "18446744073709551616-0", "-1-1", raw(jAny(1))]);
const TIMESTAMPS = () => pick([iso(), iso(-5000), iso(59000), iso(61000), iso(-864e5 * 365 * 50), "2026-13-45T25:61:61Z", "2026-06-30T23:59:60Z",
  "+275760-09-13T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "0000-01-01T00:00:00Z", "2026-01-01T00:00:00+14:00", "2026-01-01", "now", "1700000000",
  "2026-01-01T00:00:00.123456789012345Z", raw(jNum())]);
const coord = (m) => pick([rnd() * 2 * m - m, m, -m, m + 1e-7, -m - 1e-7, 0, raw(jNum()), raw(jStr())]);
const EVENTS = {
  "driver:connect": () => ({ tripId: tripId() }),
  "driver:location:update": () => ({
    tripId: chance(0.6) ? tripId() : undefined, lat: coord(90), lng: coord(180),
    speed: chance(0.5) ? pick([0, 12.5, -1, 1e9, raw(jNum())]) : undefined,
    heading: chance(0.5) ? pick([0, 359.999, 360, -0.1, raw(jNum())]) : undefined,
    accuracy: chance(0.5) ? pick([0, 5, -3, raw(jNum())]) : undefined,
    timestamp: chance(0.5) ? TIMESTAMPS() : undefined,
  }),
  "driver:status": () => ({ tripId: tripId(), status: pick(["STARTED", "PAUSED", "ENDED", "EMERGENCY", "started", "FLYING", "", raw(jAny(1))]), timestamp: chance(0.5) ? TIMESTAMPS() : undefined }),
  "driver:subscribe": () => (chance(0.2) ? undefined : { filters: chance(0.2) ? raw(jAny(1)) : { maxDistance: pick([5, 0, -1, 200, 200.1, 1e308, raw(jNum())]), minEarnings: pick([0, -1, 10, raw(jNum())]), tripTypes: pick([["PRIVATE"], ["SHARED", "PRIVATE"], ["PRIVATE", "SHARED", "PRIVATE"], ["BUS"], [], "PRIVATE", raw(jAny(1))]) } }),
  "driver:unsubscribe": () => (chance(0.5) ? {} : undefined),
  "trip:offer:accept": () => ({ tripId: tripId() }),
  "trip:offer:decline": () => ({ tripId: tripId() }),
  "passenger:subscribe": () => (chance(0.5)
    ? { tripId: tripId(), since: chance(0.3) ? since() : undefined }
    : { tripIds: chance(0.2) ? raw(jAny(1)) : Array.from({ length: pick([0, 1, 2, 5, 6, 100, 101]) }, tripId), since: chance(0.3) ? raw(jAny(1)) : undefined }),
  "passenger:unsubscribe": () => ({ tripId: tripId() }),
  "conductor:scan": () => ({ token: pick([randStr(), sign({ booking: "b1", tenant: "default" }), sign({ sub: "b1" }, { secret: "wrong-secret-0123456789" }), raw(jAny(1))]) }),
  "admin:subscribe": () => (chance(0.3) ? undefined : { since: chance(0.5) ? since() : raw(jAny(1)) }),
  "room:join": () => {
    const room = pick(["chat:c1", "chat:c2", "chat:c9", "order:o1", "run:r1", "room-x", `trip:${CONTROL_TRIP}:subscribers`, `user:${CONTROL_PASSENGER}`, "admin:alerts", "x".repeat(201), randStr(), raw(jAny(1))]);
    return { room, token: chance(0.4) ? pick([sign({ sub: "?", room: typeof room === "string" ? room : "r", exp: now() + 600 }), randStr(), raw(jAny(1))]) : undefined, since: chance(0.3) ? since() : undefined };
  },
  "room:leave": () => ({ room: pick(["chat:c1", "order:o1", randStr(), raw(jAny(1))]) }),
  "chat:typing": () => ({ chatId: pick(CHATS.concat([randStr()])), isTyping: pick([true, false, "yes", 1, null]) }),
  "chat:read": () => ({ chatId: pick(CHATS.concat([randStr()])), messageId: pick(["m1", randStr(), "m".repeat(129)]) }),
  heartbeat: () => pick([undefined, {}, { pad: randStr() }]),
  "auth:refresh": () => ({ token: pick([randStr(), sign({ sub: "fz-DRIVER-1", role: "DRIVER", exp: now() - 10 }), sign({ sub: "fz", role: "DRIVER", exp: now() + 7200 }, { alg: "none" }), raw(jAny(1))]) }),
  // v1.1 (CONTRACT §7).
  "area:subscribe": () => ({ areaId: pick(["a1", "", "a".repeat(65), raw(jAny(1))]), bbox: chance(0.5) ? [2.2, 48.8, 2.4, 48.9] : undefined, center: chance(0.5) ? { lat: coord(90), lng: coord(180) } : undefined, radiusKm: pick([1, 50, 51, -1, raw(jNum())]), intervalMs: pick([250, 249, 1000, raw(jNum())]), availability: pick([["AVAILABLE"], ["BUSY", "X"], raw(jAny(1))]) }),
  "area:unsubscribe": () => ({ areaId: pick(["a1", raw(jAny(1))]) }),
  "user:sync": () => ({ since: since() }),
};
const EVENT_NAMES = Object.keys(EVENTS);
// Events the node handles (socket/handlers/mod.rs); the others must be answered INVALID_PAYLOAD.
const HANDLED = new Set(["driver:connect", "driver:location:update", "driver:status", "passenger:subscribe", "passenger:unsubscribe", "admin:subscribe",
  "heartbeat", "room:join", "room:leave", "chat:typing", "chat:read", "driver:subscribe", "driver:unsubscribe", "trip:offer:accept", "trip:offer:decline",
  "conductor:scan", "auth:refresh", "area:subscribe", "area:unsubscribe", "user:sync"]);
const CODES = new Set(["INVALID_PAYLOAD", "FORBIDDEN", "NOT_FOUND", "RATE_LIMITED", "SUBSCRIPTION_LIMIT", "CONFLICT", "UNAVAILABLE", "INTERNAL", "INVALID_TOKEN"]);

// What the contract says must happen to the first argument (the payload), or null.
// Depth (every value a level, as the node counts: {"a":1} is 2), longest string value and
// longest key, in bytes; iterative, for values thousands of levels deep.
function measure(root) {
  let depth = 0, str = 0, key = 0;
  const stack = [[root, 1]];
  while (stack.length) {
    const [v, d] = stack.pop();
    depth = Math.max(depth, d);
    if (typeof v === "string") str = Math.max(str, Buffer.byteLength(v));
    else if (Array.isArray(v)) for (const x of v) stack.push([x, d + 1]);
    else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) { key = Math.max(key, Buffer.byteLength(k)); stack.push([x, d + 1]); }
  }
  return { depth, str, key };
}
function mustRefuse(name, argText) {
  if (!HANDLED.has(name)) return "unknown event";
  if (argText === undefined) return null;
  let v;
  try {
    v = JSON.parse(argText);
  } catch {
    return "not JSON";
  }
  if (v === null) return null;
  if (typeof v !== "object" || Array.isArray(v)) return "not an object";
  // Whether a scalar inside the 32nd container is "deeper than 32" is left to the node: only
  // past 34 levels must it refuse.
  const m = measure(v);
  if (m.depth > 34) return "deeper than 32";
  if (m.str > 1024) return "string over 1 KiB";
  return null;
}

// ---------------------------------------------------------------- packets
// kind: label; must: an ack id the node must answer; refuse: the reason it must refuse;
// closes: may legitimately close the connection (breaks the framing).
function eventName() {
  if (chance(0.92)) return { name: pick(EVENT_NAMES), label: null };
  const n = pick(["no:such:event", "", "x".repeat(5000), "🚕:update", "driver:location:update ", "DRIVER:CONNECT", "constructor", "__proto__", "message", "connect", "disconnect", 'quote"name', "tab\tname", "back\\slash"]);
  return { name: n, label: "odd-name" };
}
function payloadArgs(name) {
  const gen = Object.hasOwn(EVENTS, name) ? EVENTS[name] : () => ({ tripId: tripId(), x: raw(jAny(1)) });
  const p = chance(0.15) ? 1 : chance(0.5) ? 0.15 : 0;
  const shape = int(20);
  let args;
  if (shape === 0) args = []; // no payload
  else if (shape === 1) args = ["null"];
  else if (shape === 2) args = [jAny(0)]; // any shape
  else if (shape === 3) args = [ser(gen(), p), jAny(1)]; // extra argument
  else if (shape === 4) { const o = ser(gen() ?? {}, p); args = [o.replace(/}$/, (o.length > 2 ? "," : "") + `"deep":${jDeep(pick([33, 40, 200, 1000]))}}`)]; } // deep inside a valid payload
  else if (shape === 5) { const o = ser(gen() ?? {}, p); args = [o.replace(/}$/, (o.length > 2 ? "," : "") + `"pad":${JSON.stringify("z".repeat(pick([1024, 1025, 30000])))}}`)]; }
  else { const g = gen(); args = g === undefined ? [] : [ser(g, p)]; }
  return args;
}
class Conn {
  constructor(id, clean) {
    this.id = id;
    this.clean = clean;
    this.nextAck = int(1000);
    this.pending = new Map(); // normalized ack id → {sentAt, kind, must, refuse}
    this.answered = new Set();
    this.log = []; // last packets
    this.lastCloser = null; // last packet that may close the connection
    this.closedByUs = false;
    this.open = false;
    this.connected = false;
    this.binaryWaiting = 0; // attachments announced and not sent
  }
  // The last packets, whole (an incident writes them out; faults/fuzz-replay.mjs sends them again).
  record(kind, data) {
    const e = { at: Date.now(), kind, data, frame: kind === "invalid-utf8-text" ? "text" : typeof data === "string" ? "text" : "binary" };
    this.log.push(e);
    if (this.log.length > 30) this.log.shift();
    recent.push({ conn: this.id, ...e });
    if (recent.length > 200) recent.shift();
  }
}

// ---------------------------------------------------------------- stats
const stats = {
  packets: 0, bytes: 0, byKind: {}, connsOpened: 0, connsConnected: 0, connectErrors: {}, handshakeNoAnswer: 0,
  acksChecked: 0, acksAnswered: 0, acksTimedOut: 0, acksDuplicate: 0, acksBadShape: 0, acksLatencies: [], ackCodes: {},
  acksOptional: 0, acksOptionalAnswered: 0, refusalsChecked: 0, refusalViolations: 0, internalAcks: 0, unavailableAcks: 0, unknownEventAnswered: {},
  protocolCloses: {}, protocolCloseCodes: {}, unexplainedCloses: 0, acksCutByProtocolClose: 0, acksCutUnexplained: 0, wsErrors: 0, expiredCloses: 0,
  polling: { requests: 0, statuses: {}, acksChecked: 0, acksAnswered: 0, acksTimedOut: 0, errors: 0 },
};
const recent = [];
const incidents = [];
const count = (m, k, n = 1) => (m[k] = (Object.hasOwn(m, k) ? m[k] : 0) + n);
function kindStat(kind) {
  return (stats.byKind[kind] ??= { sent: 0, acked: 0, unanswered: 0, closes: 0, codes: {} });
}
const wire = (e) => ({ at: e.at, conn: e.conn, kind: e.kind, frame: e.frame, len: e.data.length ?? 0,
  ...(typeof e.data === "string" ? { text: e.data } : { base64: Buffer.from(e.data).toString("base64") }) });
function incident(type, conn, extra = {}) {
  const rec = { at: new Date().toISOString(), type, conn: conn?.id, clean: conn?.clean, eioSid: conn?.eioSid, sub: conn?.sub, role: conn?.role, path: conn?.path, ...extra,
    lastPackets: (conn ? conn.log : recent.slice(-100)).map(wire) };
  incidents.push({ type, conn: conn?.id, ...extra });
  appendFileSync(INCIDENTS, JSON.stringify(rec) + "\n");
}

// ---------------------------------------------------------------- one raw connection
const ADDRS = Array.from({ length: 40 }, (_, i) => `127.0.0.${10 + i}`);
let running = true;
let connSeq = 0;

function send(c, ws, kind, data, { must = false, refuse = null, closes = false, ackId = null, name = null, force = false } = {}) {
  if (ws.readyState !== WebSocket.OPEN) return false;
  // Back-pressure: skip a packet while the socket has 1 MB queued (never an attachment of a
  // packet already sent: a missing attachment breaks the framing).
  if (!force && ws.bufferedAmount > 1 << 20) return false;
  const isText = typeof data === "string";
  // Past the node's websocket message bound anything may close the connection.
  if ((isText ? Buffer.byteLength(data) : data.length) + 1 > WS_MAX) { closes = true; must = false; refuse = null; }
  stats.packets += 1;
  stats.bytes += isText ? Buffer.byteLength(data) : data.length;
  kindStat(kind).sent += 1;
  c.record(kind, data);
  if (closes) c.lastCloser = { kind, at: Date.now() };
  if (ackId !== null) {
    const key = BigInt(ackId).toString();
    c.pending.set(key, { sentAt: Date.now(), kind, must, refuse, name });
    if (must) stats.acksChecked += 1;
    else stats.acksOptional += 1;
    if (refuse) stats.refusalsChecked += 1;
  }
  if (kind === "invalid-utf8-text") ws.send(data, { binary: false });
  else ws.send(data, { binary: !isText });
  return true;
}

function eventPacket(c, { type = "2", attachments = null, ns = "", ack = true, name, args }) {
  const ackId = ack ? c.nextAck++ : null;
  const head = type === "5" ? `5${attachments}-` : type;
  const body = "[" + [JSON.stringify(name)].concat(args).join(",") + "]";
  return { text: `4${head}${ns}${ackId ?? ""}${body}`, ackId };
}

// One random packet (or a few frames) on a connected socket.
function fuzzOne(c, ws) {
  const r = c.clean ? rnd() * 0.8 : rnd();
  if (r < 0.7) {
    // A well-formed event: the node must answer it.
    let { name, label } = eventName();
    let args = payloadArgs(name);
    // A clean socket sends nothing the parser may refuse (that may close it).
    for (let i = 0; c.clean && i < 20 && (/["\\\u0000-\u001f]/.test(name) || !decodable(name, args)); i++) {
      ({ name, label } = eventName());
      args = payloadArgs(name);
    }
    const ack = chance(0.9);
    const escaped = /["\\\u0000-\u001f]/.test(name);
    const { text, ackId } = eventPacket(c, { name, args, ack });
    const size = Buffer.byteLength(text) + 1;
    if (size > WS_MAX) return send(c, ws, "oversize-event", text, { closes: true, ackId, must: false });
    // Text the JSON reader cannot read as a whole (a truncated or invalid value, an escaped
    // lone surrogate): the Socket.IO parser may refuse the packet, unanswered, but the
    // connection stays.
    if (!decodable(name, args)) return send(c, ws, "event-undecodable-json", text, { ackId, must: false, closes: false, name });
    const refuse = mustRefuse(name, args[0]);
    const kind = escaped ? "event-escaped-name" : label ? `event-${label}` : refuse ? `event-refused(${refuse})` : args[0] !== undefined && longKey(args[0]) ? "event-key-over-1KiB" : "event";
    return send(c, ws, kind, text, { ackId, must: !escaped, refuse, closes: false, name });
  }
  if (r < 0.8) {
    // Framing that stays decodable: acks, namespaces, ack-id forms, fragmented frames, pings.
    switch (int(9)) {
      case 0: return send(c, ws, "client-ack-unknown-id", `43${int(1e6)}[${jAny(1)}]`);
      case 1: { const { text } = eventPacket(c, { ns: "/nope,", name: "heartbeat", args: ["{}"], ack: false }); return send(c, ws, "event-unknown-namespace", text); }
      case 2: { // leading zeros in the ack id: the node answers with the number
        const id = c.nextAck++;
        return send(c, ws, "event-ackid-leading-zeros", `4200${id}["heartbeat",{}]`, { ackId: id, must: true });
      }
      case 3: { // an ack id past i64: the parser reads it as no ack
        const { text } = eventPacket(c, { name: "heartbeat", args: ["{}"], ack: false });
        return send(c, ws, "event-ackid-overflow", text.replace(/^42/, "4299999999999999999999"));
      }
      case 4: return send(c, ws, "eio-ping-from-client", pick(["2", "3"]));
      case 5: { // the same event split over websocket continuation frames
        if (ws.readyState !== WebSocket.OPEN) return false;
        const { text, ackId } = eventPacket(c, { name: "heartbeat", args: ["{}"] });
        const cut = 1 + int(text.length - 1);
        stats.packets += 1; kindStat("event-fragmented").sent += 1; c.record("event-fragmented", text);
        c.pending.set(BigInt(ackId).toString(), { sentAt: Date.now(), kind: "event-fragmented", must: true, refuse: null });
        stats.acksChecked += 1;
        ws.send(text.slice(0, cut), { fin: false });
        ws.send(text.slice(cut), { fin: true });
        return true;
      }
      case 6: { // binary event with every attachment: decodable
        const n = 1 + int(3);
        const places = Array.from({ length: n }, (_, i) => `{"_placeholder":true,"num":${i}}`);
        const name = pick(EVENT_NAMES);
        const { text, ackId } = eventPacket(c, { type: "5", attachments: n, name, args: [chance(0.5) ? `{"tripId":${places[0]},"x":[${places.slice(1).join(",")}]}` : `[${places.join(",")}]`] });
        const sizes = Array.from({ length: n }, () => pick([0, 1, 100, 1000, 60000]));
        // Attachments that add up past one message's bound close the connection, like one
        // message past it (--ws-max-message-bytes).
        const over = Buffer.byteLength(text) + sizes.reduce((a, b) => a + b, 0) + 1 > WS_MAX;
        if (!send(c, ws, "binary-event-complete", text, over ? { ackId, must: false, closes: true } : { ackId, must: true })) return false;
        for (const size of sizes) send(c, ws, "binary-attachment", bytes(size), { force: true, closes: over });
        return true;
      }
      case 7: { // binary event whose placeholders name attachments that do not exist
        const { text, ackId } = eventPacket(c, { type: "5", attachments: 1, name: "heartbeat", args: [pick(['{"a":{"_placeholder":true,"num":7}}', '{"a":{"_placeholder":true,"num":-1}}', '{"a":{"_placeholder":true}}', '{"a":{"_placeholder":"yes","num":"0"}}'])] });
        if (!send(c, ws, "binary-event-bad-placeholder", text, { ackId, must: true })) return false;
        send(c, ws, "binary-attachment", bytes(10), { force: true });
        return true;
      }
      default: { // ws ping frames with payload (the server answers them itself)
        if (ws.readyState === WebSocket.OPEN) ws.ping(bytes(int(125)));
        kindStat("ws-ping").sent += 1; stats.packets += 1;
        return true;
      }
    }
  }
  // Framing the parsers refuse. A text packet the Socket.IO parser cannot decode may go
  // unanswered but must not close the connection (CONTRACT §6: closes false); attachment
  // errors, a second connect, a disconnect and engine.io framing errors may close it.
  const closers = [
    () => send(c, ws, "sio-bad-type", `4${pick(["7", "8", "9", "a", "-", " ", "é"])}${jAny(1)}`, { closes: false }),
    () => send(c, ws, "sio-ack-without-id", `43[${jAny(1)}]`, { closes: false }),
    () => send(c, ws, "sio-event-not-array", `42${int(2) ? int(1e4) : ""}${pick([jAny(1), "{}", '"heartbeat"', "5", "", "[]", "[5]", "[null]", '["heartbeat"', "[", "]"])}`, { closes: false }),
    () => send(c, ws, "sio-event-truncated", (() => { const { text } = eventPacket(c, { name: pick(EVENT_NAMES), args: payloadArgs("heartbeat"), ack: false }); return text.slice(0, 2 + int(text.length - 2)); })(), { closes: false }),
    () => send(c, ws, "sio-ackid-negative", `42-${int(100)}["heartbeat",{}]`, { closes: false }),
    () => send(c, ws, "sio-namespace-no-comma", `42/${randStr().replace(/,/g, "")}`, { closes: false }),
    () => terminal(c, send(c, ws, "sio-connect-again", `40${JSON.stringify({ token: userToken(c.sub, c.role) })}`, { closes: true })),
    () => terminal(c, send(c, ws, "sio-disconnect", "41", { closes: true })),
    () => { // attachments announced, never sent, then a text packet
      const { text } = eventPacket(c, { type: "5", attachments: 1 + int(3), name: "heartbeat", args: ['{"a":{"_placeholder":true,"num":0}}'] });
      if (!send(c, ws, "binary-missing-attachments", text, { closes: true })) return false;
      return send(c, ws, "event-after-missing-attachments", '42["heartbeat",{}]', { closes: true, force: true });
    },
    () => send(c, ws, "binary-attachment-unannounced", bytes(1 + int(2000)), { closes: true }),
    () => send(c, ws, "binary-bad-count", `45${pick(["", "x", "-1", "99999999999999999999", "10001"])}-["heartbeat",{}]`, { closes: true }),
    () => { // many attachments announced, a few sent: the parser buffers them (bounded by its config)
      const { text } = eventPacket(c, { type: "5", attachments: 10000, name: "heartbeat", args: ['{"a":{"_placeholder":true,"num":0}}'] });
      if (!send(c, ws, "binary-hoard", text, { closes: true })) return false;
      for (let i = 0; i < 40; i++) send(c, ws, "binary-hoard-attachment", bytes(60000), { force: true });
      return terminal(c, true); // then idle, holding the node's partial-packet buffer
    },
    () => send(c, ws, "eio-probe-outside-upgrade", pick(["2probe", "3probe", "5"]), { closes: true }),
    () => send(c, ws, "eio-unknown-type", pick(["", "7", "8", "9", "x", "6", "5", "0", "1", "b4AAAA", "4", "\u0000"]) + (int(2) ? jAny(1) : ""), { closes: true }),
    () => send(c, ws, "eio-oversize", "4" + "2" + JSON.stringify(["heartbeat", { pad: "p".repeat(WS_MAX + int(200000)) }]), { closes: true }),
    () => send(c, ws, "invalid-utf8-text", Buffer.concat([Buffer.from('42["heartbeat",{"a":"'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}]')]), { closes: true }),
  ];
  return pick(closers)();
}

// After leaving the namespace (or connecting again) this socket sends nothing more; what it
// had in flight may go unanswered (a disconnected socket's acks are dropped).
function terminal(c, sent) {
  c.terminal = true;
  for (const p of c.pending.values()) if (p.must) { p.must = false; stats.acksChecked -= 1; stats.acksOptional += 1; }
  return sent;
}

// Whether the JSON reader reads the event array as a whole (not truncated, no invalid value,
// no escaped lone surrogate).
function decodable(name, args) {
  if (args.some((a) => /\\u[dD][89a-fA-F][0-9a-fA-F]{2}/.test(a))) return false;
  try { JSON.parse("[" + [JSON.stringify(name)].concat(args).join(",") + "]"); return true; } catch { return false; }
}

// Checks an ack packet `43<id>[...]` against what was sent.
function onAck(c, idText, dataText) {
  const key = BigInt(idText).toString();
  const p = c.pending.get(key);
  if (!p) {
    if (c.answered.has(key)) {
      stats.acksDuplicate += 1;
      incident("duplicate-ack", c, { ackId: key, data: dataText.slice(0, 500) });
    }
    return;
  }
  c.pending.delete(key);
  c.answered.add(key);
  const ms = Date.now() - p.sentAt;
  kindStat(p.kind).acked += 1;
  if (p.must) {
    stats.acksAnswered += 1;
    stats.acksLatencies.push(ms);
    if (ms > ACK_DEADLINE_MS) {
      stats.acksTimedOut += 1; // answered, but late
      incident("late-ack", c, { ackId: key, kind: p.kind, ms });
    }
  } else stats.acksOptionalAnswered += 1;
  let body;
  try {
    body = JSON.parse(dataText);
  } catch {
    body = undefined;
  }
  const a = Array.isArray(body) ? body[0] : undefined;
  const shapeOk = Array.isArray(body) && body.length === 1 && a && typeof a === "object" && typeof a.ok === "boolean" && (a.ok || CODES.has(a.error));
  if (!shapeOk) {
    stats.acksBadShape += 1;
    incident("bad-ack-shape", c, { ackId: key, kind: p.kind, data: dataText.slice(0, 500) });
    return;
  }
  count(stats.ackCodes, a.ok ? "OK" : a.error);
  count(kindStat(p.kind).codes, a.ok ? "OK" : a.error);
  if (a.error === "INTERNAL") {
    stats.internalAcks += 1;
    incident("internal-ack", c, { ackId: key, kind: p.kind, data: dataText.slice(0, 500) });
  }
  // The node's dependencies are healthy here: UNAVAILABLE is a wrong answer (or an overload).
  if (a.error === "UNAVAILABLE") {
    stats.unavailableAcks += 1;
    incident("unavailable-ack", c, { ackId: key, kind: p.kind, data: dataText.slice(0, 500) });
  }
  if (a.message === "unknown event") count(stats.unknownEventAnswered, String(p.name).slice(0, 40));
  if (p.refuse && a.ok !== false) {
    stats.refusalViolations += 1;
    incident("accepted-what-must-be-refused", c, { ackId: key, kind: p.kind, reason: p.refuse, data: dataText.slice(0, 500) });
  } else if (p.refuse && !["INVALID_PAYLOAD", "RATE_LIMITED"].includes(a.error)) {
    stats.refusalViolations += 1;
    incident("wrong-refusal-code", c, { ackId: key, kind: p.kind, reason: p.refuse, data: dataText.slice(0, 500) });
  }
}

function sweep(c, final = false) {
  const t = Date.now();
  for (const [key, p] of c.pending) {
    if (t - p.sentAt <= ACK_DEADLINE_MS && !final) continue;
    c.pending.delete(key);
    if (p.must) {
      stats.acksTimedOut += 1;
      kindStat(p.kind).unanswered += 1;
      incident("ack-timeout", c, { ackId: key, kind: p.kind, waitedMs: t - p.sentAt });
    } else kindStat(p.kind).unanswered += 1;
  }
}

// A handshake: usually a valid token; sometimes a broken one (connect_error expected).
function handshake(c) {
  const role = pick(ROLES);
  const sub = chance(0.05) ? "fz-hot" : `fz-${role}-${1 + int(20)}`;
  c.sub = sub;
  c.role = role;
  if (chance(0.85)) {
    const { token, good } = handshakeToken(sub, role);
    return { text: `40${JSON.stringify({ token: chance(0.2) ? `Bearer ${token}` : token })}`, good };
  }
  const bad = pick([
    "40", '40{"token":""}', '40{"token":5}', '40{"token":null}', "40[1,2]", '40"tok"', '40{"token":"a.b.c"}', `40{"token":${JSON.stringify(sign({ sub, role, exp: now() - 5 }))}}`,
    `40{"token":${JSON.stringify(sign({ sub, role, exp: now() + 600 }, { alg: "none" }))}}`, `40{"token":${JSON.stringify(sign({ sub, role: "PILOT", exp: now() + 600 }))}}`,
    `40{"token":${JSON.stringify(sign({ sub, role, exp: now() + 600 }, { secret: "another-secret-0123456789" }))}}`, `40{"token":${JSON.stringify(sign({ role, exp: now() + 600 }))}}`,
    `40{"token":${JSON.stringify(sign({ sub: "x".repeat(129), role, exp: now() + 600 }))}}`, `40{"token":${JSON.stringify(sign({ sub, role, tenant: "a\u001fb", exp: now() + 600 }))}}`,
    `40{"token":${JSON.stringify(sign({ sub, role, exp: "tomorrow" }))}}`, `40{"token":${JSON.stringify(sign({ sub, role, exp: 1e300 }))}}`,
    `40{"token":${JSON.stringify(sign({ sub, role, exp: now() + 600 }, { header: { alg: "HS384", typ: "JWT" } }))}}`, `40${jDeep(300)}`, `40{"token":"${"t".repeat(50000)}"}`,
    '40{"token":"ey', "40/nope,", `40/nope,${JSON.stringify({ token: userToken(sub, role) })}`,
  ]);
  return { text: bad, good: false };
}

function runConn() {
  const c = new Conn(++connSeq, chance(0.7));
  stats.connsOpened += 1;
  const path = chance(0.9) ? "/socket.io/" : "/api/socket/";
  c.path = path;
  const ws = new WebSocket(`ws://${HOST}:${PORT}${path}?EIO=4&transport=websocket${chance(0.05) ? "&t=" + randStr().slice(0, 20) : ""}`, {
    localAddress: pick(ADDRS), perMessageDeflate: false, maxPayload: 100 << 20, handshakeTimeout: 10000,
  });
  const lifetime = 3000 + int(45000);
  let timer = null;
  let sweeper = null;
  let hs = null;
  let ended = false;
  const finish = () => {
    if (ended) return;
    ended = true;
    clearTimeout(timer);
    clearInterval(sweeper);
    if (running) setTimeout(runConn, int(200));
  };
  const stop = () => { // stop sending, let pending acks land, then close
    clearTimeout(timer);
    const wait = () => {
      sweep(c);
      if (c.pending.size === 0 || ws.readyState !== WebSocket.OPEN) {
        c.closedByUs = true;
        try { ws.close(1000); } catch { /* closed */ }
        setTimeout(() => { try { ws.terminate(); } catch { /* gone */ } finish(); }, 1000);
      } else setTimeout(wait, 200);
    };
    wait();
  };
  const tick = () => {
    if (!running || Date.now() - c.startedAt > lifetime) return stop();
    if (c.connected && !c.terminal) {
      const burst = chance(0.01) ? 60 + int(120) : 1; // sometimes past the flood limit (50/s, burst 100)
      for (let i = 0; i < burst; i++) fuzzOne(c, ws);
    }
    timer = setTimeout(tick, (1000 / RATE) * (0.5 + rnd()));
  };
  ws.on("open", () => { c.open = true; c.startedAt = Date.now(); });
  ws.on("message", (data, isBinary) => {
    if (isBinary) return;
    const m = data.toString();
    if (m[0] === "0") {
      try { c.eioSid = JSON.parse(m.slice(1)).sid; } catch { /* none */ }
      hs = handshake(c);
      send(c, ws, hs.good ? "handshake" : "handshake-bad", hs.text, { closes: !hs.good });
      setTimeout(() => { if (!c.connected && !c.refused && !ended) { stats.handshakeNoAnswer += 1; stop(); } }, 5000);
      if (!hs.good) { // a few packets on a refused connection, then go
        setTimeout(() => { send(c, ws, "event-before-connect", '42["heartbeat",{}]', { closes: true }); }, 100);
        setTimeout(stop, 1500);
      }
      sweeper = setInterval(() => sweep(c), 500);
    } else if (m === "2") {
      ws.send("3");
    } else if (m.startsWith("40")) {
      if (!c.connected) { c.connected = true; stats.connsConnected += 1; tick(); }
    } else if (m.startsWith("44/")) {
      c.refused = true;
      count(stats.connectErrors, "(namespace)");
    } else if (m.startsWith("44") && c.connected) { // answer to a second connect packet
      let msg = "?";
      try { msg = JSON.parse(m.slice(2)).message; } catch { /* keep ? */ }
      count(stats.connectErrors, `(connect again) ${msg}`);
    } else if (m.startsWith("44")) {
      c.refused = true;
      let msg = "?";
      try { msg = JSON.parse(m.slice(2)).message; } catch { /* keep ? */ }
      count(stats.connectErrors, msg);
      if (hs?.good && msg !== "RATE_LIMITED") incident("good-token-refused", c, { message: msg });
      if (!hs?.good && !["NO_TOKEN", "INVALID_TOKEN", "RATE_LIMITED"].includes(msg)) incident("connect-error-message", c, { message: msg });
      if (hs?.good) stop();
    } else if (m.startsWith("43")) {
      const mm = /^43(\d+)(.*)$/s.exec(m);
      if (mm) onAck(c, mm[1], mm[2]);
    } else if (m.startsWith('42["server:auth:expired"')) {
      c.expired = true;
    }
  });
  ws.on("error", () => { stats.wsErrors += 1; });
  ws.on("close", (code, reason) => {
    if (!c.closedByUs) {
      const cutBy = c.lastCloser && Date.now() - c.lastCloser.at < 5000 ? c.lastCloser : null;
      if (cutBy) {
        count(stats.protocolCloses, cutBy.kind);
        count(stats.protocolCloseCodes, `${cutBy.kind} ${code}`);
        kindStat(cutBy.kind).closes += 1;
        for (const p of c.pending.values()) if (p.must) stats.acksCutByProtocolClose += 1;
      } else if (c.expired) {
        stats.expiredCloses += 1;
      } else if (c.open) {
        stats.unexplainedCloses += 1;
        let n = 0;
        for (const p of c.pending.values()) if (p.must) n += 1;
        stats.acksCutUnexplained += n;
        incident("unexplained-close", c, { code, reason: reason?.toString(), pendingMustAcks: n });
      }
      c.pending.clear();
    } else {
      sweep(c, false);
      for (const [k, p] of c.pending) {
        c.pending.delete(k);
        if (p.must) { stats.acksTimedOut += 1; incident("ack-timeout", c, { ackId: k, kind: p.kind, atClose: true }); }
      }
    }
    finish();
  });
}

// ---------------------------------------------------------------- long-polling garbage
// Bodies always carry a Content-Length: Node frames no body of a GET, DELETE or OPTIONS by
// itself, and unframed bytes would be read as the start of the next request on the same
// keep-alive connection (the fuzzer's own desync, not the node's).
function req(method, path, body, headers = {}) {
  return new Promise((resolve) => {
    const length = body === undefined ? {} : { "content-length": Buffer.byteLength(body) };
    const r = http.request({ host: HOST, port: PORT, method, path, agent: false, headers: { "content-type": "text/plain;charset=UTF-8", ...length, ...headers }, timeout: 8000, localAddress: pick(ADDRS) }, (res) => {
      const chunks = [];
      res.on("data", (d) => chunks.push(d));
      res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
    });
    r.on("timeout", () => r.destroy(new Error("timeout")));
    r.on("error", () => resolve({ status: "error", body: "" }));
    if (body !== undefined) r.write(body);
    r.end();
  });
}
async function pollingRound() {
  const P = stats.polling;
  const tally = (res) => {
    P.requests += 1;
    count(P.statuses, String(res.status));
    if (typeof res.status === "number" && res.status >= 500) incident("polling-5xx", null, { status: res.status, body: res.body.slice(0, 300) });
  };
  const kind = int(3);
  if (kind === 0) { // weird handshakes and unknown sessions
    const q = pick(["EIO=3&transport=polling", "EIO=5&transport=polling", "EIO=abc&transport=polling", "EIO=4&transport=flash", "EIO=4", "transport=polling",
      "EIO=4&transport=polling&sid=" + randomBytes(8).toString("base64url"), "EIO=4&transport=polling&j=0", "EIO=4&transport=websocket", "EIO=4&transport=polling&sid=" + "s".repeat(5000)]);
    tally(await req(pick(["GET", "POST", "PUT", "DELETE", "OPTIONS"]), `/socket.io/?${q}`, chance(0.5) ? jAny(1) : undefined));
    return;
  }
  const open = await req("GET", "/socket.io/?EIO=4&transport=polling");
  tally(open);
  const m = /^0(\{.*\})/.exec(open.body);
  if (!m) return;
  const sid = JSON.parse(m[1]).sid;
  const path = `/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`;
  if (kind === 1) { // garbage bodies on a live session
    const body = pick([
      () => bytes(1 + int(3000)), () => "\u001e\u001e", () => "b" + randomBytes(20).toString("base64"), () => "b!!!notbase64", () => "x".repeat(70000),
      () => "7\u001e8\u001e9", () => `40{"token":"x"}\u001e42["heartbeat"`, () => Array.from({ length: 200 }, () => "2").join("\u001e"), () => jAny(0), () => "",
    ])();
    tally(await req("POST", path, body));
    tally(await req("GET", path));
    return;
  }
  // A connected polling session: events with acks, answered on the next GETs.
  const sub = `fz-poll-${int(5)}`;
  const hello = await req("POST", path, `40${JSON.stringify({ token: userToken(sub, pick(ROLES)) })}`);
  tally(hello);
  const first = await req("GET", path);
  tally(first);
  if (!first.body.includes("40{")) return;
  const want = new Map();
  const parts = [];
  for (let i = 0; i < 1 + int(8); i++) {
    const id = 1000 + i;
    const name = pick(EVENT_NAMES);
    const args = payloadArgs(name);
    const text = `42${id}` + "[" + [JSON.stringify(name)].concat(args).join(",") + "]";
    // Only packets the parser reads (one it refuses closes the whole session), under the body bound.
    if (Buffer.byteLength(text) > 30000 || !decodable(name, args) || text.includes("\u001e")) continue;
    parts.push(text);
    want.set(String(id), Date.now());
  }
  const posted = await req("POST", path, parts.join("\u001e"));
  tally(posted);
  P.acksChecked += want.size;
  const deadline = Date.now() + ACK_DEADLINE_MS;
  const answers = [{ connect: hello.status, first: first.body.slice(0, 300), post: posted.status, postBody: posted.body.slice(0, 300) }];
  while (want.size && Date.now() < deadline) {
    const r = await req("GET", path);
    tally(r);
    answers.push({ status: r.status, body: r.body.slice(0, 2000) });
    if (r.status !== 200) break;
    for (const pkt of r.body.split("\u001e")) {
      const a = /^43(\d+)/.exec(pkt);
      if (a && want.delete(a[1])) P.acksAnswered += 1;
      if (pkt === "2") await req("POST", path, "3");
    }
  }
  if (want.size) {
    P.acksTimedOut += want.size;
    incident("polling-ack-timeout", null, { sid, packets: parts, missing: [...want.keys()], answers });
  }
  await req("POST", path, "1");
}
async function pollingLoop() {
  while (running) {
    try { await pollingRound(); } catch { stats.polling.errors += 1; }
    await new Promise((r) => setTimeout(r, 100 + int(300)));
  }
}

// ---------------------------------------------------------------- the control pair
const control = { foreignEvents: 0, locationsSent: 0, locationsOk: 0, locationsRefused: {}, locationsTimedOut: 0, delivered: 0, lost: 0, heartbeatsOk: 0, heartbeatsFailed: 0, maxAckMs: 0, disconnects: 0, connectErrors: 0 };
const ctlSeen = new Set();
const ctlAcked = new Set();
let ctlDriver;
let ctlPassenger;
async function ctlAck(sock, event, payload) {
  const t = Date.now();
  try {
    const r = await sock.timeout(ACK_DEADLINE_MS).emitWithAck(event, payload);
    control.maxAckMs = Math.max(control.maxAckMs, Date.now() - t);
    return r;
  } catch {
    return { timedOut: true };
  }
}
function ctlSocket(sub, role) {
  const s = io(URL_, { auth: { token: sign({ sub, role, tenant: "default", exp: now() + 7200 }) }, transports: ["websocket"], reconnection: false, localAddress: "127.0.0.1" });
  s.on("disconnect", (reason) => { if (running) { control.disconnects += 1; incident("control-disconnect", null, { sub, reason }); } });
  s.on("connect_error", (e) => { control.connectErrors += 1; incident("control-connect-error", null, { sub, message: e.message }); });
  return s;
}
async function startControl() {
  ctlPassenger = ctlSocket(CONTROL_PASSENGER, "PASSENGER");
  ctlDriver = ctlSocket(CONTROL_DRIVER, "DRIVER");
  await Promise.all([ctlPassenger, ctlDriver].map((s) => new Promise((r) => s.once("connect", r))));
  ctlPassenger.on("server:location:update", (l) => { if (l.tripId === CONTROL_TRIP) ctlSeen.add(Math.round((l.lat - 10) * 1e5)); });
  // Nothing else reaches the control pair: no fuzz socket may emit into its rooms.
  const foreign = (who) => (event, payload) => {
    if (who === "passenger" && event === "server:location:update" && payload?.tripId === CONTROL_TRIP) return;
    control.foreignEvents += 1;
    incident("control-foreign-event", null, { who, event, payload: JSON.stringify(payload).slice(0, 500) });
  };
  ctlPassenger.onAny(foreign("passenger"));
  ctlDriver.onAny(foreign("driver"));
  const sub = await ctlAck(ctlPassenger, "passenger:subscribe", { tripId: CONTROL_TRIP });
  const dc = await ctlAck(ctlDriver, "driver:connect", { tripId: CONTROL_TRIP });
  if (!sub.ok || !dc.ok) throw new Error(`control setup failed: ${JSON.stringify({ sub, dc })}`);
  let seq = 0;
  const loc = async () => {
    if (!running) return;
    seq += 1;
    const n = seq;
    control.locationsSent += 1;
    const r = await ctlAck(ctlDriver, "driver:location:update", { tripId: CONTROL_TRIP, lat: 10 + n * 1e-5, lng: 20, speed: 10, heading: 90 });
    if (r.ok) { control.locationsOk += 1; ctlAcked.add(n); } else if (r.timedOut) { control.locationsTimedOut += 1; incident("control-ack-timeout", null, { event: "driver:location:update", n }); } else { count(control.locationsRefused, r.error); incident("control-refused", null, { event: "driver:location:update", n, r }); }
    setTimeout(loc, 1000);
  };
  const hb = async () => {
    if (!running) return;
    const r = await ctlAck(ctlPassenger, "heartbeat", {});
    if (r.ok) control.heartbeatsOk += 1; else { control.heartbeatsFailed += 1; incident("control-heartbeat", null, { r }); }
    setTimeout(hb, 2000);
  };
  loc();
  hb();
}

// ---------------------------------------------------------------- the node: RSS, liveness, log
const rss = { samples: [] };
function rssKb() {
  if (!NODE_PID) return null;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${NODE_PID}/status`, "utf8"));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}
function alive() {
  if (!NODE_PID) return true;
  try { process.kill(NODE_PID, 0); return true; } catch { return false; }
}
let nodeDiedAt = null;
function sample() {
  const kb = rssKb();
  if (kb !== null) rss.samples.push([Math.round((Date.now() - t0) / 1000), kb]);
  if (!alive() && nodeDiedAt === null) {
    nodeDiedAt = Date.now();
    incident("node-died", null, {});
  }
}

// ---------------------------------------------------------------- run
writeFileSync(INCIDENTS, "");
const t0 = Date.now();
await startControl();
sample();
rss.startKb = rssKb();
const sampler = setInterval(sample, 3000);
for (let i = 0; i < CONNS; i++) setTimeout(runConn, i * 50);
if (POLLING) pollingLoop();
const progress = setInterval(() => {
  const lat = stats.acksLatencies;
  console.error(JSON.stringify({ t: Math.round((Date.now() - t0) / 1000), packets: stats.packets, acksChecked: stats.acksChecked, answered: stats.acksAnswered, timedOut: stats.acksTimedOut,
    closes: Object.values(stats.protocolCloses).reduce((a, b) => a + b, 0), unexplained: stats.unexplainedCloses, conns: stats.connsOpened, rssMb: Math.round((rssKb() ?? 0) / 1024),
    control: `${control.locationsOk}/${control.locationsSent} ok, ${ctlSeen.size} seen`, incidents: incidents.length, maxAckMs: lat.length ? Math.max(...lat.slice(-5000)) : 0 }));
}, 15000);

await new Promise((r) => setTimeout(r, MINUTES * 60000));
running = false;
rss.endKb = rssKb();
// Pending acks get their full deadline; deliveries land.
await new Promise((r) => setTimeout(r, ACK_DEADLINE_MS + 2500));
clearInterval(progress);
for (const id of ctlAcked) if (!ctlSeen.has(id)) control.lost += 1;
control.delivered = [...ctlAcked].filter((id) => ctlSeen.has(id)).length;
ctlDriver.close();
ctlPassenger.close();
await new Promise((r) => setTimeout(r, 10000)); // sockets closed: does memory come back?
rss.afterKb = rssKb();
clearInterval(sampler);
sample();

let panics = 0;
let errorLines = 0;
const closeReasons = {};
if (NODE_LOG && existsSync(NODE_LOG)) {
  const log = readFileSync(NODE_LOG, "utf8");
  panics = (log.match(/panicked/g) ?? []).length;
  errorLines = (log.match(/\bERROR\b/g) ?? []).length;
  // Why the node closed connections (logged by engineioxide::transport::ws at debug).
  for (const m of log.matchAll(/error when handling packet: ([A-Za-z(]+)/g)) count(closeReasons, m[1]);
}
const lat = stats.acksLatencies.sort((a, b) => a - b);
const maxKb = Math.max(...rss.samples.map((s) => s[1]), 0);
const nodeAlive = alive();
const summary = {
  mode: MODE, minutes: MINUTES, seed: SEED, concurrentSockets: CONNS, ratePerSocket: RATE,
  node: { alive: nodeAlive, panics, errorLines },
  packets: stats.packets, bytesSent: stats.bytes, connections: { opened: stats.connsOpened, connected: stats.connsConnected, connectErrors: stats.connectErrors, handshakeNoAnswer: stats.handshakeNoAnswer },
  acks: { checked: stats.acksChecked, answered: stats.acksAnswered, timedOut: stats.acksTimedOut, cutByProtocolClose: stats.acksCutByProtocolClose, cutUnexplained: stats.acksCutUnexplained,
    p50Ms: lat[Math.floor(lat.length * 0.5)] ?? 0, p99Ms: lat[Math.floor(lat.length * 0.99)] ?? 0, maxMs: lat[lat.length - 1] ?? 0,
    duplicates: stats.acksDuplicate, badShape: stats.acksBadShape, codes: stats.ackCodes, internal: stats.internalAcks, unavailable: stats.unavailableAcks,
    refusalsChecked: stats.refusalsChecked, refusalViolations: stats.refusalViolations, optional: stats.acksOptional, optionalAnswered: stats.acksOptionalAnswered,
    answeredUnknownEvent: stats.unknownEventAnswered },
  closes: { nodeReasons: closeReasons, protocol: stats.protocolCloses, codes: stats.protocolCloseCodes, protocolTotal: Object.values(stats.protocolCloses).reduce((a, b) => a + b, 0), unexplained: stats.unexplainedCloses, expired: stats.expiredCloses, wsErrors: stats.wsErrors },
  byKind: stats.byKind,
  polling: stats.polling,
  control,
  rss: { startMb: +(rss.startKb / 1024).toFixed(1), maxMb: +(maxKb / 1024).toFixed(1), endMb: +(rss.endKb / 1024).toFixed(1), afterCloseMb: +(rss.afterKb / 1024).toFixed(1), limitMb: RSS_LIMIT_MB,
    trace: rss.samples.filter((_, i) => i % 20 === 0).map(([t, kb]) => `${t}s:${Math.round(kb / 1024)}`).join(" ") },
  incidents: incidents.length, incidentTypes: incidents.reduce((m, i) => (count(m, i.type), m), {}), incidentsFile: INCIDENTS,
};
summary.pass = nodeAlive && panics === 0 && stats.internalAcks === 0 && stats.unavailableAcks === 0 && stats.acksTimedOut === 0 && stats.unexplainedCloses === 0 && stats.acksDuplicate === 0 && stats.acksBadShape === 0 &&
  stats.refusalViolations === 0 && stats.polling.acksTimedOut === 0 && control.lost === 0 && control.locationsOk === control.locationsSent && control.heartbeatsFailed === 0 && control.foreignEvents === 0 &&
  control.disconnects === 0 && maxKb / 1024 < RSS_LIMIT_MB;
console.log(JSON.stringify(summary, null, 2));

if (OUT) {
  let commit = "?";
  try { commit = execSync("git rev-parse --short HEAD", { encoding: "utf8" }).trim(); } catch { /* not a checkout */ }
  // A prebuilt node may come from another commit (its directory's COMMIT file says which).
  if (env.NODE_COMMIT && !commit.startsWith(env.NODE_COMMIT.slice(0, 7))) commit += ` (node ${env.NODE_COMMIT.slice(0, 7)})`;
  const closes = Object.entries(stats.protocolCloses).sort((a, b) => b[1] - a[1]).slice(0, 4).map(([k, v]) => `${k} ${v}`).join(", ");
  const row = `| ${new Date().toISOString().slice(0, 16).replace("T", " ")}Z ${commit} | socket fuzz, ${MODE}, ${MINUTES} min, seed ${SEED} | ${stats.connsOpened} sockets (${CONNS} at once), ${stats.packets} packets, ` +
    `${stats.polling.requests} polling requests | ${stats.acksChecked} must-acks: ${stats.acksAnswered} answered (p50 ${summary.acks.p50Ms} ms, p99 ${summary.acks.p99Ms} ms, max ${summary.acks.maxMs} ms), ` +
    `${stats.acksCutByProtocolClose} cut by a framing-error close of their own socket, ${stats.acksTimedOut} late or missing; ${stats.polling.acksChecked} polling acks, ${stats.polling.acksTimedOut} missing; ` +
    `${stats.refusalsChecked} must-refuse: ${stats.refusalViolations} accepted; ${stats.acksDuplicate} duplicate, ${stats.acksBadShape} malformed, ${stats.internalAcks} INTERNAL, ${stats.unavailableAcks} UNAVAILABLE | ` +
    `${summary.closes.protocolTotal} after framing errors (${closes}); ${stats.unexplainedCloses} unexplained | ${control.locationsOk}/${control.locationsSent} locations ok, ${control.lost} lost, ` +
    `${control.heartbeatsOk} heartbeats ok, ${control.disconnects} disconnects, max ack ${control.maxAckMs} ms | ${summary.rss.startMb} / ${summary.rss.maxMb} / ${summary.rss.endMb} MB (${summary.rss.afterCloseMb} after close) | ` +
    `${panics} | ${summary.pass ? "pass" : "FAIL"} |`;
  appendFileSync(OUT, row + "\n");
  console.error(row);
}
process.exit(summary.pass ? 0 : 1);
