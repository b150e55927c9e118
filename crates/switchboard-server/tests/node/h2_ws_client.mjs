// Node's built-in http2 module as an RFC 8441 WebSocket client (h2c with prior knowledge, no
// packages) against a running Switchboard server: the real-peer proof of issue 27, driven by
// tests/node_h2.rs.
//
//   node h2_ws_client.mjs PORT
//
// One HTTP/2 connection; every WebSocket is an extended CONNECT stream on it. Prints one
// "ok NAME" or "FAIL NAME: why" line per case and last `node-h2: N passed, M failed`; exits 1
// when a case failed. Cases: /echo text, binary, 64 KiB, ping/pong, a subprotocol, the close
// handshake; /ws subscribe + a publish from another stream of the same connection; a 404
// path answered on its stream while a sibling stream keeps echoing; GET /metrics over the
// same connection shows the WebSockets counted with http="2".
import crypto from 'node:crypto';
import http2 from 'node:http2';

const port = Number(process.argv[2]);
if (!port) {
  console.error('usage: node h2_ws_client.mjs PORT');
  process.exit(2);
}
const authority = `127.0.0.1:${port}`;
const PATIENCE = 10_000;

// --- the frame codec (RFC 6455 §5.2): the client masks, the server must not ---

const OP = { cont: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 };

function encode(opcode, payload) {
  const len = payload.length;
  let head;
  if (len < 126) head = Buffer.from([0x80 | opcode, 0x80 | len]);
  else if (len < 65536) head = Buffer.from([0x80 | opcode, 0x80 | 126, len >> 8, len & 255]);
  else {
    head = Buffer.alloc(10);
    head[0] = 0x80 | opcode;
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  const key = crypto.randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < len; i++) body[i] ^= key[i & 3];
  return Buffer.concat([head, key, body]);
}

// Parses the whole frames at the front of `buf`: [frames, rest]. Throws on a masked frame.
function decode(buf) {
  const frames = [];
  for (;;) {
    if (buf.length < 2) break;
    const fin = (buf[0] & 0x80) !== 0;
    const rsv = buf[0] & 0x70;
    const opcode = buf[0] & 0x0f;
    if (buf[1] & 0x80) throw new Error('the server masked a frame');
    if (rsv) throw new Error(`reserved bits ${rsv} set without an extension`);
    let len = buf[1] & 0x7f;
    let off = 2;
    if (len === 126) {
      if (buf.length < 4) break;
      len = buf.readUInt16BE(2);
      off = 4;
    } else if (len === 127) {
      if (buf.length < 10) break;
      len = Number(buf.readBigUInt64BE(2));
      off = 10;
    }
    if (buf.length < off + len) break;
    frames.push({ fin, opcode, payload: Buffer.from(buf.subarray(off, off + len)) });
    buf = buf.subarray(off + len);
  }
  return [frames, buf];
}

// A WebSocket on one HTTP/2 stream: messages (continuations joined) and control frames
// come out of `next()` in order as {type, data}; `ended` resolves at the stream's end.
class Ws {
  constructor(stream, response) {
    this.stream = stream;
    this.response = response;
    this.queue = [];
    this.waiters = [];
    this.buf = Buffer.alloc(0);
    this.partial = null;
    this.ended = new Promise((resolve) => stream.on('close', resolve));
    stream.on('data', (chunk) => this.onData(chunk));
    stream.on('error', (e) => this.push({ type: 'error', data: e }));
    stream.on('end', () => this.push({ type: 'end' }));
  }

  onData(chunk) {
    let frames;
    try {
      [frames, this.buf] = decode(Buffer.concat([this.buf, chunk]));
    } catch (e) {
      this.push({ type: 'error', data: e });
      return;
    }
    for (const f of frames) {
      if (f.opcode >= 8) {
        const name = Object.keys(OP).find((k) => OP[k] === f.opcode) ?? `op${f.opcode}`;
        this.push({ type: name, data: f.payload });
        continue;
      }
      if (f.opcode !== OP.cont) this.partial = { opcode: f.opcode, parts: [] };
      if (!this.partial) {
        this.push({ type: 'error', data: new Error('continuation without a first frame') });
        continue;
      }
      this.partial.parts.push(f.payload);
      if (f.fin) {
        const data = Buffer.concat(this.partial.parts);
        const type = this.partial.opcode === OP.text ? 'text' : 'binary';
        this.partial = null;
        this.push({ type, data: type === 'text' ? data.toString('utf8') : data });
      }
    }
  }

