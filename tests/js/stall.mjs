// A client that will stop reading, run by tests/it/stall.rs: the official socket.io-client
// (websocket only, no reconnection, so a cut-off stays visible) and an EventSource on an
// order stream, both of one user. It prints "ready" once both are connected; the test then
// freezes this process with SIGSTOP, so neither reads again.
import { io } from "socket.io-client";
import { EventSource } from "eventsource";

const { URL_A, ORDER, TOKEN } = process.env;
setTimeout(() => process.exit(2), 120000).unref();

let up = 0;
const ready = () => {
  up += 1;
  if (up === 2) console.log("ready");
};
const socket = io(URL_A, { auth: { token: TOKEN }, transports: ["websocket"], reconnection: false });
socket.on("connect", ready);
socket.on("connect_error", (e) => {
  console.error("connect_error", e.message);
  process.exit(1);
});
const es = new EventSource(`${URL_A}/api/v1/realtime/orders/${ORDER}/stream?token=${TOKEN}`);
es.onmessage = (e) => {
  if (JSON.parse(e.data).type === "connected") ready();
};
setInterval(() => {}, 1000);
