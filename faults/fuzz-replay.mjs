// Replays one incident of faults/fuzz.mjs on a fresh raw websocket: the connection's last
// packets (as recorded in the incidents file), sent again in order after a handshake with a
// fresh token of the same user and role. Prints every frame the node sends back, which acks
// came, and whether (and after which packet) the node closed the connection.
//
//   node faults/fuzz-replay.mjs INCIDENTS.jsonl LINE [FROM]    (LINE 1-based; FROM: first packet index)
//   env: URL (http://127.0.0.1:3410), SECRET, GAP_MS (pause between packets, default 20; -1 = a burst)
import WebSocket from "ws";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";

const [file, lineArg, fromArg] = process.argv.slice(2);
const URL_ = new URL(process.env.URL ?? "http://127.0.0.1:3410");
const SECRET = process.env.SECRET ?? "fleetcast-fuzz-secret-0123456789";
const GAP_MS = Number(process.env.GAP_MS ?? 20);
const inc = JSON.parse(readFileSync(file, "utf8").trim().split("\n")[Number(lineArg) - 1]);
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
const head = b64({ alg: "HS256", typ: "JWT" });
const body = b64({ sub: inc.sub ?? "fz-replay", role: inc.role ?? "DRIVER", tenant: "default", exp: Math.floor(Date.now() / 1000) + 3600 });
const token = `${head}.${body}.${createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url")}`;
const packets = inc.lastPackets.filter((p) => p.kind !== "handshake").slice(Number(fromArg ?? 0));
console.log(`incident ${inc.type} (conn ${inc.conn}, ${inc.sub}/${inc.role}): replaying ${packets.length} packets`);

const ws = new WebSocket(`ws://${URL_.host}${inc.path ?? "/socket.io/"}?EIO=4&transport=websocket`, { perMessageDeflate: false });
let sent = -1;
ws.on("message", (d, bin) => {
  const m = bin ? `<binary ${d.length}>` : d.toString();
  if (m === "2") return ws.send("3");
  console.log(`  <- ${m.slice(0, 300)}`);
  if (m.startsWith("40")) go();
  if (m.startsWith("0{")) ws.send(`40${JSON.stringify({ token })}`);
});
ws.on("close", (code, reason) => {
  const p = packets[sent];
  console.log(`closed by the node: ${code} ${reason} after packet #${sent}${p ? ` (${p.kind}, ${p.len} bytes)` : ""}`);
  process.exit(0);
});
async function go() {
  for (let i = 0; i < packets.length; i++) {
    const p = packets[i];
    if (ws.readyState !== WebSocket.OPEN) return;
    sent = i;
    const data = p.text !== undefined ? p.text : Buffer.from(p.base64, "base64");
    console.log(`  -> #${i} ${p.kind} ${p.len}: ${(p.text ?? "<binary>").slice(0, 160)}`);
    if (p.kind === "event-fragmented") { // as the fuzzer sent it: two websocket frames
      const cut = Math.floor(data.length / 2);
      ws.send(data.slice(0, cut), { fin: false });
      ws.send(data.slice(cut), { fin: true });
    } else ws.send(data, { binary: p.frame === "binary" });
    if (GAP_MS >= 0) await new Promise((r) => setTimeout(r, GAP_MS)); // GAP_MS=-1: back to back, as a burst
  }
  setTimeout(() => { console.log("connection still open 3 s after the last packet"); ws.close(); process.exit(0); }, 3000);
}
