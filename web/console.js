// The operations console (ADMIN, BUSINESS): the live map is an area subscription on the
// visible viewport over SSE (`/api/v1/realtime/area`, CONTRACT §7), re-opened when the
// view settles; alerts and `admin:events` come over a Socket.IO connection
// (`admin:subscribe`); the cluster panel polls `/api/v1/admin/stats` and `/metrics`; the
// trip inspector reads `/api/v1/admin/trips/{id}`; the publish form posts `/api/v1/emit`.

import { $, ago, api, attempt, auth, el, setLink, signIn, toast, withToken } from './common.js';
import { FleetMap } from './map.js';
import { Chart, parseMetrics, sumOf } from './chart.js';
import { Sio } from './sio.js';

const MAX_SIDE_KM = 99;
const POLL_MS = 2000;

// Figures the benchmark and the browser tests read.
const figures = { frames: 0, positions: 0, drivers: 0, lastFrameAt: null, alerts: 0, events: 0 };
window.fleetcastConsole = figures;

signIn(['ADMIN', 'BUSINESS'], (claims, cfg) => {
  $('main').replaceChildren($('#console-body').content.cloneNode(true));
  const admin = claims.role === 'ADMIN';
  const map = new FleetMap($('#map'), {
    center: { lat: 52.52, lng: 13.405 },
    zoom: 11,
    tileUrl: cfg.tileUrl,
    onView: (b) => {
      // The view is in the address (`#lat,lng,zoom`): a reload or a shared link opens here.
      history.replaceState(null, '', `#${map.center.lat.toFixed(5)},${map.center.lng.toFixed(5)},${map.zoom}`);
      openArea(b);
    },
    onPick: (d) => showDriver(d),
  });
  figures.map = map;
  let stream = null;
  let selected = null;
  let retryMs = 1000;
  let retryTimer = null;

  function clampBox([minLng, minLat, maxLng, maxLat]) {
    const lat = (minLat + maxLat) / 2;
    const lng = (minLng + maxLng) / 2;
    const kmLat = 111.32;
    const kmLng = 111.32 * Math.cos((lat * Math.PI) / 180);
    const halfLat = Math.min((maxLat - minLat) / 2, MAX_SIDE_KM / 2 / kmLat);
    const halfLng = Math.min((maxLng - minLng) / 2, MAX_SIDE_KM / 2 / kmLng);
    const clamped = halfLat < (maxLat - minLat) / 2 - 1e-9 || halfLng < (maxLng - minLng) / 2 - 1e-9;
    const box = [lng - halfLng, Math.max(-90, lat - halfLat), lng + halfLng, Math.min(90, lat + halfLat)];
    return { box: box.map((v) => Math.round(v * 1e5) / 1e5), clamped };
  }

  function openArea(bounds) {
    const { box, clamped } = clampBox(bounds);
    $('#map-note').textContent = clamped ? ' · showing the 100 km around the centre: zoom in to see everything here' : '';
    if (stream) stream.close();
    setLink('connecting');
    const es = new EventSource(withToken('/api/v1/realtime/area', { bbox: box.join(','), intervalMs: 1000 }));
    stream = es;
    es.onopen = () => { setLink('live'); retryMs = 1000; };
    es.onerror = () => {
      if (es.readyState !== EventSource.CLOSED) { setLink('lost'); return; }
      // Refused (a 401 once the token expired, or a 503 while the node's Redis is
      // unreachable): EventSource gives up, so the page tries again unless the token is done.
      if (auth.expired()) {
        setLink('lost', 'token expired — sign in again');
        toast('your token has expired: sign in again');
        return;
      }
      setLink('lost', `map stream refused — retrying in ${Math.round(retryMs / 1000)} s`);
      clearTimeout(retryTimer);
      retryTimer = setTimeout(() => { if (stream === es) openArea(map.bounds()); }, retryMs);
      retryMs = Math.min(retryMs * 2, 30_000);
    };
    es.onmessage = (m) => {
      const data = JSON.parse(m.data);
      if (data.type === 'connected') {
        map.clearDrivers();
        for (const d of data.drivers) map.upsertDriver(d);
        if (data.truncated) toast('more than 5,000 drivers here: zoom in to see them all', 'notice');
      } else if (data.type === 'area_update') {
        figures.frames += 1;
        figures.positions += data.drivers.length;
        figures.lastFrameAt = Date.now();
        for (const d of data.drivers) map.upsertDriver(d);
        for (const id of data.left) map.removeDriver(id);
      }
      figures.drivers = map.drivers.size;
      $('#map-count').textContent = `${map.drivers.size.toLocaleString()} drivers`;
      if (selected) showDriver(map.drivers.get(selected) || null, true);
    };
  }

  function showDriver(d, refresh = false) {
    const card = $('#driver-card');
    if (!d) {
      if (!refresh) { card.hidden = true; selected = null; }
      return;
    }
    selected = d.driverId;
    card.hidden = false;
    card.replaceChildren(
      el('h3', {}, d.driverId, ' ', el('span', { class: 'pill ' + String(d.availability).toLowerCase() }, d.availability)),
      el('dl', {},
        el('dt', {}, 'trip'), el('dd', {}, d.tripId ? el('button', { class: 'link', type: 'button', onclick: () => inspect(d.tripId) }, d.tripId) : '—'),
        el('dt', {}, 'position'), el('dd', {}, `${d.lat.toFixed(5)}, ${d.lng.toFixed(5)}`),
        el('dt', {}, 'speed'), el('dd', {}, typeof d.speed === 'number' ? `${(d.speed * 3.6).toFixed(0)} km/h` : '—'),
        el('dt', {}, 'heading'), el('dd', {}, typeof d.heading === 'number' ? `${Math.round(d.heading)}°` : '—'),
        el('dt', {}, 'last update'), el('dd', { class: 'age', 'data-at': d.updatedAt }, ago(d.updatedAt))),
    );
  }
  setInterval(() => { for (const a of document.querySelectorAll('[data-at]')) a.textContent = ago(a.dataset.at); }, 1000);

  // Start at the view in the address, else where the fleet is.
  const [hLat, hLng, hZoom] = location.hash.slice(1).split(',').map(Number);
  if ([hLat, hLng, hZoom].every(Number.isFinite)) map.setView({ lat: hLat, lng: hLng }, hZoom);
  else attempt('drivers', async () => {
    const got = await api('GET', '/api/v1/drivers?limit=1000');
    const points = got.drivers.filter((d) => d.location).map((d) => ({ lat: d.location.lat, lng: d.location.lng }));
    if (points.length) map.fit(points, 14);
    else map.changed(true);
  }).then((r) => { if (r === undefined) map.changed(true); });

  // Alerts and admin:events.
  const alerts = $('#alerts');
  const events = $('#events');
  const sock = new Sio(() => auth.token, {
    onState: (s, detail) => {
      $('#alerts-title').dataset.state = s;
      $('#alerts-title').textContent = s === 'live' ? 'Alerts' : `Alerts (${detail || s})`;
    },
    onConnect: async () => {
      if (!admin) {
        alerts.replaceChildren(el('li', { class: 'empty' }, 'Alerts and admin:events need an ADMIN token.'));
        return;
      }
      try {
        const ack = await sock.emit('admin:subscribe', {});
        if (!ack.ok) toast('admin:subscribe: ' + ack.error);
      } catch (e) { toast('admin:subscribe: ' + e.message); }
    },
    onEvent: (name, payload) => {
      if (name === 'server:alert') addAlert(payload);
      else addEvent(name, payload);
    },
  }).start();
  figures.socket = sock;

  function addAlert(a) {
    figures.alerts += 1;
    alerts.querySelector('.empty')?.remove();
    const key = a.driverId || a.tripId || String(figures.alerts);
    map.setAlert(key, a);
    const item = el('li', { class: 'alert ' + String(a.type).toLowerCase(), role: 'alert', 'data-trip': a.tripId || '' },
      el('strong', {}, a.type), ' ',
      a.driverId ? `driver ${a.driverId} ` : '', a.tripId ? `on trip ${a.tripId} ` : '',
      a.message ? `— ${a.message} ` : '',
      el('time', { 'data-at': a.at }, ago(a.at)), ' ',
      typeof a.lat === 'number' ? el('button', { type: 'button', onclick: () => map.setView({ lat: a.lat, lng: a.lng }, Math.max(map.zoom, 15)) }, 'show on map') : '',
      a.tripId ? el('button', { type: 'button', onclick: () => inspect(a.tripId) }, 'inspect trip') : '',
      el('button', { type: 'button', onclick: () => { map.setAlert(key, null); item.classList.add('done'); } }, 'acknowledge'));
    alerts.prepend(item);
    if (typeof a.lat === 'number') map.setView({ lat: a.lat, lng: a.lng }, Math.max(map.zoom, 13));
  }

  function addEvent(name, payload) {
    figures.events += 1;
    events.querySelector('.empty')?.remove();
    const p = { ...payload };
    delete p.emittedAt;
    delete p.eventId;
    events.prepend(el('li', {}, el('code', {}, name), ' ', el('span', { class: 'muted' }, JSON.stringify(p).slice(0, 160)), ' ',
      el('time', { 'data-at': payload.emittedAt }, ago(payload.emittedAt))));
    while (events.children.length > 200) events.lastChild.remove();
  }

  // The cluster.
  const charts = $('#charts');
  const c = {
    connections: new Chart(charts, 'Connections', ['sockets', 'SSE']),
    deliveries: new Chart(charts, 'Deliveries/s (this node)', ['deliveries']),
    acks: new Chart(charts, 'Acks/s by code (this node)', ['OK', 'RATE_LIMITED', 'other errors']),
    refused: new Chart(charts, 'Rate-limit refusals/s (this node)', ['refused']),
    memory: new Chart(charts, 'Redis memory', ['memory'], { unit: ' MB' }),
    ops: new Chart(charts, 'Redis ops/s', ['ops']),
    channels: new Chart(charts, 'Pub/sub channels', ['channels']),
    lag: new Chart(charts, 'Pub/sub lag (this node)', ['dropped/s', 'gap s']),
    queue: new Chart(charts, 'Snapshot queue depth', ['jobs']),
  };
  let last = null;
  async function poll() {
    const now = Date.now();
    let m = null;
    try { m = parseMetrics(await (await fetch('/metrics')).text()); } catch { /* shown as gaps */ }
    let s = null;
    if (admin) {
      try { s = await api('GET', '/api/v1/admin/stats'); } catch (e) { if (e.status !== 403) setLink('lost', 'stats: ' + e.code); }
    }
    if (s) {
      $('#nodes tbody').replaceChildren(...s.cluster.nodes.map((n) => el('tr', { 'data-node': n.id },
        el('td', {}, n.id), el('td', {}, n.connections), el('td', {}, n.sseStreams),
        el('td', { title: (n.activeTrips || []).join(', ') }, (n.activeTrips || []).length), el('td', {}, `${Math.round(n.uptimeSecs / 60)} min`))));
      c.connections.push([s.cluster.connections, s.cluster.sseStreams]);
      c.memory.push([s.redis ? s.redis.usedMemoryBytes / 1048576 : null]);
      c.ops.push([s.redis ? s.redis.opsPerSec : null]);
      c.channels.push([s.redis ? s.redis.pubsubChannels : null]);
      c.queue.push([s.snapshotQueueDepth]);
    } else if (!admin) {
      $('#nodes tbody').replaceChildren(el('tr', {}, el('td', { colspan: 5 }, 'Cluster figures need an ADMIN token.')));
    }
    if (m) {
      const cur = {
        at: now,
        deliveries: sumOf(m, 'fleetcast_deliveries_total'),
        ok: sumOf(m, 'fleetcast_acks_total', (l) => l.code === 'OK'),
        limited: sumOf(m, 'fleetcast_acks_total', (l) => l.code === 'RATE_LIMITED'),
        errors: sumOf(m, 'fleetcast_acks_total', (l) => l.code !== 'OK' && l.code !== 'RATE_LIMITED'),
        refused: sumOf(m, 'fleetcast_rate_limited_total') + sumOf(m, 'fleetcast_http_rate_limited_total'),
        lagged: sumOf(m, 'fleetcast_pubsub_lagged_total'),
        gap: sumOf(m, 'fleetcast_pubsub_gap_seconds_sum'),
      };
      if (last) {
        const dt = (cur.at - last.at) / 1000;
        const rate = (k) => Math.max(0, (cur[k] - last[k]) / dt);
        c.deliveries.push([rate('deliveries')]);
        c.acks.push([rate('ok'), rate('limited'), rate('errors')]);
        c.refused.push([rate('refused')]);
        c.lag.push([rate('lagged'), cur.gap]);
      }
      last = cur;
    }
  }
  poll();
  setInterval(poll, POLL_MS);

  // The trip inspector.
  async function inspect(id) {
    $('#inspect-id').value = id;
    const box = $('#inspection');
    const got = await attempt('inspect ' + id, () => api('GET', `/api/v1/admin/trips/${encodeURIComponent(id)}`));
    if (!got) return;
    const t = got.trip;
    box.replaceChildren(
      el('h3', {}, t.title, ' ', el('span', { class: 'pill' }, t.status)),
      el('p', {}, `${t.origin.name} → ${t.destination.name} · ${t.tripType} · driver ${t.driverId || '—'} · `,
        `${t.availableSeats}/${t.totalSeats} seats free · ${got.subscribers.sseStreams} SSE streams`,
        got.location ? ` · at ${got.location.lat.toFixed(5)}, ${got.location.lng.toFixed(5)} (${ago(got.location.updatedAt)})` : ''),
      el('h4', {}, 'Status log'),
      got.statusLog.length
        ? el('ol', { class: 'log' }, got.statusLog.map((s) => el('li', {}, `${s.previousStatus || '—'} → `, el('b', {}, s.newStatus),
          ` ${s.notes ? '“' + s.notes + '” ' : ''}by ${s.changedBy || '—'} `, el('time', {}, s.createdAt))))
        : el('p', { class: 'muted' }, 'No status changes yet.'),
      el('h4', {}, `Bookings (${got.bookings.length})`),
      el('ul', {}, got.bookings.map((b) => el('li', {}, `${b.referenceCode || b.id} · ${b.passengerName || b.passengerId} · ${b.seatsBooked} seat(s) · ${b.status}`))),
      el('h4', {}, `Recent events (${got.recentEvents.length}${got.historyComplete ? '' : ', older ones expired'})`),
      el('ol', { class: 'log events' }, got.recentEvents.map((e) => el('li', {},
        el('code', {}, e.event), ' ', el('span', { class: 'muted' }, e.eventId), el('details', {}, el('summary', {}, 'payload'),
          el('pre', {}, JSON.stringify(e.payload, null, 2)))))),
    );
  }
  $('#inspect-form').addEventListener('submit', (e) => { e.preventDefault(); inspect($('#inspect-id').value.trim()); });

  // The publish form.
  $('#publish-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const list = (v) => v.split(',').map((s) => s.trim()).filter(Boolean);
    let payload;
    try { payload = JSON.parse($('#pub-payload').value); } catch (err) { toast('payload is not JSON: ' + err.message); return; }
    const rooms = list($('#pub-rooms').value);
    const users = list($('#pub-users').value);
    const body = { event: $('#pub-event').value.trim(), payload };
    if (rooms.length) body.rooms = rooms;
    if (users.length) body.users = users;
    const out = $('#publish-result');
    try {
      const r = await api('POST', '/api/v1/emit', body);
      out.className = r.success ? 'ok' : 'warn';
      out.textContent = JSON.stringify(r, null, 2);
    } catch (err) {
      out.className = 'error';
      out.textContent = `${err.status} ${err.code}: ${err.message}`;
    }
  });
});
