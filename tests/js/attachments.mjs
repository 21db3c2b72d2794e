// Binary attachments are held by the Socket.IO parser before any token is checked: a raw
// websocket (the `ws` package, engine.io v4 framing by hand), without ever connecting a
// namespace, announces an event with ten attachments and sends three binary frames that add
// up past one message's bound (--ws-max-message-bytes), so the packet stays incomplete. The node must close that connection at
// once instead of holding the bytes (socketioxide's default: 10 MB for a minute).
// env: URL (http://host:port). Prints "attachments ok" and exits 0 on success.
import WebSocket from "ws";

const url = process.env.URL.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket";
const ws = new WebSocket(url);
const fail = (why) => {
  console.error(why);
  process.exit(1);
};
const timer = setTimeout(() => fail("connection still open 5 s after 120 KB of attachments"), 5000);
ws.on("message", (data, isBinary) => {
  const text = isBinary ? "" : data.toString();
  if (text.startsWith("0")) {
    // Open: announce ten attachments, then send three (40 KB each, over a 64 KiB bound).
    const holders = Array.from({ length: 10 }, (_, num) => ({ _placeholder: true, num }));
    ws.send(`4510-${JSON.stringify(["heartbeat", ...holders])}`);
    for (let i = 0; i < 3; i++) ws.send(Buffer.alloc(40 * 1024, i), { binary: true });
  }
});
ws.on("close", () => {
  clearTimeout(timer);
  console.log("attachments ok");
  process.exit(0);
});
ws.on("error", (e) => fail(`error: ${e.message}`));
