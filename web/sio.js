// A small Socket.IO client (protocol v5 over Engine.IO v4's websocket transport, the
// contract's §2) for the pages: connect with `auth.token`, emit with acknowledgements,
// receive events, answer pings, and reconnect with backoff (the page re-subscribes in
// `onConnect`). Text packets only: the contract's events are JSON.

export class Sio {
  /**
   * @param {() => string} token the current token, read at each (re)connect
   * @param {{onConnect?: Function, onEvent?: Function, onState?: Function}} handlers
   */
  constructor(token, handlers = {}) {
    this.token = token;
    this.handlers = handlers;
    this.acks = new Map();
    this.nextAck = 0;
    this.ws = null;
    this.connected = false;
    this.stopped = false;
    this.backoff = 500;
  }

  start() {
    this.stopped = false;
    this.open();
    return this;
  }

  stop() {
    this.stopped = true;
    if (this.ws) this.ws.close();
  }

  state(s, detail) {
    if (this.handlers.onState) this.handlers.onState(s, detail);
  }

  open() {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    this.state('connecting');
    const ws = new WebSocket(`${proto}://${location.host}/socket.io/?EIO=4&transport=websocket`);
    this.ws = ws;
    ws.onmessage = (m) => this.packet(String(m.data));
    ws.onclose = () => {
      const was = this.connected;
      this.connected = false;
      for (const [, p] of this.acks) p.reject(Object.assign(new Error('connection closed'), { code: 'UNAVAILABLE' }));
      this.acks.clear();
      if (this.stopped) { this.state('off'); return; }
      this.state('lost', was ? 'connection lost' : 'cannot connect');
      setTimeout(() => this.open(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 5000);
    };
  }

  send(text) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
  }

  packet(data) {
    switch (data[0]) {
      case '0': // Engine.IO open: connect the default namespace with the token.
        this.send('40' + JSON.stringify({ token: this.token() }));
        return;
      case '2': // ping
        this.send('3');
        return;
      case '4':
        this.message(data.slice(1));
        return;
      default:
    }
  }

  message(data) {
    const type = data[0];
    let rest = data.slice(1);
    if (type === '0') {
      this.connected = true;
      this.backoff = 500;
      this.state('live');
      if (this.handlers.onConnect) this.handlers.onConnect();
      return;
    }
    if (type === '4') {
      // connect_error: NO_TOKEN, INVALID_TOKEN or RATE_LIMITED. A bad token is final.
      let message = 'connect_error';
      try { message = JSON.parse(rest).message; } catch { /* keep the default */ }
      this.state('refused', message);
      if (message === 'INVALID_TOKEN' || message === 'NO_TOKEN') this.stopped = true;
      this.ws.close();
      return;
    }
    let id = '';
    while (rest && rest[0] >= '0' && rest[0] <= '9') { id += rest[0]; rest = rest.slice(1); }
    let args;
    try { args = JSON.parse(rest); } catch { return; }
    if (type === '2' && Array.isArray(args)) {
      if (this.handlers.onEvent) this.handlers.onEvent(args[0], args[1]);
    } else if (type === '3' && id) {
      const p = this.acks.get(Number(id));
      if (p) { this.acks.delete(Number(id)); clearTimeout(p.timer); p.resolve(args[0]); }
    }
  }

  /** Emits `name` with `payload`; resolves with the ack (`{ok, …}`). */
  emit(name, payload) {
    return new Promise((resolve, reject) => {
      if (!this.connected) {
        reject(Object.assign(new Error('not connected'), { code: 'UNAVAILABLE' }));
        return;
      }
      const id = this.nextAck++;
      const timer = setTimeout(() => {
        this.acks.delete(id);
        reject(Object.assign(new Error('no acknowledgement within 6 s'), { code: 'TIMEOUT' }));
      }, 6000);
      this.acks.set(id, { resolve, reject, timer });
      this.send('42' + id + JSON.stringify([name, payload === undefined ? {} : payload]));
    });
  }
}
