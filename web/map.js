// The pages' map: Web Mercator on a canvas, with an offline base (a graticule labelled in
// degrees and a scale bar) and, when the node has a tile URL template, raster tiles under
// it. Markers are drivers (a heading arrow, coloured by availability), places and alerts.
// Pan by dragging or with the arrow keys, zoom with the wheel or +/−; a click (or Enter on
// the focused map) picks the nearest marker. Drawing happens once per animation frame and
// only when something changed, so 10,000 markers cost one pass per frame.

const TILE = 256;
const COLORS = { AVAILABLE: '#16a34a', BUSY: '#d97706', OFFLINE: '#6b7280', EMERGENCY: '#dc2626' };

function project(lat, lng, zoom) {
  const s = TILE * 2 ** zoom;
  const phi = (Math.max(-85.05, Math.min(85.05, lat)) * Math.PI) / 180;
  return { x: ((lng + 180) / 360) * s, y: ((1 - Math.log(Math.tan(phi) + 1 / Math.cos(phi)) / Math.PI) / 2) * s };
}

function unproject(x, y, zoom) {
  const s = TILE * 2 ** zoom;
  const lng = (x / s) * 360 - 180;
  const n = Math.PI - (2 * Math.PI * y) / s;
  return { lat: (180 / Math.PI) * Math.atan(Math.sinh(n)), lng };
}

function niceStep(raw) {
  const steps = [1, 2, 5];
  let p = 10 ** Math.floor(Math.log10(raw));
  for (;;) {
    for (const m of steps) if (m * p >= raw) return m * p;
    p *= 10;
  }
}

