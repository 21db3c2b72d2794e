// A TCP relay between one node and Redis for the partition case of faults/run.sh:
// SIGUSR1 partitions (stops reading both ways, so bytes wait as behind dropped packets
// that TCP retransmits), SIGUSR2 heals. env: LISTEN, TARGET (ports on 127.0.0.1).
import net from "node:net";

const pairs = new Set();
let cut = false;
net
  .createServer((client) => {
    const server = net.connect(Number(process.env.TARGET), "127.0.0.1");
    const pair = [client, server];
    pairs.add(pair);
    client.pipe(server);
    server.pipe(client);
    if (cut) pair.forEach((s) => s.pause());
    const close = () => {
      pairs.delete(pair);
      client.destroy();
      server.destroy();
    };
    client.on("error", close).on("close", close);
    server.on("error", close).on("close", close);
  })
  .listen(Number(process.env.LISTEN), "127.0.0.1", () => console.log("relay ready"));
process.on("SIGUSR1", () => {
  cut = true;
  for (const p of pairs) p.forEach((s) => s.pause());
});
process.on("SIGUSR2", () => {
  cut = false;
  for (const p of pairs) p.forEach((s) => s.resume());
});
