// Small time-series charts for the console's cluster panel: one canvas per figure, the
// last minutes of samples (one every poll), up to three series, the current values in the
// legend. No library: a polyline per series and a max-scaled axis.

const PALETTE = ['#2563eb', '#dc2626', '#16a34a'];

export class Chart {
  /**
   * @param {HTMLElement} parent where the chart goes
   * @param {string} title
   * @param {string[]} series names
   * @param {{unit?: string, keep?: number, format?: Function}} opts
   */
  constructor(parent, title, series, opts = {}) {
    this.series = series;
    this.keep = opts.keep || 150;
    this.unit = opts.unit || '';
    this.format = opts.format || ((v) => (v >= 100 ? Math.round(v) : Math.round(v * 10) / 10).toLocaleString());
    this.samples = [];
    const fig = document.createElement('figure');
    fig.className = 'chart';
    const cap = document.createElement('figcaption');
    this.legend = document.createElement('span');
    cap.append(title, ' ', this.legend);
    this.canvas = document.createElement('canvas');
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute('aria-label', title);
    fig.append(cap, this.canvas);
    parent.append(fig);
  }

  /** Adds one sample: a value per series (`null` = unknown). */
  push(values) {
    this.samples.push(values);
    if (this.samples.length > this.keep) this.samples.shift();
    this.legend.replaceChildren(...this.series.map((name, i) => {
      const s = document.createElement('b');
      s.style.color = PALETTE[i];
      const v = values[i];
      s.textContent = `${this.series.length > 1 ? name + ' ' : ''}${v === null || v === undefined ? '—' : this.format(v)}${this.unit} `;
      return s;
    }));
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth || 240;
    const h = c.clientHeight || 70;
    c.width = w * dpr;
    c.height = h * dpr;
    const ctx = c.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    let max = 0;
    for (const s of this.samples) for (const v of s) if (typeof v === 'number' && v > max) max = v;
    max = max > 0 ? max * 1.15 : 1;
    ctx.strokeStyle = '#e5e7eb';
    ctx.beginPath();
    ctx.moveTo(0, h - 0.5);
    ctx.lineTo(w, h - 0.5);
    ctx.stroke();
    ctx.fillStyle = '#6b7280';
    ctx.font = '10px system-ui, sans-serif';
    ctx.fillText(this.format(max) + this.unit, 2, 10);
    const dx = w / Math.max(1, this.keep - 1);
    const x0 = w - dx * (this.samples.length - 1);
    this.series.forEach((_, i) => {
      ctx.strokeStyle = PALETTE[i];
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let pen = false;
      this.samples.forEach((s, j) => {
        const v = s[i];
        if (typeof v !== 'number') { pen = false; return; }
        const x = x0 + j * dx;
        const y = h - 2 - (v / max) * (h - 14);
        if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        pen = true;
      });
      ctx.stroke();
    });
  }
}

/** Parses Prometheus text into `{name: [{labels, value}]}`. */
export function parseMetrics(text) {
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const kv of m[3].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[kv[1]] = kv[2];
    (out[m[1]] = out[m[1]] || []).push({ labels, value: Number(m[4]) });
  }
  return out;
}

/** Sum of a metric's samples whose labels match `where`. */
export function sumOf(metrics, name, where = () => true) {
  return (metrics[name] || []).filter((s) => where(s.labels)).reduce((a, s) => a + s.value, 0);
}