export class FleetMap {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{center: {lat, lng}, zoom: number, tileUrl?: string, onView?: Function, onPick?: Function}} opts
   */
  constructor(canvas, opts) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.center = { ...opts.center };
    this.zoom = opts.zoom;
    this.tileUrl = opts.tileUrl || null;
    this.onView = opts.onView || (() => {});
    this.onPick = opts.onPick || (() => {});
    this.drivers = new Map();
    this.places = [];
    this.alerts = new Map();
    this.selected = null;
    this.tiles = new Map();
    this.dirty = true;
    this.drawMs = 0;
    this.viewTimer = null;
    this.bind();
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
    this.frame = 0;
    this.touch();
  }

  /** Asks for a redraw at the next animation frame (one per frame, none when idle). */
  touch() {
    this.dirty = true;
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      if (this.dirty) this.draw();
    });
  }

  resize() {
    const r = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    this.w = Math.max(1, r.width);
    this.h = Math.max(1, r.height);
    this.canvas.width = Math.round(this.w * dpr);
    this.canvas.height = Math.round(this.h * dpr);
    this.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    this.changed(true);
  }

  /** Marks the map for redrawing; `view` also tells the page the viewport moved. */
  changed(view = false) {
    this.touch();
    if (view) {
      clearTimeout(this.viewTimer);
      this.viewTimer = setTimeout(() => this.onView(this.bounds()), 350);
    }
  }

  toScreen(lat, lng) {
    const c = project(this.center.lat, this.center.lng, this.zoom);
    const p = project(lat, lng, this.zoom);
    return { x: p.x - c.x + this.w / 2, y: p.y - c.y + this.h / 2 };
  }

  toLatLng(x, y) {
    const c = project(this.center.lat, this.center.lng, this.zoom);
    return unproject(c.x + x - this.w / 2, c.y + y - this.h / 2, this.zoom);
  }

  /** `[minLng, minLat, maxLng, maxLat]` of the viewport. */
  bounds() {
    const nw = this.toLatLng(0, 0);
    const se = this.toLatLng(this.w, this.h);
    return [nw.lng, se.lat, se.lng, nw.lat];
  }

  setView(center, zoom = this.zoom) {
    this.center = { lat: Math.max(-85, Math.min(85, center.lat)), lng: ((center.lng + 540) % 360) - 180 };
    this.zoom = Math.max(2, Math.min(19, zoom));
    this.changed(true);
  }

  /** Centres and zooms so that every point shows. */
  fit(points, maxZoom = 16) {
    if (!points.length) return;
    const lats = points.map((p) => p.lat);
    const lngs = points.map((p) => p.lng);
    const center = { lat: (Math.min(...lats) + Math.max(...lats)) / 2, lng: (Math.min(...lngs) + Math.max(...lngs)) / 2 };
    let zoom = maxZoom;
    for (; zoom > 2; zoom -= 0.5) {
      const a = project(Math.max(...lats), Math.min(...lngs), zoom);
      const b = project(Math.min(...lats), Math.max(...lngs), zoom);
      if (b.x - a.x < this.w * 0.8 && b.y - a.y < this.h * 0.8) break;
    }
    this.setView(center, zoom);
  }

  bind() {
    const c = this.canvas;
    let drag = null;
    c.addEventListener('pointerdown', (e) => {
      drag = { x: e.clientX, y: e.clientY, moved: false };
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener('pointermove', (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      if (!drag.moved) return;
      const p = project(this.center.lat, this.center.lng, this.zoom);
      const ll = unproject(p.x - dx, p.y - dy, this.zoom);
      drag.x = e.clientX;
      drag.y = e.clientY;
      this.setView(ll);
    });
    c.addEventListener('pointerup', (e) => {
      if (drag && !drag.moved) {
        const r = c.getBoundingClientRect();
        this.pick(e.clientX - r.left, e.clientY - r.top);
      }
      drag = null;
    });
    c.addEventListener('wheel', (e) => {
      e.preventDefault();
      const r = c.getBoundingClientRect();
      this.zoomAt(e.clientX - r.left, e.clientY - r.top, e.deltaY < 0 ? 0.5 : -0.5);
    }, { passive: false });
    c.addEventListener('keydown', (e) => {
      const step = 80;
      const p = project(this.center.lat, this.center.lng, this.zoom);
      const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
      if (moves[e.key]) {
        e.preventDefault();
        this.setView(unproject(p.x + moves[e.key][0], p.y + moves[e.key][1], this.zoom));
      } else if (e.key === '+' || e.key === '=') {
        this.setView(this.center, this.zoom + 1);
      } else if (e.key === '-' || e.key === '_') {
        this.setView(this.center, this.zoom - 1);
      } else if (e.key === 'Enter') {
        this.pick(this.w / 2, this.h / 2, 60);
      }
    });
  }

  zoomAt(x, y, dz) {
    const before = this.toLatLng(x, y);
    this.zoom = Math.max(2, Math.min(19, this.zoom + dz));
    const p = this.toScreen(before.lat, before.lng);
    const c = project(this.center.lat, this.center.lng, this.zoom);
    const ll = unproject(c.x + (p.x - x), c.y + (p.y - y), this.zoom);
    this.setView(ll, this.zoom);
  }

  pick(x, y, radius = 14) {
    let best = null;
    let bestD = radius * radius;
    for (const d of this.drivers.values()) {
      const p = this.toScreen(d.lat, d.lng);
      const dd = (p.x - x) ** 2 + (p.y - y) ** 2;
      if (dd < bestD) { best = d; bestD = dd; }
    }
    this.selected = best ? best.driverId : null;
    this.changed();
    this.onPick(best);
  }

  upsertDriver(d) {
    this.drivers.set(d.driverId, { ...this.drivers.get(d.driverId), ...d });
    this.touch();
  }

  removeDriver(id) {
    this.drivers.delete(id);
    this.touch();
  }

  clearDrivers() {
    this.drivers.clear();
    this.touch();
  }

  setPlaces(places) {
    this.places = places;
    this.touch();
  }

  setAlert(id, alert) {
    if (alert) this.alerts.set(id, alert); else this.alerts.delete(id);
    this.touch();
  }

  draw() {
    const t0 = performance.now();
    this.dirty = false;
    const { ctx, w, h } = this;
    ctx.fillStyle = '#eef2f5';
    ctx.fillRect(0, 0, w, h);
    if (this.tileUrl) this.drawTiles();
    this.drawGrid();
    this.drawPlaces();
    this.drawDrivers();
    this.drawAlerts();
    this.drawScale();
    this.drawMs += performance.now() - t0;
  }

  drawTiles() {
    const z = Math.max(0, Math.min(19, Math.round(this.zoom)));
    const scale = 2 ** (this.zoom - z);
    const c = project(this.center.lat, this.center.lng, z);
    const left = c.x - this.w / 2 / scale;
    const top = c.y - this.h / 2 / scale;
    const n = 2 ** z;
    for (let ty = Math.floor(top / TILE); ty * TILE < top + this.h / scale; ty++) {
      if (ty < 0 || ty >= n) continue;
      for (let tx = Math.floor(left / TILE); tx * TILE < left + this.w / scale; tx++) {
        const x = ((tx % n) + n) % n;
        const key = `${z}/${x}/${ty}`;
        let img = this.tiles.get(key);
        if (!img) {
          img = new Image();
          img.onload = () => this.touch();
          img.src = this.tileUrl.replace('{z}', z).replace('{x}', x).replace('{y}', ty).replace('{s}', 'abc'[(x + ty) % 3]);
          this.tiles.set(key, img);
          if (this.tiles.size > 600) this.tiles.delete(this.tiles.keys().next().value);
        }
        if (img.complete && img.naturalWidth) {
          this.ctx.drawImage(img, (tx * TILE - left) * scale, (ty * TILE - top) * scale, TILE * scale + 0.5, TILE * scale + 0.5);
        }
      }
    }
  }

  drawGrid() {
    const { ctx, w, h } = this;
    const [minLng, minLat, maxLng, maxLat] = this.bounds();
    const step = niceStep(((maxLng - minLng) * 110) / w);
    const digits = Math.max(0, -Math.floor(Math.log10(step)));
    ctx.strokeStyle = 'rgba(30, 41, 59, 0.14)';
    ctx.fillStyle = 'rgba(30, 41, 59, 0.6)';
    ctx.lineWidth = 1;
    ctx.font = '11px system-ui, sans-serif';
    ctx.beginPath();
    for (let lng = Math.ceil(minLng / step) * step; lng <= maxLng; lng += step) {
      const x = Math.round(this.toScreen(minLat, lng).x) + 0.5;
      ctx.moveTo(x, 0);
      ctx.lineTo(x, h);
      ctx.fillText(`${lng.toFixed(digits)}°`, x + 3, 12);
    }
    for (let lat = Math.ceil(minLat / step) * step; lat <= maxLat; lat += step) {
      const y = Math.round(this.toScreen(lat, minLng).y) + 0.5;
      ctx.moveTo(0, y);
      ctx.lineTo(w, y);
      ctx.fillText(`${lat.toFixed(digits)}°`, 3, y - 3);
    }
    ctx.stroke();
  }

  drawScale() {
    const { ctx, h } = this;
    const metersPerPx = (156543.03392 * Math.cos((this.center.lat * Math.PI) / 180)) / 2 ** this.zoom;
    const meters = niceStep(metersPerPx * 100);
    const px = meters / metersPerPx;
    const label = meters >= 1000 ? `${meters / 1000} km` : `${meters} m`;
    ctx.fillStyle = 'rgba(255,255,255,0.85)';
    ctx.fillRect(8, h - 30, px + 16, 22);
    ctx.strokeStyle = '#1e293b';
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(16, h - 14);
    ctx.lineTo(16, h - 10);
    ctx.lineTo(16 + px, h - 10);
    ctx.lineTo(16 + px, h - 14);
    ctx.stroke();
    ctx.fillStyle = '#1e293b';
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillText(label, 20, h - 16);
  }

  drawPlaces() {
    const { ctx } = this;
    for (const p of this.places) {
      const s = this.toScreen(p.lat, p.lng);
      ctx.fillStyle = p.color || '#2563eb';
      ctx.beginPath();
      ctx.arc(s.x, s.y, 7, 0, Math.PI * 2);
      ctx.fill();
      ctx.fillStyle = '#fff';
      ctx.font = 'bold 9px system-ui, sans-serif';
      ctx.fillText(p.label || '', s.x - 3, s.y + 3);
      if (p.name) {
        ctx.fillStyle = '#1e293b';
        ctx.font = '12px system-ui, sans-serif';
        ctx.fillText(p.name, s.x + 10, s.y + 4);
      }
    }
  }

  drawDrivers() {
    const { ctx, w, h } = this;
    const small = this.drivers.size > 2000;
    const byColor = new Map();
    for (const d of this.drivers.values()) {
      const s = this.toScreen(d.lat, d.lng);
      if (s.x < -10 || s.y < -10 || s.x > w + 10 || s.y > h + 10) continue;
      const color = COLORS[d.availability] || COLORS.OFFLINE;
      if (!byColor.has(color)) byColor.set(color, []);
      byColor.get(color).push([s, d]);
    }
    for (const [color, list] of byColor) {
      ctx.fillStyle = color;
      ctx.beginPath();
      for (const [s, d] of list) {
        if (small) {
          ctx.rect(s.x - 1.5, s.y - 1.5, 3, 3);
        } else if (typeof d.heading === 'number') {
          const a = (d.heading * Math.PI) / 180;
          const sin = Math.sin(a);
          const cos = Math.cos(a);
          const pt = (dx, dy) => [s.x + dx * cos - dy * sin, s.y + dx * sin + dy * cos];
          const [x0, y0] = pt(0, -9);
          const [x1, y1] = pt(6, 6);
          const [x2, y2] = pt(0, 3);
          const [x3, y3] = pt(-6, 6);
          ctx.moveTo(x0, y0);
          ctx.lineTo(x1, y1);
          ctx.lineTo(x2, y2);
          ctx.lineTo(x3, y3);
          ctx.closePath();
        } else {
          ctx.moveTo(s.x + 5, s.y);
          ctx.arc(s.x, s.y, 5, 0, Math.PI * 2);
        }
      }
      ctx.fill();
    }
    const sel = this.selected && this.drivers.get(this.selected);
    if (sel) {
      const s = this.toScreen(sel.lat, sel.lng);
      ctx.strokeStyle = '#111827';
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(s.x, s.y, 11, 0, Math.PI * 2);
      ctx.stroke();
    }
  }

  drawAlerts() {
    const { ctx } = this;
    const pulse = 12 + 4 * Math.sin(performance.now() / 150);
    for (const a of this.alerts.values()) {
      if (typeof a.lat !== 'number' || typeof a.lng !== 'number') continue;
      const s = this.toScreen(a.lat, a.lng);
      ctx.strokeStyle = COLORS.EMERGENCY;
      ctx.lineWidth = 3;
      ctx.beginPath();
      ctx.arc(s.x, s.y, pulse, 0, Math.PI * 2);
      ctx.stroke();
    }
    if (this.alerts.size) this.touch();
  }
}