  push(event) {
    const w = this.waiters.shift();
    if (w) w(event);
    else this.queue.push(event);
  }

  next() {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return within(new Promise((resolve) => this.waiters.push(resolve)), 'the next frame');
  }

  send(opcode, payload) {
    this.stream.write(encode(opcode, typeof payload === 'string' ? Buffer.from(payload) : payload));
  }

  text(s) { this.send(OP.text, s); }

  // The next text message, parsed as JSON, skipping those of another "type" than `type`.
  async json(type) {
    for (;;) {
      const e = await this.next();
      if (e.type !== 'text') throw new Error(`expected a text message, got ${e.type} ${e.data}`);
      const m = JSON.parse(e.data);
      if (!type || m.type === type) return m;
    }
  }
}

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), PATIENCE);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// --- the HTTP/2 connection and its extended CONNECTs ---

const session = http2.connect(`http://${authority}`);
session.on('error', (e) => console.error(`session error: ${e.message}`));
const settings = await within(
  new Promise((resolve) => session.once('remoteSettings', resolve)),
  "the server's SETTINGS",
);

// An extended CONNECT to `path`: resolves {status, headers, ws} once the response arrives.
function connect(path, extra = {}) {
  const stream = session.request({
    ':method': 'CONNECT',
    ':protocol': 'websocket',
    ':scheme': 'http',
    ':path': path,
    ':authority': authority,
    'sec-websocket-version': '13',
    ...extra,
  }, { endStream: false });
  return within(new Promise((resolve, reject) => {
    stream.once('error', reject);
    stream.once('response', (headers) => {
      const status = headers[':status'];
      resolve({ status, headers, ws: status === 200 ? new Ws(stream, headers) : null, stream });
    });
  }), `the response to CONNECT ${path}`);
}

function get(path) {
  const stream = session.request({ ':method': 'GET', ':path': path });
  return within(new Promise((resolve, reject) => {
    let status;
    const parts = [];
    stream.on('response', (h) => { status = h[':status']; });
    stream.on('data', (c) => parts.push(c));
    stream.on('end', () => resolve({ status, body: Buffer.concat(parts).toString('utf8') }));
    stream.on('error', reject);
  }), `GET ${path}`);
}

function assert(cond, what) {
  if (!cond) throw new Error(what);
}

function eq(got, want, what) {
  const g = Buffer.isBuffer(got) ? got.toString('hex') : JSON.stringify(got);
  const w = Buffer.isBuffer(want) ? want.toString('hex') : JSON.stringify(want);
  assert(g === w, `${what}: got ${g.slice(0, 200)}, want ${w.slice(0, 200)}`);
}

// --- the cases ---

let echo; // the /echo stream the first cases share

