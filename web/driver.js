// The driver dashboard (DRIVER): the caller's user room over SSE with offer eligibility
// (`/api/v1/realtime/me/stream?offers=true`, CONTRACT §7) brings offers, their expiry,
// trip status and notifications; a lost stream reconnects by itself and resumes after its
// last event id (EventSource sends `Last-Event-ID`). Accept, decline and status changes
// are HTTP calls; positions go to `POST /api/v1/drivers/me/location`, from the browser's
// geolocation or a simulated drive towards the trip's next stop.

import { $, api, attempt, auth, el, fmtKm, setLink, signIn, toast, withToken } from './common.js';

const TRIP_KEY = 'fleetcast.driver.trip';
const NEXT = { IN_PROGRESS: 'DEPARTED', DEPARTED: 'ARRIVED', ARRIVED: 'COMPLETED' };
const FINAL = ['COMPLETED', 'CANCELLED'];
const SPEED = 12; // m/s of the simulated drive

const state = { offers: new Map(), trip: null, lastEventId: null, unread: 0, position: null, events: 0 };
window.fleetcastDriver = state;

signIn(['DRIVER'], () => {
  $('main').replaceChildren($('#driver-body').content.cloneNode(true));
  let stream = null;
  let retryMs = 1000;

  function openStream() {
    if (stream) stream.close();
    const params = { offers: 'true' };
    // A new EventSource cannot send Last-Event-ID: the query carries it.
    if (state.lastEventId) params.lastEventId = state.lastEventId;
    const d = $('#f-distance').value;
    const e = $('#f-earnings').value;
    if (d) params.maxDistance = d;
    if (e) params.minEarnings = e;
    setLink('connecting');
    const es = new EventSource(withToken('/api/v1/realtime/me/stream', params));
    stream = es;
    es.onopen = () => { setLink('live'); retryMs = 1000; };
    es.onerror = () => {
      if (es.readyState !== EventSource.CLOSED) { setLink('lost'); return; }
      // Refused (401 once the token expired, 429 over the connection cap, 503 while the node
      // cannot reach Redis): EventSource gives up, so the page opens a new stream later,
      // resuming after the last event it saw.
      if (auth.expired()) { setLink('lost', 'token expired — sign in again'); return; }
      setLink('lost', `stream refused — retrying in ${Math.round(retryMs / 1000)} s`);
      setTimeout(() => { if (stream === es) openStream(); }, retryMs);
      retryMs = Math.min(retryMs * 2, 30_000);
    };
    es.onmessage = (m) => {
      if (m.lastEventId) state.lastEventId = m.lastEventId;
      state.events += 1;
      const data = JSON.parse(m.data);
      handle(data.type, data);
    };
  }

  function handle(type, data) {
    switch (type) {
      case 'trip.offer.created': addOffer(data); break;
      case 'trip.offer.expired': removeOffer(data.tripId, data.reason === 'TAKEN' ? 'taken by another driver' : `expired (${data.reason})`); break;
      case 'trip.offer.accepted': removeOffer(data.tripId); break;
      case 'trip.status.updated':
        if (state.trip && state.trip.id === data.tripId) { state.trip.status = data.newStatus; renderTrip(); }
        break;
      case 'notification': addNotification(data); break;
      default:
    }
  }

  // Offers.
  function addOffer(o) {
    if (state.offers.has(o.tripId)) return;
    const left = el('span', { class: 'countdown', 'aria-label': 'time left' });
    const card = el('li', { class: `offer card urgency-${o.urgency}`, 'data-trip': o.tripId },
      el('div', { class: 'offer-head' }, el('strong', {}, o.title), el('span', { class: 'pill' }, o.urgency), left),
      el('p', {}, `${o.originName} → ${o.destName}`),
      el('p', { class: 'facts' }, el('span', {}, fmtKm(o.distanceKm) + ' away'), el('span', {}, `${o.estimatedEarnings} ${o.currency}`),
        el('span', {}, `${o.seats} seat${o.seats === 1 ? '' : 's'}`), el('span', {}, o.tripType)),
      el('div', { class: 'row' },
        el('button', { type: 'button', class: 'accept', onclick: () => accept(o.tripId) }, 'Accept'),
        el('button', { type: 'button', class: 'decline secondary', onclick: () => decline(o.tripId) }, 'Decline')));
    state.offers.set(o.tripId, { offer: o, card, left, deadline: Date.parse(o.acceptanceDeadline) });
    $('#offers').prepend(card);
    tick();
    $('#offers-empty').hidden = true;
  }

  function removeOffer(id, why) {
    const o = state.offers.get(id);
    if (!o) return;
    state.offers.delete(id);
    o.card.remove();
    if (why) toast(`${o.offer.title}: ${why}`, 'notice');
    $('#offers-empty').hidden = state.offers.size > 0;
  }

  function tick() {
    const now = Date.now();
    for (const [id, o] of state.offers) {
      const s = Math.max(0, Math.ceil((o.deadline - now) / 1000));
      o.left.textContent = `${s} s`;
      o.card.classList.toggle('ending', s <= 10);
      if (s === 0) removeOffer(id, 'the deadline passed');
    }
  }
  setInterval(tick, 250);

  async function accept(id) {
    try {
      const trip = await api('POST', `/api/drivers/trips/accept/${encodeURIComponent(id)}`);
      removeOffer(id);
      setTrip(trip);
    } catch (e) {
      removeOffer(id, e.code === 'CONFLICT' ? 'taken by another driver' : `${e.code}: ${e.message}`);
    }
  }

  async function decline(id) {
    const ok = await attempt('decline', () => api('POST', `/api/drivers/trips/${encodeURIComponent(id)}/decline`));
    if (ok) removeOffer(id);
  }

  // The active trip.
  function setTrip(trip) {
    state.trip = trip && !FINAL.includes(trip.status) ? trip : null;
    if (state.trip) sessionStorage.setItem(TRIP_KEY, state.trip.id); else sessionStorage.removeItem(TRIP_KEY);
    renderTrip();
  }

  function renderTrip() {
    const box = $('#trip');
    const t = state.trip;
    if (!t) {
      box.replaceChildren(el('p', { class: 'muted' }, 'No active trip: accept an offer below.'));
      return;
    }
    if (FINAL.includes(t.status)) { setTrip(null); toast(`trip ${t.title} is ${t.status}`, 'notice'); return; }
    const next = NEXT[t.status];
    box.replaceChildren(
      el('h3', {}, t.title, ' ', el('span', { class: 'pill', id: 'trip-status' }, t.status)),
      el('p', {}, `${t.origin.name} → ${t.destination.name}`),
      el('p', { class: 'muted' }, t.status === 'IN_PROGRESS' ? 'Drive to the pick-up.' : t.status === 'DEPARTED' ? 'Drive to the destination.' : 'At the destination.'),
      el('div', { class: 'row' },
        next && el('button', { type: 'button', class: 'next-status', onclick: () => changeStatus(next) }, `Mark ${next.toLowerCase().replace('_', ' ')}`),
        el('button', { type: 'button', class: 'secondary', onclick: () => changeStatus('CANCELLED') }, 'Cancel trip')));
  }

  async function changeStatus(status) {
    const t = state.trip;
    const got = await attempt('status', () => api('PUT', `/api/drivers/trips/${encodeURIComponent(t.id)}/status`, { status }));
    if (got) setTrip(got);
  }

  // Notifications.
  function addNotification(n) {
    const list = $('#notif-list');
    list.querySelector('.empty')?.remove();
    list.prepend(el('li', { class: 'level-' + n.level }, el('strong', {}, n.title), ' ', n.body));
    if ($('#notifications').hidden) {
      state.unread += 1;
      $('#badge').hidden = false;
      $('#badge').textContent = String(state.unread);
    }
  }
  $('#bell').addEventListener('click', () => {
    const box = $('#notifications');
    box.hidden = !box.hidden;
    $('#bell').setAttribute('aria-expanded', String(!box.hidden));
    if (!box.hidden) { state.unread = 0; $('#badge').hidden = true; }
  });

  // Positions.
  let sim = null;
  let geo = null;
  async function send(p) {
    state.position = p;
    const body = { lat: p.lat, lng: p.lng, speed: p.speed, heading: p.heading };
    if (state.trip) body.tripId = state.trip.id;
    try {
      await api('POST', '/api/v1/drivers/me/location', body);
      $('#pos-state').textContent = `sent ${p.lat.toFixed(5)}, ${p.lng.toFixed(5)}`;
    } catch (e) {
      $('#pos-state').textContent = `not sent: ${e.code}`;
      if (e.code !== 'RATE_LIMITED') toast(`position: ${e.code} — ${e.message}`);
    }
  }

  function step() {
    const p = state.position;
    const t = state.trip;
    const target = t && (t.status === 'IN_PROGRESS' ? t.origin : t.status === 'DEPARTED' ? t.destination : null);
    if (!target) { send({ ...p, speed: 0 }); return; }
    const dy = (target.lat - p.lat) * 111320;
    const dx = (target.lng - p.lng) * 111320 * Math.cos((p.lat * Math.PI) / 180);
    const dist = Math.hypot(dx, dy);
    const heading = (((Math.atan2(dx, dy) * 180) / Math.PI) + 360) % 360;
    const f = dist <= SPEED ? 1 : SPEED / dist;
    send({ lat: p.lat + (target.lat - p.lat) * f, lng: p.lng + (target.lng - p.lng) * f, speed: dist > 1 ? SPEED : 0, heading: dist > 1 ? heading : p.heading });
  }

  $('#simulate').addEventListener('click', () => {
    const b = $('#simulate');
    if (sim) { clearInterval(sim); sim = null; b.setAttribute('aria-pressed', 'false'); b.textContent = 'Simulate a drive'; $('#pos-state').textContent = 'not sharing'; return; }
    const lat = Number($('#pos-lat').value);
    const lng = Number($('#pos-lng').value);
    if (!Number.isFinite(lat) || !Number.isFinite(lng)) { toast('start position: enter a latitude and a longitude'); return; }
    if (!state.position) state.position = { lat, lng, speed: 0, heading: 0 };
    b.setAttribute('aria-pressed', 'true');
    b.textContent = 'Stop the drive';
    step();
    sim = setInterval(step, 1000);
  });

  $('#geo').addEventListener('click', () => {
    const b = $('#geo');
    if (geo !== null) { navigator.geolocation.clearWatch(geo); geo = null; b.setAttribute('aria-pressed', 'false'); return; }
    if (!navigator.geolocation) { toast('this browser gives no geolocation'); return; }
    let lastSent = 0;
    geo = navigator.geolocation.watchPosition((pos) => {
      if (Date.now() - lastSent < 1000) return;
      lastSent = Date.now();
      const c = pos.coords;
      send({ lat: c.latitude, lng: c.longitude, speed: c.speed ?? undefined, heading: Number.isFinite(c.heading) ? c.heading : undefined });
    }, (err) => toast('geolocation: ' + err.message), { enableHighAccuracy: true });
    b.setAttribute('aria-pressed', 'true');
  });

  $('#filters').addEventListener('submit', (e) => { e.preventDefault(); openStream(); });

  // Resume the trip this tab had.
  const kept = sessionStorage.getItem(TRIP_KEY);
  if (kept) attempt('trip', () => api('GET', `/api/trips/${encodeURIComponent(kept)}`)).then((t) => setTrip(t || null));
  openStream();
}, { role: 'DRIVER' });
