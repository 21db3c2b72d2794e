// Packets the Socket.IO parser cannot decode (CONTRACT §6: they may go unanswered, but the
// connection stays usable): a raw websocket (the `ws` package, engine.io v4 framing by hand)
// connects the namespace with a token, then sends each undecodable packet followed by a
// `heartbeat` with an ack id, which must be answered `{ok:true}` on the same connection.
// env: URL (http://host:port), TOKEN. Prints "undecodable ok <n>" and exits 0 on success.
import WebSocket from "ws";

const UNDECODABLE = [
  "47[1]", // no such packet type
  '43["heartbeat"]', // an ack without an id
  "42{}", // event data not an array
  '42"heartbeat"',
  "42[]",
  "42[5]", // event name not a string
  '42["heartbeat"', // truncated JSON
  "425[",
  '42-3["heartbeat",{}]', // a negative ack id
  '42/nope', // a namespace without its comma
  '45x-["heartbeat",{}]', // a bad attachment count
  "4", // a message with no Socket.IO packet
];

const url = process.env.URL.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket";
const ws = new WebSocket(url);
const fail = (why) => {
  console.error(why);
  process.exit(1);
};
let step = -1; // index in UNDECODABLE of the packet last sent; -1 before the namespace
let ackId = 100;
const timer = setTimeout(() => fail(`stuck at step ${step} (${UNDECODABLE[step]})`), 15000);

function next() {
  step += 1;
  if (step === UNDECODABLE.length) {
    clearTimeout(timer);
    console.log(`undecodable ok ${UNDECODABLE.length}`);
    ws.close();
    process.exit(0);
  }
  ws.send(UNDECODABLE[step]);
  ackId += 1;
  ws.send(`42${ackId}["heartbeat",{}]`);
}

ws.on("message", (data, isBinary) => {
  if (isBinary) return fail("unexpected binary frame");
  const text = data.toString();
  if (text === "2") return ws.send("3"); // engine.io ping
  if (text.startsWith("0")) return ws.send(`40${JSON.stringify({ token: process.env.TOKEN })}`);
  if (text.startsWith("40")) return next();
  if (text.startsWith("44")) return fail(`connect refused: ${text}`);
  if (text.startsWith(`43${ackId}`)) {
    const [ack] = JSON.parse(text.slice(2 + String(ackId).length));
    if (ack?.ok !== true) return fail(`heartbeat after ${UNDECODABLE[step]} answered ${text}`);
    return next();
  }
});
ws.on("close", (code) => fail(`connection closed (${code}) after ${JSON.stringify(UNDECODABLE[step])}`));
ws.on("error", (e) => fail(`error: ${e.message}`));
