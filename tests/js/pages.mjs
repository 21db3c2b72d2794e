// The pages in a real browser (Debian's Chromium, driven by playwright-core) against one
// node: a driver signs in on /driver, simulates a drive, declines one offer and accepts
// another; the passenger's /track page follows the trip to IN_PROGRESS with the driver on
// the map and shows the ticket's QR code; /console shows the driver moving on the live map
// and an EMERGENCY alert within a second; the driver page shows a lost connection and,
// once back, what it missed. Screenshots at fixed viewports go to $SCREENSHOTS.
//
// env: URL, ADMIN_TOKEN, DRIVER_TOKEN, DRIVER_ID, PASSENGER_TOKEN, SERVICE_TOKEN, SCREENSHOTS

import { mkdirSync } from 'node:fs';
import net from 'node:net';
import { launch } from './chromium.mjs';
import { io } from 'socket.io-client';

const URL = process.env.URL;
const SHOTS = process.env.SCREENSHOTS;
const DRIVER_ID = process.env.DRIVER_ID;
const START = { lat: 52.52, lng: 13.405 };
const step = (what) => console.log(`-- ${what}`);

function fail(message) {
  throw new Error(message);
}

async function call(method, path, token, body) {
  const r = await fetch(URL + path, {
    method,
    headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let data = null;
  try { data = JSON.parse(text); } catch { data = text; }
  if (!r.ok) fail(`${method} ${path}: ${r.status} ${text}`);
  return data;
}

function tripPlan(title, dLat) {
  return {
    title, tripType: 'PRIVATE', status: 'PUBLISHED', totalSeats: 3, pricePerSeat: 12.5, currency: 'EUR',
    estimatedEarnings: 31,
    origin: { name: 'Alexanderplatz', lat: START.lat + dLat, lng: START.lng + 0.004 },
    destination: { name: 'Tempelhofer Feld', lat: 52.4731, lng: 13.4039 },
    departureTime: new Date(Date.now() + 600_000).toISOString(),
  };
}

// The driver's network: a TCP relay to the node that the test can cut (every connection
// reset, new ones refused) and restore.
const upstream = new globalThis.URL(URL);
const relay = { down: false, sockets: new Set() };
const relayServer = net.createServer((client) => {
  if (relay.down) { client.destroy(); return; }
  const server = net.connect(Number(upstream.port), upstream.hostname);
  for (const s of [client, server]) { relay.sockets.add(s); s.on('close', () => relay.sockets.delete(s)); s.on('error', () => {}); }
  client.pipe(server);
  server.pipe(client);
});
await new Promise((resolve) => relayServer.listen(0, '127.0.0.1', resolve));
const DRIVER_URL = `http://127.0.0.1:${relayServer.address().port}`;
const cut = () => { relay.down = true; for (const s of relay.sockets) s.destroy(); };
const restore = () => { relay.down = false; };

const browser = await launch();
const errors = [];
async function open(viewport, token, path, base = URL) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  if (token) await context.addInitScript((t) => sessionStorage.setItem('fleetcast.token', t), token);
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(`${path}: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' && !/Failed to load resource|ERR_INTERNET_DISCONNECTED|net::ERR/.test(m.text())) errors.push(`${path}: ${m.text()}`); });
  await page.goto(base + path);
  return { context, page };
}
const shot = async (page, name) => { if (SHOTS) { mkdirSync(SHOTS, { recursive: true }); await page.screenshot({ path: `${SHOTS}/${name}.png` }); } };

try {
  // The driver signs in by pasting a token, then simulates a drive from START.
  step('driver signs in');
  const driver = await open({ width: 390, height: 844 }, null, '/driver', DRIVER_URL);
  const dp = driver.page;
  await dp.fill('#token-input', process.env.DRIVER_TOKEN);
  await dp.click('#token-form button[type=submit]');
  await dp.waitForSelector('#link[data-state="live"]', { timeout: 10_000 });
  await dp.fill('#pos-lat', String(START.lat));
  await dp.fill('#pos-lng', String(START.lng));
  await dp.click('#simulate');
  await dp.waitForFunction(() => (document.querySelector('#pos-state').textContent || '').startsWith('sent'), null, { timeout: 10_000 });

  step('console opens');
  const consoleTab = await open({ width: 1280, height: 800 }, process.env.ADMIN_TOKEN, '/console');
  const cp = consoleTab.page;
  await cp.waitForSelector('#link[data-state="live"]', { timeout: 10_000 });
  await cp.waitForFunction(() => /^#-?[\d.]+,-?[\d.]+,[\d.]+$/.test(location.hash), null, { timeout: 5000 });

  // An offer: the countdown runs; declining removes the card.
  step('offer, countdown, decline');
  const t1 = await call('POST', '/api/trips', process.env.PASSENGER_TOKEN, tripPlan('Morning ride', 0.008));
  const card1 = `li.offer[data-trip="${t1.id}"]`;
  await dp.waitForSelector(card1, { timeout: 10_000 });
  const left0 = Number((await dp.textContent(`${card1} .countdown`)).replace(/\D/g, ''));
  await dp.waitForTimeout(2200);
  const left1 = Number((await dp.textContent(`${card1} .countdown`)).replace(/\D/g, ''));
  if (!(left0 > 0 && left1 < left0)) fail(`countdown does not run: ${left0} then ${left1}`);
  await dp.click(`${card1} button.decline`);
  await dp.waitForSelector(card1, { state: 'detached', timeout: 5000 });
  await dp.waitForTimeout(500);
  if (await dp.$(card1)) fail('a declined offer came back');

  // A second trip, booked by the passenger, who opens its tracker.
  step('second offer and the tracker');
  const t2 = await call('POST', '/api/trips', process.env.PASSENGER_TOKEN, tripPlan('Ride to the park', 0.012));
  const booking = await call('POST', '/api/bookings', process.env.PASSENGER_TOKEN, { tripId: t2.id, seatsBooked: 2, pickupPoint: 'Main entrance' });
  const tracker = await open({ width: 1280, height: 800 }, process.env.PASSENGER_TOKEN, `/track/${t2.id}`);
  const tp = tracker.page;
  await tp.waitForSelector('#timeline li.current[data-status="PUBLISHED"]', { timeout: 10_000 });
  await tp.waitForSelector(`.booking[data-booking="${booking.id}"] img.ticket`, { timeout: 10_000 });
  await tp.waitForFunction(() => { const i = document.querySelector('img.ticket'); return i && i.complete && i.naturalWidth > 0; }, null, { timeout: 10_000 });

  // Accepting makes the tracker show IN_PROGRESS and the driver on its map.
  step('accept');
  const card2 = `li.offer[data-trip="${t2.id}"]`;
  await dp.waitForSelector(card2, { timeout: 10_000 });
  await shot(dp, 'driver');
  await dp.click(`${card2} button.accept`);
  await dp.waitForSelector('#trip-status', { timeout: 10_000 });
  if ((await dp.textContent('#trip-status')) !== 'IN_PROGRESS') fail('the accepted trip is not IN_PROGRESS on the driver page');
  await tp.waitForSelector('#timeline li.current[data-status="IN_PROGRESS"]', { timeout: 10_000 });
  await tp.waitForFunction((id) => window.fleetcastTrack.location && window.fleetcastTrack.location.driverId === id,
    DRIVER_ID, { timeout: 10_000 });
  await tp.waitForFunction(() => /Pick-up in/.test(document.querySelector('#progress').textContent), null, { timeout: 10_000 });

  // The console shows the driver moving on the live map; a click on it shows the driver.
  step('console map');
  await cp.waitForFunction((id) => window.fleetcastConsole.map.drivers.has(id), DRIVER_ID, { timeout: 10_000 });
  const p0 = await cp.evaluate((id) => { const d = window.fleetcastConsole.map.drivers.get(id); return { lat: d.lat, lng: d.lng }; }, DRIVER_ID);
  await cp.waitForFunction(([id, a]) => { const d = window.fleetcastConsole.map.drivers.get(id); return d.lat !== a.lat || d.lng !== a.lng; },
    [DRIVER_ID, p0], { timeout: 10_000 });
  const at = await cp.evaluate((id) => {
    const m = window.fleetcastConsole.map;
    const d = m.drivers.get(id);
    const s = m.toScreen(d.lat, d.lng);
    const r = m.canvas.getBoundingClientRect();
    return { x: r.left + s.x, y: r.top + s.y };
  }, DRIVER_ID);
  await cp.mouse.click(at.x, at.y);
  await cp.waitForFunction((id) => { const c = document.querySelector('#driver-card'); return !c.hidden && c.textContent.includes(id); }, DRIVER_ID, { timeout: 5000 });

  // EMERGENCY from the driver's app reaches the console within a second.
  step('emergency');
  const sock = io(URL, { auth: { token: process.env.DRIVER_TOKEN }, transports: ['websocket'] });
  await new Promise((resolve, reject) => { sock.on('connect', resolve); sock.on('connect_error', reject); });
  const connectAck = await sock.timeout(5000).emitWithAck('driver:connect', { tripId: t2.id });
  if (!connectAck.ok) fail('driver:connect ' + JSON.stringify(connectAck));
  const sent = Date.now();
  const ack = await sock.timeout(5000).emitWithAck('driver:status', { tripId: t2.id, status: 'EMERGENCY' });
  if (!ack.ok) fail('driver:status ' + JSON.stringify(ack));
  await cp.waitForSelector(`#alerts li.alert.emergency[data-trip="${t2.id}"]`, { timeout: 5000 });
  const took = Date.now() - sent;
  console.log(`emergency shown after ${took} ms`);
  if (took > 1000) fail(`the EMERGENCY alert took ${took} ms`);
  sock.close();
  await cp.waitForTimeout(1500);
  await shot(cp, 'console');
  await tp.waitForTimeout(300);
  await shot(tp, 'track');

  // A lost connection shows as such; back online, the stream resumes after its last event.
  step('lost connection');
  cut();
  await dp.waitForSelector('#link[data-state="lost"]', { timeout: 15_000 });
  await call('POST', '/api/v1/notifications', process.env.SERVICE_TOKEN, { users: [DRIVER_ID], title: 'Shift change', body: 'Return by 18:00' });
  await dp.waitForTimeout(500);
  restore();
  await dp.waitForSelector('#link[data-state="live"]', { timeout: 15_000 });
  await dp.waitForFunction(() => document.querySelector('#badge').textContent === '1', null, { timeout: 10_000 });
  await dp.click('#bell');
  if (!(await dp.textContent('#notif-list')).includes('Shift change')) fail('the missed notification is not listed');

  if (errors.length) fail('page errors:\n' + errors.join('\n'));
  console.log('pages ok');
} finally {
  await browser.close();
  relayServer.close();
}
