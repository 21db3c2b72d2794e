// The trip tracker (`/track/{tripId}`; a PASSENGER of the trip, a CONDUCTOR with its
// grant, or an ADMIN/BUSINESS user): the trip from `GET /api/trips/{id}`, then a Socket.IO
// connection that sends `passenger:subscribe` (again after each reconnect) and follows
// `server:location:update` with its `progress`, `trip.status.updated`,
// `server:trip:status` and `trip.driver.arriving`; the booking's ticket is the node's QR
// code (`GET /api/bookings/{id}/ticket.svg`).

import { $, api, auth, el, fmtEta, fmtKm, setLink, signIn, toast } from './common.js';
import { FleetMap } from './map.js';
import { Sio } from './sio.js';

const STEPS = ['PUBLISHED', 'IN_PROGRESS', 'DEPARTED', 'ARRIVED', 'COMPLETED'];
const LABELS = {
  DRAFT: 'Draft', PUBLISHED: 'Booked, waiting for a driver', IN_PROGRESS: 'Driver on the way to pick you up',
  DEPARTED: 'On the way', ARRIVED: 'Arrived', COMPLETED: 'Completed', CANCELLED: 'Cancelled',
};

const tripId = decodeURIComponent(location.pathname.replace(/^\/track\//, '').replace(/\/$/, ''));
const view = { trip: null, location: null, progress: null, seen: {}, updates: 0 };
window.fleetcastTrack = view;

signIn([], async () => {
  let trip;
  try {
    trip = await api('GET', `/api/trips/${encodeURIComponent(tripId)}`);
  } catch (e) {
    $('main').replaceChildren(el('section', { class: 'card' }, el('h2', {}, e.status === 404 ? 'No such trip' : 'Not allowed'),
      el('p', {}, `${e.code}: ${e.message}`)));
    return;
  }
  view.trip = trip;
  $('main').replaceChildren($('#track-body').content.cloneNode(true));
  $('#trip-title').textContent = trip.title;
  document.title = `fleetcast · ${trip.title}`;
  const cfg = await (await fetch('/web/config.json')).json().catch(() => ({}));
  const map = new FleetMap($('#map'), { center: trip.origin, zoom: 13, tileUrl: cfg.tileUrl });
  map.setPlaces([
    { lat: trip.origin.lat, lng: trip.origin.lng, label: 'P', name: trip.origin.name, color: '#2563eb' },
    { lat: trip.destination.lat, lng: trip.destination.lng, label: 'D', name: trip.destination.name, color: '#7c3aed' },
  ]);
  map.fit([trip.origin, trip.destination], 15);
  view.seen[trip.status] = trip.updatedAt;
  renderTimeline();
  loadBookings();

  function showDriver(loc) {
    if (!loc) return;
    view.location = loc;
    view.updates += 1;
    map.upsertDriver({ driverId: loc.driverId, lat: loc.lat, lng: loc.lng, heading: loc.heading, speed: loc.speed, availability: 'BUSY' });
    if (loc.progress) view.progress = loc.progress;
    const p = view.progress;
    $('#progress').textContent = p
      ? `${p.target === 'PICKUP' ? 'Pick-up' : 'Destination'} in ${fmtKm(p.distanceKm)} · ETA ${fmtEta(p.etaSeconds)}`
      : `Driver at ${loc.lat.toFixed(5)}, ${loc.lng.toFixed(5)}`;
  }

  function setStatus(status, at) {
    view.trip.status = status;
    view.seen[status] = at || new Date().toISOString();
    if (status !== 'IN_PROGRESS' && status !== 'DEPARTED') view.progress = null;
    renderTimeline();
  }

  function renderTimeline() {
    const cur = view.trip.status;
    const steps = cur === 'CANCELLED' ? [...STEPS.slice(0, 1), 'CANCELLED'] : STEPS;
    const at = steps.indexOf(cur);
    $('#timeline').replaceChildren(...steps.map((s, i) => el('li', {
      class: i < at ? 'done' : i === at ? 'current' : 'todo', 'data-status': s, 'aria-current': i === at ? 'step' : undefined,
    }, el('span', {}, LABELS[s]), view.seen[s] ? el('time', {}, new Date(view.seen[s]).toLocaleTimeString()) : '')));
  }

  async function loadBookings() {
    let got;
    try { got = await api('GET', `/api/trips/${encodeURIComponent(tripId)}/bookings`); } catch (e) { toast(`bookings: ${e.code}`); return; }
    const mine = got.bookings.filter((b) => auth.claims.role !== 'PASSENGER' || b.passengerId === auth.claims.sub);
    if (!mine.length) return;
    $('#bookings').replaceChildren(...mine.map((b) => el('div', { class: 'booking card', 'data-booking': b.id },
      el('div', {},
        el('h3', {}, b.referenceCode || b.id, ' ', el('span', { class: 'pill' }, b.status)),
        el('p', {}, `${b.passengerName || b.passengerId} · ${b.seatsBooked} seat${b.seatsBooked === 1 ? '' : 's'}${b.seatNumber ? ' · seat ' + b.seatNumber : ''}`),
        b.pickupPoint ? el('p', {}, 'Pick-up: ' + b.pickupPoint) : ''),
      b.ticketToken && b.status !== 'CANCELLED'
        ? el('img', { class: 'ticket', alt: `ticket QR code for booking ${b.referenceCode || b.id}`, width: 200, height: 200,
          src: `/api/bookings/${encodeURIComponent(b.id)}/ticket.svg?token=${encodeURIComponent(auth.token)}` })
        : '')));
  }

  const sock = new Sio(() => auth.token, {
    onState: (s, detail) => {
      if (s === 'live') setLink('live');
      else if (s === 'refused') setLink('lost', `refused: ${detail}`);
      else setLink(s);
    },
    onConnect: async () => {
      try {
        const ack = await sock.emit('passenger:subscribe', { tripId });
        if (!ack.ok) { toast(`passenger:subscribe: ${ack.error}${ack.message ? ' — ' + ack.message : ''}`); return; }
        showDriver(ack.current);
      } catch (e) { toast('passenger:subscribe: ' + e.message); }
    },
    onEvent: (name, p) => {
      if (name === 'server:location:update' && p.tripId === tripId) showDriver(p);
      else if (name === 'trip.status.updated' && p.tripId === tripId) { setStatus(p.newStatus, p.updatedAt); loadBookings(); }
      else if (name === 'server:trip:status' && p.tripId === tripId) toast(`driver: ${p.status}`, p.status === 'EMERGENCY' ? 'error' : 'notice');
      else if (name === 'trip.driver.arriving' && p.tripId === tripId) {
        const b = $('#arriving');
        b.hidden = false;
        b.textContent = p.target === 'PICKUP' ? 'Your driver is arriving at the pick-up.' : 'Arriving at the destination.';
      } else if ((name === 'booking.confirmed' || name === 'booking.cancelled') && p.tripId === tripId) loadBookings();
    },
  }).start();
  view.socket = sock;
});
