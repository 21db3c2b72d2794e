// SSE interop with a browser-compatible EventSource from npm, run by
// tests/it/interop_js.rs against a two-node cluster: the token in `?token=` (EventSource
// cannot set headers), `connected` first, events published on the other node arriving with
// `lastEventId` equal to their `eventId`, strictly increasing. Every wait is bounded.
import { EventSource } from "eventsource";

const { URL_A, URL_B, ORDER, READER_TOKEN, SERVICE_TOKEN } = process.env;
const fail = (msg) => {
  console.error("FAIL:", msg);
  process.exit(1);
};
setTimeout(() => fail("timeout"), 10000).unref();

const publish = (n) =>
  fetch(`${URL_A}/api/v1/realtime/orders/${ORDER}`, {
    method: "POST",
    headers: { authorization: `Bearer ${SERVICE_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ data: { n } }),
  }).then((r) => {
    if (r.status !== 202) fail(`publish answered ${r.status}`);
  });

const es = new EventSource(`${URL_B}/api/v1/realtime/orders/${ORDER}/stream?token=${READER_TOKEN}`);
const seen = [];
es.onerror = (e) => fail(`EventSource error: ${e.message ?? e.type}`);
es.onmessage = async (e) => {
  const data = JSON.parse(e.data);
  if (data.type === "connected") {
    if (e.lastEventId) fail("connected must not carry an id");
    await publish(1);
    await publish(2);
    return;
  }
  if (data.type !== "order_update") return;
  if (e.lastEventId !== data.eventId) fail(`lastEventId ${e.lastEventId} != eventId ${data.eventId}`);
  seen.push({ n: data.data.n, id: data.eventId });
  if (seen.length === 2) {
    const [a, b] = seen.map((s) => s.id.split("-").map(Number));
    const increasing = b[0] > a[0] || (b[0] === a[0] && b[1] > a[1]);
    if (seen[0].n !== 1 || seen[1].n !== 2 || !increasing) fail(`events ${JSON.stringify(seen)}`);
    es.close();
    console.log("sse interop ok");
    process.exit(0);
  }
};
