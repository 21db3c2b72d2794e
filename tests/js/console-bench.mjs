// Benchmark (not a test; `BENCH_ONLY=console loadtest/bench.sh` runs it): the operations
// console in Debian's Chromium while a fleet streams. It opens /console as an ADMIN, waits
// until the fleet (EXPECT drivers) is live and the map shows 90 % of it (or 90 s), then measures for SECONDS: frames and
// positions the page received per second, drivers on the map, and the page's main-thread
// time per second from Chromium's Performance domain (TaskDuration, ScriptDuration), with
// the map's own drawing time from performance.now() in the page. Prints one JSON object.
//
// env: URL, TOKEN, SECONDS (default 30), EXPECT (default 1), VIEW (lat,lng,zoom; default
// the Nairobi box `generate` drives in)

import { launch } from './chromium.mjs';

const URL = process.env.URL;
const SECONDS = Number(process.env.SECONDS || 30);
const EXPECT = Number(process.env.EXPECT || 1);

// The console starts where the fleet is: wait for the fleet before opening it.
const t0 = Date.now();
for (;;) {
  try {
    const r = await fetch(`${URL}/api/v1/drivers?limit=1`, { headers: { Authorization: 'Bearer ' + process.env.TOKEN } });
    if (r.ok && (await r.json()).total >= EXPECT * 0.9) break;
  } catch { /* not up yet */ }
  if (Date.now() - t0 > 120_000) break;
  await new Promise((resolve) => setTimeout(resolve, 1000));
}

const browser = await launch();
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
  await context.addInitScript((t) => sessionStorage.setItem('fleetcast.token', t), process.env.TOKEN);
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('page error:', e.message));
  page.on('console', (m) => { if (m.type() === 'error') console.error('console:', m.text()); });
  // The city box of `generate` (Nairobi), whatever the drivers list answers.
  await page.goto(URL + '/console#' + (process.env.VIEW || '-1.275,36.825,12'));
  await page.waitForFunction((n) => window.fleetcastConsole && window.fleetcastConsole.frames >= 2
    && window.fleetcastConsole.drivers >= n, Math.floor(EXPECT * 0.9), { timeout: 90_000, polling: 500 }).catch(() => {});
  const waitedS = (Date.now() - t0) / 1000;
  const cdp = await context.newCDPSession(page);
  await cdp.send('Performance.enable', { timeDomain: 'timeTicks' });
  const metrics = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
  const inPage = () => page.evaluate(() => {
    const f = window.fleetcastConsole;
    return { frames: f.frames, positions: f.positions, drivers: f.drivers, drawMs: f.map.drawMs, at: performance.now() };
  });
  const m0 = await metrics();
  const p0 = await inPage();
  await page.waitForTimeout(SECONDS * 1000);
  const m1 = await metrics();
  const p1 = await inPage();
  const wall = (p1.at - p0.at) / 1000;
  const pct = (k) => Math.round(((m1[k] - m0[k]) / wall) * 1000) / 10;
  console.log(JSON.stringify({
    waitedS: Math.round(waitedS),
    wallS: Math.round(wall * 10) / 10,
    framesPerS: Math.round(((p1.frames - p0.frames) / wall) * 100) / 100,
    positionsPerS: Math.round((p1.positions - p0.positions) / wall),
    driversShown: p1.drivers,
    mainThreadPct: pct('TaskDuration'),
    scriptPct: pct('ScriptDuration'),
    layoutPct: pct('LayoutDuration'),
    drawMsPerS: Math.round((p1.drawMs - p0.drawMs) / wall),
    heapMb: Math.round(m1.JSHeapUsedSize / 1048576),
  }));
} finally {
  await browser.close();
}
