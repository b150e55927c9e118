// An RFC 8441 WebSocket echo server on Node's built-in http2 module (h2c, no packages),
// a real peer for switchboard-tokio's HTTP/2 client (tests/h2_node.rs).
//
//   node h2_echo_server.mjs [--no-connect-protocol] [--tls CERT.pem KEY.pem]
//
// Prints "PORT <n>" once listening. Every extended CONNECT with :protocol websocket is
// answered 200 (subprotocol "chat" when offered) and its stream echoes each frame back
// unmasked; a close frame is echoed and the stream ended; a ping is answered. With --tls:
// ALPN h2 and http/1.1, and an HTTP/1.1 WebSocket upgrade (101) echoes the same way.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';

const args = process.argv.slice(2);
const enableConnectProtocol = !args.includes('--no-connect-protocol');
const tlsAt = args.indexOf('--tls');
const server = tlsAt < 0
  ? http2.createServer({ settings: { enableConnectProtocol } })
  : http2.createSecureServer({
    settings: { enableConnectProtocol },
    cert: fs.readFileSync(args[tlsAt + 1]),
    key: fs.readFileSync(args[tlsAt + 2]),
    allowHTTP1: true,
  });

function frame(fin, opcode, payload) {
  const len = payload.length;
  const head = len < 126 ? Buffer.from([fin | opcode, len])
    : len < 65536 ? Buffer.from([fin | opcode, 126, len >> 8, len & 255])
      : Buffer.concat([Buffer.from([fin | opcode, 127]), (() => {
        const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(len)); return b;
      })()]);
  return Buffer.concat([head, payload]);
}

// Parses as many whole frames as `buf` holds; returns [frames, rest].
function parse(buf) {
  const frames = [];
  for (;;) {
    if (buf.length < 2) break;
    const fin = buf[0] & 0x80, opcode = buf[0] & 0x0f;
    let len = buf[1] & 0x7f, off = 2;
    if (len === 126) { if (buf.length < 4) break; len = buf.readUInt16BE(2); off = 4; }
    else if (len === 127) { if (buf.length < 10) break; len = Number(buf.readBigUInt64BE(2)); off = 10; }
    const masked = buf[1] & 0x80;
    const key = masked ? buf.subarray(off, off + 4) : null;
    if (masked) off += 4;
    if (buf.length < off + len) break;
    const payload = Buffer.from(buf.subarray(off, off + len));
    if (key) for (let i = 0; i < len; i++) payload[i] ^= key[i & 3];
    frames.push({ fin, opcode, payload });
    buf = buf.subarray(off + len);
  }
  return [frames, buf];
}

// Echoes the frames arriving on `duplex` (an HTTP/2 stream or an upgraded socket).
function echo(duplex) {
  let buf = Buffer.alloc(0);
  duplex.on('data', (chunk) => {
    let frames;
    [frames, buf] = parse(Buffer.concat([buf, chunk]));
    for (const f of frames) {
      if (f.opcode === 0x8) { duplex.end(frame(0x80, 0x8, f.payload.subarray(0, 2))); return; }
      if (f.opcode === 0x9) { duplex.write(frame(0x80, 0xa, f.payload)); continue; }
      duplex.write(frame(f.fin, f.opcode, f.payload));
    }
  });
  duplex.on('error', () => {});
}

// HTTP/1.1 (ALPN http/1.1 on the TLS server): the RFC 6455 upgrade.
server.on('upgrade', (req, socket) => {
  const accept = crypto.createHash('sha1')
    .update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11')
    .digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n'
    + `Connection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
  echo(socket);
});

server.on('stream', (stream, headers) => {
  if (headers[':method'] !== 'CONNECT' || headers[':protocol'] !== 'websocket') {
    stream.respond({ ':status': 404 });
    stream.end('not a WebSocket\n');
    return;
  }
  const offered = (headers['sec-websocket-protocol'] || '').split(',').map((s) => s.trim());
  const reply = { ':status': 200 };
  if (offered.includes('chat')) reply['sec-websocket-protocol'] = 'chat';
  stream.respond(reply);
  echo(stream);
});

server.listen(0, '127.0.0.1', () => {
  console.log(`PORT ${server.address().port}`);
});