const cases = [
  ['settings enable the extended CONNECT', async () => {
    eq(settings.enableConnectProtocol, true, 'SETTINGS_ENABLE_CONNECT_PROTOCOL');
  }],
  ['echo: a subprotocol offered and selected', async () => {
    const r = await connect('/echo', { 'sec-websocket-protocol': 'chat, superchat' });
    eq(r.status, 200, ':status');
    eq(r.headers['sec-websocket-protocol'], 'chat', 'sec-websocket-protocol');
    assert(r.headers['sec-websocket-accept'] === undefined, 'no sec-websocket-accept over h2');
    echo = r.ws;
  }],
  ['echo: text', async () => {
    echo.text('hello over node http2 ✓');
    eq(await echo.next(), { type: 'text', data: 'hello over node http2 ✓' }, 'echo');
  }],
  ['echo: binary', async () => {
    const b = Buffer.from([0, 1, 2, 253, 254, 255]);
    echo.send(OP.binary, b);
    const e = await echo.next();
    eq(e.type, 'binary', 'type');
    eq(e.data, b, 'payload');
  }],
  ['echo: 64 KiB', async () => {
    const big = Buffer.alloc(64 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = i % 251;
    echo.send(OP.binary, big);
    const e = await echo.next();
    eq(e.type, 'binary', 'type');
    eq(e.data.length, big.length, 'length');
    assert(e.data.equals(big), 'the 64 KiB payload came back changed');
  }],
  ['echo: ping gets its pong', async () => {
    echo.send(OP.ping, 'are you there');
    const e = await echo.next();
    eq(e.type, 'pong', 'type');
    eq(e.data.toString(), 'are you there', 'pong payload');
    echo.text('after the ping');
    eq(await echo.next(), { type: 'text', data: 'after the ping' }, 'echo after the ping');
  }],
  // The reply echoes the code with an empty reason, as over HTTP/1.1: the sans-IO connection
  // (switchboard-proto, receive.rs) never echoes the peer's reason (RFC 6455 §5.5.1 asks only
  // for the code).
  ['echo: close handshake (code echoed), stream ended', async () => {
    const payload = Buffer.concat([Buffer.from([0x0f, 0xa0]), Buffer.from('node says bye')]); // 4000
    echo.send(OP.close, payload);
    const e = await echo.next();
    eq(e.type, 'close', 'type');
    eq(e.data.readUInt16BE(0), 4000, 'close code');
    eq(e.data.length, 2, 'the reply: the code, no reason');
    eq((await echo.next()).type, 'end', 'the stream ends after the close');
    await within(echo.ended, 'the stream to close');
  }],
  ['ws: subscribe, and a publish from a sibling stream reaches it', async () => {
    const sub = await connect('/ws');
    eq(sub.status, 200, 'subscriber :status');
    const pub = await connect('/ws');
    eq(pub.status, 200, 'publisher :status');
    sub.ws.text(JSON.stringify({ type: 'subscribe', topic: 'node-news', id: 1 }));
    const ack = await sub.ws.json('ack');
    eq(ack.id, 1, 'subscribe ack id');
    pub.ws.text(JSON.stringify({ type: 'publish', topic: 'node-news', data: { from: 'node', n: 7 }, id: 2 }));
    const pack = await pub.ws.json('ack');
    eq(pack.id, 2, 'publish ack id');
    eq(pack.delivered, 1, 'delivered');
    const m = await sub.ws.json('message');
    eq(m.topic, 'node-news', 'topic');
    eq(m.data, { from: 'node', n: 7 }, 'data');
    for (const w of [sub.ws, pub.ws]) {
      w.send(OP.close, Buffer.from([0x03, 0xe8]));
      eq((await w.next()).type, 'close', 'close echoed');
    }
  }],
  ['404 path answered on its stream; a sibling stream keeps working', async () => {
    const sibling = await connect('/echo');
    eq(sibling.status, 200, 'sibling :status');
    const missing = await connect('/no-such-endpoint');
    eq(missing.status, 404, 'unknown path :status');
    sibling.ws.text('still here');
    eq(await sibling.ws.next(), { type: 'text', data: 'still here' }, 'sibling echo');
    sibling.ws.send(OP.close, Buffer.from([0x03, 0xe8]));
    eq((await sibling.ws.next()).type, 'close', 'close echoed');
    assert(!session.closed && !session.destroyed, 'the connection is still open');
  }],
  ['metrics over the same connection count the WebSockets with http="2"', async () => {
    const { status, body } = await get('/metrics');
    eq(status, 200, ':status');
    const accepted = body.match(/^switchboard_handshakes_total\{outcome="accepted",http="2"\} (\d+)$/m);
    assert(accepted, `no accepted http="2" line in /metrics:\n${body}`);
    eq(Number(accepted[1]), 4, 'accepted http="2" handshakes');
    assert(
      /^switchboard_handshakes_total\{outcome="rejected",reason="not_found",http="2"\} 1$/m.test(body),
      'the 404 counted as rejected not_found http="2"',
    );
  }],
];

let passed = 0;
let failed = 0;
for (const [name, run] of cases) {
  try {
    await run();
    passed++;
    console.log(`ok ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e.message}`);
    if (name.startsWith('settings') || name.startsWith('echo: a subprotocol')) break;
  }
}
session.close();
console.log(`node-h2: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
