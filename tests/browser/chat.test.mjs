// Headless-browser test of the chat page that `switchboard serve` serves at GET /.
//
//   node tests/browser/chat.test.mjs        (scripts/browser-test.sh installs what it needs)
//
// Starts `$SWITCHBOARD_BIN serve --listen 127.0.0.1:0`, drives Debian's Chromium through
// playwright-core with five pages (separate browser contexts; one of them reaches the server
// through a TCP proxy the test can cut), prints one `ok - ...` / `not ok - ...` line per check
// and ends with `browser: N passed, M failed`. The recovery checks keep a page cut off for
// 30 s, so a run takes about a minute. The last checks serve the page over TLS with a
// self-signed certificate (made with openssl) and prove that Chromium loads it over HTTP/2 and
// opens its /chat WebSocket over HTTP/2 (RFC 8441), as the server's /metrics count it.
//
// Environment:
//   SWITCHBOARD_BIN   server binary (default: $CARGO_TARGET_DIR/release/switchboard, or
//                     <repo>/target/release/switchboard)
//   CHROMIUM          browser executable (default: /usr/bin/chromium)
//   ARTIFACTS_DIR     screenshots and logs (default: <repo>/target/browser-artifacts)
//   RUST_LOG          passed to the server (default: info; the test needs its "listening on" line)

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(process.env.CARGO_TARGET_DIR) : path.join(root, 'target');
const BIN = path.resolve(process.env.SWITCHBOARD_BIN || path.join(targetDir, 'release', 'switchboard'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.resolve(process.env.ARTIFACTS_DIR || path.join(root, 'target', 'browser-artifacts'));
const TOTAL_MS = 120_000; // the whole run, including browser start, server stop and the 30 s outage
const WAIT_MS = 6_000; // one expectation inside a check

const ROOM = 'browser-test';
const OTHER_ROOM = 'elsewhere';
const A = 'Ada';
const B = 'Bob';
const C = 'Cy';
const REC_ROOM = 'recovery';
const P = 'Pat'; // reaches the server through the proxy
const D = 'Dee';
const OUTAGE_MS = 30_000; // the "dropped for 30 s"
const MISSED = 20; // messages sent while P is cut off

fs.mkdirSync(ARTIFACTS, { recursive: true });
const serverLog = fs.createWriteStream(path.join(ARTIFACTS, 'server.log'));
const consoleLog = fs.createWriteStream(path.join(ARTIFACTS, 'console.log'));

// ---- server -----------------------------------------------------------------------------------
let server = null; // { proc, addr }

function startServer(listen, extra = []) {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', NO_COLOR: '1' };
    let proc;
    try {
      proc = spawn(BIN, ['serve', '--listen', listen, ...extra], { stdio: ['ignore', 'pipe', 'pipe'], env });
    } catch (e) {
      reject(new Error(`cannot start ${BIN}: ${e.message}`));
      return;
    }
    let buf = '';
    let done = false;
    const tail = [];
    const timer = setTimeout(() => finish(new Error(`no "listening on" line within 15 s; last stderr: ${tail.join(' | ') || '(none)'}`)), 15_000);
    function finish(err, addr) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
        reject(err);
      } else resolve({ proc, addr });
    }
    proc.on('error', (e) => finish(new Error(`cannot start ${BIN}: ${e.message}`)));
    proc.on('exit', (code, sig) => {
      serverLog.write(`--- server pid ${proc.pid} exited (code ${code}, signal ${sig})\n`);
      finish(new Error(`server exited before listening (code ${code}, signal ${sig}); last stderr: ${tail.join(' | ') || '(none)'}`));
    });
    proc.stdout.on('data', (d) => serverLog.write(d));
    proc.stderr.on('data', (d) => {
      serverLog.write(d);
      buf += d.toString('utf8');
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        // eslint-disable-next-line no-control-regex
        const line = buf.slice(0, nl).replace(/\x1b\[[0-9;]*m/g, '');
        buf = buf.slice(nl + 1);
        tail.push(line.trim());
        if (tail.length > 3) tail.shift();
        const m = /listening on https?:\/\/(\d{1,3}(?:\.\d{1,3}){3}:\d+|\[[0-9a-fA-F:.]+\]:\d+)/.exec(line);
        if (m) finish(null, m[1]);
      }
    });
  });
}

async function stopServer(s, graceMs = 10_000) {
  if (!s || s.proc.exitCode !== null || s.proc.signalCode !== null) return 'already exited';
  const exited = new Promise((r) => s.proc.once('exit', () => r(true)));
  s.proc.kill('SIGTERM');
  const t0 = Date.now();
  const ok = await Promise.race([exited, sleep(graceMs).then(() => false)]);
  if (ok) return `exited ${Date.now() - t0} ms after SIGTERM`;
  s.proc.kill('SIGKILL');
  await Promise.race([exited, sleep(2000)]);
  return `did not exit within ${graceMs} ms of SIGTERM; killed`;
}

// ---- a TCP proxy that can cut a page off ------------------------------------------------------
// Chromium reaches the server through it (the page is loaded from the proxy's address, so its
// WebSocket goes there too). cut() destroys every open connection and refuses new ones (accepts
// and closes them at once) until restore(). This drops an open WebSocket the way a lost network
// does, for this page only, and for as long as the test wants; context.setOffline is not used
// because Chromium applies it to new requests and may leave an open WebSocket alone.
let proxy = null;

function startProxy() {
  return new Promise((resolve, reject) => {
    const open = new Set();
    let refusing = false;
    let refused = 0;
    const srv = net.createServer((client) => {
      if (refusing || !server) { refused++; client.destroy(); return; }
      const at = server.addr.lastIndexOf(':');
      const up = net.connect({ host: server.addr.slice(0, at).replace(/^\[|\]$/g, ''), port: Number(server.addr.slice(at + 1)) });
      const end = () => { client.destroy(); up.destroy(); open.delete(client); open.delete(up); };
      for (const s of [client, up]) { open.add(s); s.on('error', end); s.on('close', end); }
      client.pipe(up);
      up.pipe(client);
    });
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve({
      addr: `127.0.0.1:${srv.address().port}`,
      cut() { refusing = true; for (const s of open) s.destroy(); open.clear(); },
      restore() { refusing = false; },
      get refused() { return refused; },
      close() { this.cut(); srv.close(); },
    }));
  });
}

// ---- helpers ----------------------------------------------------------------------------------
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let browser = null;
let signed = null; // a second server that needs tokens: { proc, addr }
const SECRET = 'browser-test-secret-0123456789abcdef';
const pages = {}; // label -> page
let tls = null; // the TLS run: { dir, server, browser }

// A token made by `switchboard token` (what a site's backend would make).
function mintToken(...args) {
  const r = spawnSync(BIN, ['token', '--jwt-hmac-secret', SECRET, ...args], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`switchboard token ${args.join(' ')}: ${r.stderr.trim() || r.status}`);
  return r.stdout.trim();
}
const jsErrors = [];
const eventsBefore = {}; // label -> number of event lines before the restart

function base() {
  return `http://${server.addr}`;
}

async function shot(label, name) {
  const page = pages[label];
  if (!page || page.isClosed()) return;
  try {
    await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), timeout: 5000 });
  } catch { /* best effort */ }
}

async function newPage(label, options = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 720 }, ...options });
  const page = await ctx.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on('pageerror', (e) => jsErrors.push(`${label}: ${e.message}`));
  page.on('console', (m) => consoleLog.write(`[${label}] ${m.type()}: ${m.text()}\n`));
  pages[label] = page;
  return page;
}

async function joinAs(page, name, room, { prefilled = false } = {}) {
  if (prefilled) {
    await page.goto(`${base()}/?${new URLSearchParams({ room, name })}`, { timeout: WAIT_MS });
    const got = [await page.inputValue('#name'), await page.inputValue('#room')];
    assert(got[0] === name && got[1] === room, `?room=&name= did not prefill the form: ${JSON.stringify(got)}`);
  } else {
    await page.goto(base() + '/', { timeout: WAIT_MS });
    await page.fill('#name', name);
    await page.fill('#room', room);
  }
  await page.click('#join');
  await page.waitForSelector('#messages', { state: 'visible' });
}

function waitState(page, want, timeout = WAIT_MS) {
  return page
    .waitForFunction((s) => {
      const e = document.querySelector('#state');
      return e && e.dataset.state === s && e.textContent.includes(s);
    }, want, { timeout })
    .catch(async () => {
      const got = await page.evaluate(() => {
        const e = document.querySelector('#state');
        return e ? `${e.dataset.state} ("${e.textContent}")` : 'no #state';
      });
      throw new Error(`state is ${got}, expected ${want} within ${timeout} ms`);
    });
}

async function memberNames(page) {
  return page.$$eval('#members li', (lis) => lis.map((li) => li.textContent));
}

function waitMember(page, name, present = true, timeout = WAIT_MS) {
  return page
    .waitForFunction(([n, p]) => [...document.querySelectorAll('#members li')].some((li) => li.textContent === n && li.dataset.id) === p,
      [name, present], { timeout })
    .catch(async () => {
      throw new Error(`${name} ${present ? 'not' : 'still'} in #members after ${timeout} ms (members: ${JSON.stringify(await memberNames(page))})`);
    });
}

async function messages(page) {
  return page.$$eval('#messages .msg', (els) => els.map((e) => ({
    offset: e.dataset.offset,
    from: e.querySelector('.from')?.textContent,
    text: e.querySelector('.text')?.textContent,
    own: e.classList.contains('own'),
  })));
}

function waitMessage(page, from, text, timeout = WAIT_MS) {
  return page
    .waitForFunction(([f, t]) => [...document.querySelectorAll('#messages .msg')].some((e) =>
      e.dataset.offset && e.querySelector('.from')?.textContent === f && e.querySelector('.text')?.textContent === t),
    [from, text], { timeout })
    .catch(async () => {
      throw new Error(`no message from ${from} with text ${JSON.stringify(text)} after ${timeout} ms (messages: ${JSON.stringify((await messages(page)).slice(-5))})`);
    });
}

function waitEvent(page, kind, name, timeout = WAIT_MS) {
  return page
    .waitForFunction(([k, n]) => [...document.querySelectorAll(`#messages .event.${k}`)].some((e) => e.textContent.includes(n)),
      [kind, name], { timeout })
    .catch(async () => {
      const evs = await page.$$eval('#messages .event', (els) => els.map((e) => `${e.className}: ${e.textContent}`));
      throw new Error(`no ${kind} event for ${name} after ${timeout} ms (events: ${JSON.stringify(evs.slice(-5))})`);
    });
}

async function say(page, text, how = 'enter') {
  await page.fill('#text', text);
  if (how === 'enter') await page.press('#text', 'Enter');
  else await page.click('#send');
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

// Reconnects a page that waits to retry at once, as its "Retry now" button does (the backoff
// may be up to 15 s after a long outage), and waits for it to be online.
async function reconnectNow(page, timeout = 20_000) {
  await page.waitForFunction(() => window.chat.state !== 'connecting', null, { timeout });
  await page.evaluate(() => { if (window.chat.state === 'offline') document.querySelector('#retry').click(); });
  await waitState(page, 'online', timeout);
}

// The /chat WebSockets a page opened: [{url, frames: [parsed text frames received]}].
const sockets = {};
function recordSockets(label) {
  sockets[label] = [];
  pages[label].on('websocket', (ws) => {
    if (!/\/chat\?/.test(ws.url())) return;
    const rec = { url: new URL(ws.url()), frames: [] };
    sockets[label].push(rec);
    ws.on('framereceived', ({ payload }) => {
      try { rec.frames.push(JSON.parse(String(payload))); } catch { /* not JSON */ }
    });
  });
}
function lastSocket(label) {
  return sockets[label][sockets[label].length - 1];
}

// The rows of #messages in order: messages as "from: text", the gap line as "GAP".
async function rows(page) {
  return page.$$eval('#messages .msg, #messages .gap', (els) => els.map((e) => (e.classList.contains('gap')
    ? 'GAP'
    : `${e.querySelector('.from')?.textContent}: ${e.querySelector('.text')?.textContent}`)));
}

// ---- the checks -------------------------------------------------------------------------------
const TEXT_A = 'hello <b>from</b> Ada & co';
const TEXT_B = 'hi Ada, Bob here';
const TEXT_A2 = 'only for #browser-test';
const TEXT_C = 'back after the restart';
const TEXT_LINKS = 'docs: https://example.com/a?b=1&c=2. <a href="javascript:alert(1)">x</a> javascript:alert(2) (see http://example.org/x_(y)) <img src=x onerror="window.__pwned=1">';
const LINKS = ['https://example.com/a?b=1&c=2', 'http://example.org/x_(y)'];

async function eventRows(page) {
  return page.$$eval('#messages .event', (els) => els.map((e) => ({ cls: e.className, text: e.querySelector('.what')?.textContent })));
}

const checks = [
  ['server starts and logs "listening on http://ADDR"', async () => {
    assert(fs.existsSync(BIN), `${BIN} not found (build it with: cargo build --release -p switchboard)`);
    server = await startServer('127.0.0.1:0');
  }],

  ['GET / answers 200 with text/html', async () => {
    const res = await fetch(base() + '/', { signal: AbortSignal.timeout(WAIT_MS) });
    const body = await res.text();
    const type = res.headers.get('content-type') || '';
    assert(res.status === 200, `status ${res.status}`);
    assert(/^text\/html\b/i.test(type), `content-type ${JSON.stringify(type)}`);
    assert(body.includes('id="messages"'), 'body is not the chat page (no id="messages")');
  }],

  ['before joining there is no connection badge (no "closed" on the page)', async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      timeout: 20_000,
    });
    const a = await newPage('a');
    await a.goto(base() + '/', { timeout: WAIT_MS });
    await a.waitForSelector('#join', { state: 'visible' });
    const r = await a.evaluate(() => ({
      badge: !!document.querySelector('#state')?.checkVisibility(),
      text: document.body.innerText,
    }));
    assert(!r.badge, 'the connection badge is visible before joining');
    assert(!/\bclosed\b/i.test(r.text), `the join view says "closed": ${JSON.stringify(r.text.slice(0, 200))}`);
  }],

  [`A (${A}) joins #${ROOM} from a prefilled /?room=&name= and the state badge reads online`, async () => {
    const a = pages.a;
    await joinAs(a, A, ROOM, { prefilled: true });
    await waitState(a, 'online');
  }],

  ["the page's address keeps the room but not the name (a shared link does not carry it)", async () => {
    const u = new URL(pages.a.url());
    assert(u.searchParams.get('room') === ROOM, `address ${u.href} lost the room`);
    assert(!u.searchParams.has('name'), `address ${u.href} carries the name`);
  }],

  [`B (${B}, dark scheme) joins #${ROOM} and the state badge reads online`, async () => {
    const b = await newPage('b', { colorScheme: 'dark' });
    await joinAs(b, B, ROOM);
    await waitState(b, 'online');
  }],

  ['the server selects subprotocol switchboard.chat.v1', async () => {
    const proto = await pages.a.evaluate(() => window.chat.ws.protocol);
    assert(proto === 'switchboard.chat.v1', `ws.protocol is ${JSON.stringify(proto)}`);
  }],

  ['a page that offers a subprotocol to /echo gets it selected and its message echoed', async () => {
    const r = await pages.a.evaluate(async (url) => await new Promise((resolve) => {
      const ws = new WebSocket(url, ['my.app.v2', 'other']);
      const t = setTimeout(() => resolve({ error: 'no answer in 5 s' }), 5000);
      ws.onopen = () => ws.send('ping from the page');
      ws.onmessage = (e) => { clearTimeout(t); resolve({ protocol: ws.protocol, data: e.data }); ws.close(); };
      ws.onerror = () => { clearTimeout(t); resolve({ error: 'the handshake failed (onerror)' }); };
    }), base().replace(/^http/, 'ws') + '/echo');
    assert(!r.error, r.error);
    assert(r.protocol === 'my.app.v2', `selected ${JSON.stringify(r.protocol)}`);
    assert(r.data === 'ping from the page', `echoed ${JSON.stringify(r.data)}`);
  }],

  ['A sees B in #members', async () => {
    await waitMember(pages.a, B);
    await waitMember(pages.a, A);
  }],

  ['B sees A in #members, with the same member ids as A sees', async () => {
    await waitMember(pages.b, A);
    await waitMember(pages.b, B);
    const ids = (p) => p.$$eval('#members li', (lis) => Object.fromEntries(lis.map((li) => [li.textContent, li.dataset.id])));
    const [ia, ib] = [await ids(pages.a), await ids(pages.b)];
    assert(ia[A] && ia[A] === ib[A] && ia[B] === ib[B], `ids differ: A sees ${JSON.stringify(ia)}, B sees ${JSON.stringify(ib)}`);
    assert(ia[A] !== ia[B], `A and B have the same id ${ia[A]}`);
    await shot('a', '01-a-joined');
    await shot('b', '01-b-joined');
  }],

  ["a message typed in A's #text (Enter) appears in B's #messages", async () => {
    await say(pages.a, TEXT_A, 'enter');
    await waitMessage(pages.b, A, TEXT_A);
  }],

  ["A's message appears in A's #messages too, marked as A's own", async () => {
    await waitMessage(pages.a, A, TEXT_A);
    const [ma, mb] = [await messages(pages.a), await messages(pages.b)];
    const a = ma.find((m) => m.text === TEXT_A);
    const b = mb.find((m) => m.text === TEXT_A);
    assert(a.own && !b.own, `own flags: A ${a.own}, B ${b.own}`);
    assert(a.offset === b.offset && Number(a.offset) >= 1, `data-offset differs or is not a number: A ${a.offset}, B ${b.offset}`);
    assert(await pages.a.inputValue('#text') === '', '#text was not cleared after sending');
  }],

  ['user text is rendered as text, not HTML', async () => {
    const n = await pages.b.$$eval('#messages .msg .text b', (els) => els.length);
    assert(n === 0, `found ${n} <b> element(s) inside .text`);
  }],

  ["a message sent with B's #send button appears in A", async () => {
    await say(pages.b, TEXT_B, 'click');
    await waitMessage(pages.a, B, TEXT_B);
    await waitMessage(pages.b, B, TEXT_B);
    await shot('a', '02-a-messages');
    await shot('b', '02-b-messages');
  }],

  ['http(s) URLs in a message are links; nothing else in it becomes markup', async () => {
    await say(pages.a, TEXT_LINKS);
    await waitMessage(pages.b, A, TEXT_LINKS);
    const r = await pages.b.evaluate((t) => {
      const box = [...document.querySelectorAll('#messages .msg .text')].find((e) => e.textContent === t);
      return {
        kids: [...box.children].map((c) => c.tagName),
        links: [...box.querySelectorAll('a')].map((a) => ({ href: a.getAttribute('href'), text: a.textContent, rel: a.rel, target: a.target })),
        imgs: document.querySelectorAll('#messages img').length,
        pwned: window.__pwned === 1,
      };
    }, TEXT_LINKS);
    assert(r.kids.every((k) => k === 'A'), `elements inside the text: ${JSON.stringify(r.kids)}`);
    assert(JSON.stringify(r.links.map((l) => l.href)) === JSON.stringify(LINKS), `links: ${JSON.stringify(r.links)}`);
    assert(r.links.every((l) => l.text === l.href && /\bnoopener\b/.test(l.rel) && l.target === '_blank'), `links: ${JSON.stringify(r.links)}`);
    assert(r.imgs === 0 && !r.pwned, 'markup from the message text was rendered');
    await shot('b', '02-b-links');
  }],

  ['while B types, A sees "Bob is typing…"; it goes away when B sends', async () => {
    const [a, b] = [pages.a, pages.b];
    await b.click('#text');
    await b.keyboard.type('one more thing', { delay: 20 });
    await a.waitForFunction((n) => document.querySelector('#typing')?.textContent === n + ' is typing…', B, { timeout: WAIT_MS })
      .catch(async () => { throw new Error(`A's #typing reads ${JSON.stringify(await a.evaluate(() => document.querySelector('#typing')?.textContent ?? '(no #typing)'))}`); });
    const own = await b.evaluate(() => document.querySelector('#typing').textContent);
    assert(own === '', `B sees its own typing: ${JSON.stringify(own)}`);
    await shot('a', '02-a-typing');
    await b.press('#text', 'Enter');
    await waitMessage(a, B, 'one more thing');
    await a.waitForFunction(() => document.querySelector('#typing').textContent === '', null, { timeout: 1000 })
      .catch(() => { throw new Error("A's typing line stays after B's message"); });
  }],

  ['an error event from the server is shown to the user and the connection stays open', async () => {
    const a = pages.a;
    await a.evaluate(() => window.chat.ws.send('{this is not json'));
    await a.waitForFunction(() => [...document.querySelectorAll('#toasts .toast')].some((t) => t.textContent.includes('invalid_json')), null, { timeout: WAIT_MS })
      .catch(() => { throw new Error('no toast with code invalid_json after sending invalid JSON'); });
    await sleep(250); // let the toast slide in
    await shot('a', '02-a-error-toast');
    await waitState(a, 'online');
  }],

  [`C (${C}, narrow screen) in #${OTHER_ROOM} does not see #${ROOM}'s members or messages`, async () => {
    const c = await newPage('c', { viewport: { width: 390, height: 760 } });
    await joinAs(c, C, OTHER_ROOM);
    await waitState(c, 'online');
    await waitMember(c, C);
    await say(pages.a, TEXT_A2);
    await waitMessage(pages.b, A, TEXT_A2);
    await sleep(400); // would C get it, it would have by now
    const mc = await messages(c);
    assert(mc.length === 0, `C sees messages from #${ROOM}: ${JSON.stringify(mc)}`);
    const names = await memberNames(c);
    assert(names.length === 1 && names[0] === C, `C's members: ${JSON.stringify(names)}`);
    const namesA = await memberNames(pages.a);
    assert(!namesA.includes(C), `A's members include C: ${JSON.stringify(namesA)}`);
    await shot('c', '03-c-other-room');
  }],

  [`C switches to #${ROOM} with {"type":"join"}: history, members and A sees C join`, async () => {
    const c = pages.c;
    await c.click('#members-toggle');
    await sleep(300);
    await shot('c', '04-c-drawer');
    await c.fill('#switch-room', ROOM);
    await c.press('#switch-room', 'Enter');
    await waitMessage(c, A, TEXT_A);
    await waitMessage(c, B, TEXT_B);
    await waitMessage(c, A, TEXT_A2);
    await waitMember(c, A);
    await waitMember(c, B);
    await waitEvent(pages.a, 'join', C);
    await waitMember(pages.a, C);
    const sameSocket = await c.evaluate(() => window.chat.ws.readyState === 1 && window.chat.room);
    assert(sameSocket === ROOM, `C's page reports room ${JSON.stringify(sameSocket)}`);
    await sleep(300); // let the drawer slide away
    await shot('c', '05-c-switched');
  }],

  ["closing page B shows B's leave in A and removes B from A's #members", async () => {
    await pages.b.close();
    await waitEvent(pages.a, 'leave', B);
    await waitMember(pages.a, B, false);
    await waitMember(pages.c, B, false);
    await shot('a', '06-a-after-b-left');
  }],

  ['after a server restart the pages show offline, then reconnect', async () => {
    const addr = server.addr;
    eventsBefore.a = (await eventRows(pages.a)).length;
    eventsBefore.c = (await eventRows(pages.c)).length;
    const how = await stopServer(server);
    await waitState(pages.a, 'offline', 8000).catch((e) => { throw new Error(`${e.message} (server ${how})`); });
    await shot('a', '07-a-offline');
    server = await startServer(addr);
    await waitState(pages.a, 'online', 20_000);
    await waitState(pages.c, 'online', 20_000);
    await waitMember(pages.a, C);
    await waitMember(pages.c, A);
    await say(pages.c, TEXT_C);
    await waitMessage(pages.a, C, TEXT_C);
    await waitMessage(pages.c, C, TEXT_C);
    const ownA = (await messages(pages.a)).find((m) => m.text === TEXT_C).own;
    const ownC = (await messages(pages.c)).find((m) => m.text === TEXT_C).own;
    assert(!ownA && ownC, `after the restart C's message is marked own in A: ${ownA}, in C: ${ownC}`);
    await shot('a', '08-a-reconnected');
    await shot('c', '08-c-reconnected');
  }],

  ['the restart left one line in each page ("Reconnected"), no false "left" and no join lines', async () => {
    await sleep(500); // anything late would be here by now
    for (const label of ['a', 'c']) {
      const rows = (await eventRows(pages[label])).slice(eventsBefore[label]);
      assert(rows.length === 1 && /\bsystem\b/.test(rows[0].cls) && /^Reconnected\b/.test(rows[0].text),
        `${label.toUpperCase()}'s lines since the restart: ${JSON.stringify(rows)}`);
    }
  }],

  ['the restart also left one line saying messages could not be recovered, below "Reconnected"', async () => {
    for (const label of ['a', 'c']) {
      const r = await pages[label].evaluate((t) => {
        const all = [...document.querySelectorAll('#messages > *')];
        const gaps = all.filter((e) => e.classList.contains('gap'));
        const back = all.findLastIndex((e) => e.classList.contains('event') && /^Reconnected\b/.test(e.textContent));
        const msg = all.findIndex((e) => e.querySelector?.('.text')?.textContent === t);
        return { gaps: gaps.map((g) => g.textContent), at: all.indexOf(gaps[0]), back, msg };
      }, TEXT_C);
      assert(r.gaps.length === 1 && /could not be recovered/.test(r.gaps[0]), `${label.toUpperCase()}'s gap lines: ${JSON.stringify(r.gaps)}`);
      assert(r.back < r.at && r.at < r.msg, `${label.toUpperCase()}: "Reconnected" at ${r.back}, the gap line at ${r.at}, "${TEXT_C}" at ${r.msg}`);
    }
  }],

  ['#leave closes with 1000, shows the join form and does not reconnect', async () => {
    const a = pages.a;
    await a.evaluate(() => {
      const ws = window.chat.ws;
      const close = ws.close.bind(ws);
      ws.close = (code, reason) => { window.__sentCode = code; return close(code, reason); };
      ws.addEventListener('close', (e) => { window.__closeEvent = { code: e.code, clean: e.wasClean }; });
    });
    await a.click('#leave');
    await a.waitForSelector('#join', { state: 'visible' });
    await a.waitForSelector('#state', { state: 'hidden' });
    await waitEvent(pages.c, 'leave', A);
    await waitMember(pages.c, A, false);
    await sleep(1500); // the first reconnect would come after at most 0.5 s
    const r = await a.evaluate(() => ({
      sent: window.__sentCode, ev: window.__closeEvent, state: window.chat.state, ready: window.chat.ws.readyState,
      join: !document.querySelector('#join-view').hidden,
    }));
    assert(r.sent === 1000, `close code sent: ${r.sent}`);
    assert(r.ev && r.ev.code === 1000, `close event: ${JSON.stringify(r.ev)} (the server should echo 1000)`);
    assert(r.state === 'idle' && r.ready === 3 && r.join, `after leaving: ${JSON.stringify(r)}`);
    await shot('a', '09-a-left');
  }],

  [`P (${P}, through a proxy) and D (${D}) join #${REC_ROOM} and see each other's messages`, async () => {
    proxy = await startProxy();
    const p = await newPage('p');
    recordSockets('p');
    await p.goto(`http://${proxy.addr}/?${new URLSearchParams({ room: REC_ROOM, name: P })}`, { timeout: WAIT_MS });
    await p.click('#join');
    await waitState(p, 'online');
    const d = await newPage('d');
    await joinAs(d, D, REC_ROOM);
    await waitState(d, 'online');
    await say(d, 'before the outage');
    await waitMessage(p, D, 'before the outage');
    await say(p, 'me too');
    await waitMessage(d, P, 'me too');
    await waitMessage(p, P, 'me too');
  }],

  [`P cut off for ${OUTAGE_MS / 1000} s while D sends ${MISSED}: after its reconnect P shows every message once, in order, no gap line`, async () => {
    const [p, d] = [pages.p, pages.d];
    const pos = await p.evaluate(() => window.chat.position);
    const last = (await messages(p)).at(-1);
    assert(pos && pos.room === REC_ROOM && String(pos.offset) === last.offset && pos.epoch, `P's position ${JSON.stringify(pos)}, last row ${JSON.stringify(last)}`);
    const t0 = Date.now();
    proxy.cut();
    await waitState(p, 'offline');
    // The messages are spread over the outage, so some come while P is between attempts and
    // some while an attempt is being refused.
    for (let i = 1; i <= MISSED; i++) {
      await say(d, `missed ${i} of ${MISSED}`);
      await waitMessage(d, D, `missed ${i} of ${MISSED}`);
      const slot = t0 + (i * (OUTAGE_MS - 1000)) / MISSED;
      if (Date.now() < slot) await sleep(slot - Date.now());
    }
    await sleep(Math.max(0, t0 + OUTAGE_MS - Date.now()));
    const during = (await messages(p)).filter((m) => m.text.startsWith('missed '));
    const state = await p.evaluate(() => window.chat.state);
    assert(state !== 'online' && during.length === 0 && proxy.refused > 0,
      `P was not cut off: state ${state}, ${during.length} missed messages shown, ${proxy.refused} connections refused`);
    proxy.restore();
    const sockBefore = sockets.p.length;
    await reconnectNow(p);
    await waitMessage(p, D, `missed ${MISSED} of ${MISSED}`);
    await say(d, 'and live again');
    await waitMessage(p, D, 'and live again');
    const [rp, rd] = [await rows(p), await rows(d)];
    assert(JSON.stringify(rp) === JSON.stringify(rd), `P's rows differ from D's:\n  P ${JSON.stringify(rp)}\n  D ${JSON.stringify(rd)}`);
    assert(new Set(rp).size === rp.length && rp.length === MISSED + 3, `P's rows: ${JSON.stringify(rp)}`);
    const offs = (await messages(p)).map((m) => Number(m.offset));
    assert(offs.every((o, i) => i === 0 || o === offs[i - 1] + 1), `P's offsets are not contiguous: ${JSON.stringify(offs)}`);
    // It was a recovery, not a history download: the reconnect asked from P's position and
    // the welcome said recovered, with an empty history.
    const sock = lastSocket('p');
    assert(sockets.p.length > sockBefore, 'no new /chat WebSocket after the outage');
    const q = Object.fromEntries(sock.url.searchParams);
    assert(q.since === String(pos.offset) && q.epoch === pos.epoch, `the reconnect asked with ${sock.url.search}, P was at ${JSON.stringify(pos)}`);
    const w = sock.frames[0] || {};
    assert(w.type === 'welcome' && w.recovered === true && Array.isArray(w.history) && w.history.length === 0,
      `welcome after the reconnect: ${JSON.stringify({ type: w.type, recovered: w.recovered, capped: w.capped, history: w.history && w.history.length })}`);
    const rec = await p.evaluate(() => window.chat.recovery);
    assert(rec.recovered && !rec.gap, `the page's recovery: ${JSON.stringify(rec)}`);
    await shot('p', '10-p-recovered');
  }],

  ['the server restarts while P is cut off: P shows one "could not be recovered" line, then the messages sent since', async () => {
    const [p, d] = [pages.p, pages.d];
    const before = await rows(p);
    const pos = await p.evaluate(() => window.chat.position);
    proxy.cut();
    await waitState(p, 'offline');
    const addr = server.addr;
    const how = await stopServer(server);
    server = await startServer(addr).catch((e) => { throw new Error(`${e.message} (old server ${how})`); });
    await reconnectNow(d);
    const after = ['after the restart 1', 'after the restart 2', 'after the restart 3'];
    for (const t of after) {
      await say(d, t);
      await waitMessage(d, D, t);
    }
    proxy.restore();
    await reconnectNow(p);
    await waitMessage(p, D, after.at(-1));
    const got = await rows(p);
    const want = [...before, 'GAP', ...after.map((t) => `${D}: ${t}`)];
    assert(JSON.stringify(got) === JSON.stringify(want), `P's rows:\n  got  ${JSON.stringify(got)}\n  want ${JSON.stringify(want)}`);
    const text = await p.$eval('#messages .gap', (e) => e.textContent);
    assert(/could not be recovered/.test(text), `the gap line reads ${JSON.stringify(text)}`);
    const sock = lastSocket('p');
    const w = sock.frames[0] || {};
    assert(sock.url.searchParams.get('since') === String(pos.offset) && sock.url.searchParams.get('epoch') === pos.epoch,
      `the reconnect asked with ${sock.url.search}, P was at ${JSON.stringify(pos)}`);
    assert(w.type === 'welcome' && w.recovered === false && w.epoch !== pos.epoch,
      `welcome after the restart: ${JSON.stringify({ type: w.type, recovered: w.recovered, epoch: w.epoch, was: pos.epoch })}`);
    await shot('p', '11-p-not-recovered');
  }],

  ["the page's recovery rules, against a scripted /chat (capped, duplicates, an older server, room switch)", async () => {
    // page.routeWebSocket answers /chat from the test, so the cases a real server does not
    // produce on demand are covered too; the page itself comes from the real server.
    const m = await newPage('m');
    const conns = [];
    let waiting = null;
    await m.routeWebSocket(/\/chat\?/, (ws) => {
      const c = { ws, url: new URL(ws.url()), got: [] };
      ws.onMessage((x) => { try { c.got.push(JSON.parse(x)); } catch { /* not JSON */ } });
      conns.push(c);
      if (waiting) waiting();
    });
    const nextSocket = async (action) => {
      const had = conns.length;
      const arrived = new Promise((r) => { waiting = r; });
      await action();
      if (conns.length === had) await Promise.race([arrived, sleep(WAIT_MS).then(() => { throw new Error('the page did not reconnect'); })]);
      waiting = null;
      return conns[conns.length - 1];
    };
    const reconnect = (c) => nextSocket(() => c.ws.close({ code: 1006 }).catch(() => {}));
    const me = { id: 'u1', name: P };
    const them = { id: 'u2', name: D };
    let id = 0;
    const msg = (offset, epoch, text, room = 'r') => ({ type: 'message', id: ++id, room, from: them, text, time: Date.now() + id, offset, epoch });
    const welcome = (extra, room = 'r') => ({ type: 'welcome', you: me, room, members: [me, them], history: [], ...extra });
    const send = (c, ...xs) => { for (const x of xs) c.ws.send(JSON.stringify(x)); };
    const asked = (c) => [c.url.searchParams.get('room'), c.url.searchParams.get('since'), c.url.searchParams.get('epoch')];
    const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
    const expectRows = async (want, what) => {
      await m.waitForFunction((w) => [...document.querySelectorAll('#messages .msg, #messages .gap')].map((e) => (e.classList.contains('gap')
        ? 'GAP ' + e.textContent.split(' ')[0] : e.querySelector('.text').textContent)).join('|') === w.join('|'), want, { timeout: WAIT_MS })
        .catch(async () => { throw new Error(`${what}: rows ${JSON.stringify(await rows(m))}, want ${JSON.stringify(want)}`); });
    };

    await m.goto(`${base()}/?room=r&name=${P}`, { timeout: WAIT_MS });
    let c = await nextSocket(() => m.click('#join'));
    assert(same(asked(c), ['r', null, null]), `a fresh join asked ${c.url.search}`);
    send(c, welcome({ history: [msg(1, 'E', 'm1'), msg(2, 'E', 'm2')], offset: 2, epoch: 'E', recovered: false }));
    await expectRows(['m1', 'm2'], 'fresh join');

    // 4010 (reconnect and recover) is a reconnect like any other, with the position.
    c = await nextSocket(() => c.ws.close({ code: 4010, reason: 'reconnect and recover' }));
    assert(same(asked(c), ['r', '2', 'E']), `the reconnect asked ${c.url.search}`);
    const lost = await m.$$eval('#messages .event.system', (els) => els.map((e) => e.textContent).join(' | '));
    assert(/Connection lost \(the server asked us to reconnect\)/.test(lost), `the lines after 4010: ${JSON.stringify(lost)}`);
    send(c, welcome({ offset: 4, epoch: 'E', recovered: true }), msg(3, 'E', 'm3'), msg(2, 'E', 'm2 again'), msg(4, 'E', 'm4'), msg(4, 'E', 'm4 again'), msg(5, 'E', 'm5 live'));
    await expectRows(['m1', 'm2', 'm3', 'm4', 'm5 live'], 'recovered, with duplicates sent');

    c = await reconnect(c);
    assert(same(asked(c), ['r', '5', 'E']), `the reconnect asked ${c.url.search}`);
    send(c, welcome({ history: [msg(400, 'E', 'm400'), msg(401, 'E', 'm401')], offset: 401, epoch: 'E', recovered: false, capped: true }));
    await expectRows(['m1', 'm2', 'm3', 'm4', 'm5 live', 'GAP More', 'm400', 'm401'], 'capped');

    c = await reconnect(c);
    send(c, welcome({ offset: 0, epoch: 'F', recovered: false }), msg(1, 'F', 'f1'));
    const upToF1 = ['m1', 'm2', 'm3', 'm4', 'm5 live', 'GAP More', 'm400', 'm401', 'GAP Some', 'f1'];
    await expectRows(upToF1, 'new epoch');

    // A server without `recovered`: a history that reaches back is merged without a line...
    c = await reconnect(c);
    assert(same(asked(c), ['r', '1', 'F']), `the reconnect asked ${c.url.search}`);
    send(c, welcome({ history: [msg(1, 'F', 'f1 again'), msg(2, 'F', 'f2')], offset: 2, epoch: 'F' }));
    await expectRows([...upToF1, 'f2'], 'older server, history reaches back');
    // ...one that does not gets the line.
    c = await reconnect(c);
    send(c, welcome({ history: [msg(7, 'F', 'f7')], offset: 7, epoch: 'F' }));
    await expectRows([...upToF1, 'f2', 'GAP Some', 'f7'], 'older server, history does not reach back');

    // A room switch is a fresh join, and the next reconnect asks for the new room.
    await m.fill('#switch-room', 'r2');
    await m.press('#switch-room', 'Enter');
    await m.waitForFunction(() => window.chat.pendingRoom() === 'r2');
    assert(same(c.got.filter((x) => x.type === 'join').map((x) => x.room), ['r2']), `sent ${JSON.stringify(c.got)}`);
    send(c, welcome({ history: [msg(9, 'G', 'g9', 'r2')], offset: 9, epoch: 'G', recovered: false }, 'r2'));
    await expectRows(['g9'], 'room switch');
    c = await reconnect(c);
    assert(same(asked(c), ['r2', '9', 'G']), `the reconnect after the switch asked ${c.url.search}`);
    send(c, welcome({ offset: 9, epoch: 'G', recovered: true }, 'r2'), msg(10, 'G', 'g10', 'r2'));
    await expectRows(['g9', 'g10'], 'recovered in the new room');
    await shot('m', '12-m-scripted');
  }],

  ['a sign-in link (/?token=…) names the user from the token and leaves the address bar', async () => {
    signed = await startServer('127.0.0.1:0', ['--jwt-hmac-secret', SECRET]);
    const token = mintToken('--sub', 'u-77', '--name', 'Tokened Tess', '--ttl', '1h');
    const t = await newPage('t');
    await t.goto(`http://${signed.addr}/?room=signed&token=${token}`, { timeout: WAIT_MS });
    const form = await t.evaluate(() => ({ name: document.querySelector('#name').value, disabled: document.querySelector('#name').disabled, url: location.href }));
    assert(form.name === 'Tokened Tess' && form.disabled, `the join form: ${JSON.stringify(form)}`);
    assert(!new URL(form.url).searchParams.has('token'), `the address still carries the token: ${form.url}`);
    await t.click('#join');
    await waitState(t, 'online');
    const me = await t.evaluate(() => window.chat.me);
    assert(me && me.name === 'Tokened Tess' && me.user === 'u-77', `the server says this page is ${JSON.stringify(me)}`);
    // Without a token this server refuses the page's WebSocket (401): the page stays offline.
    const g = await newPage('g');
    await g.goto(`http://${signed.addr}/?room=signed&name=Guest`, { timeout: WAIT_MS });
    await g.click('#join');
    await waitState(g, 'offline');
  }],

  ['an expired sign-in closes with 4011: the page says so and stops reconnecting', async () => {
    const token = mintToken('--sub', 'u-78', '--name', 'Brief', '--ttl', '2s');
    const e = await newPage('e');
    await e.goto(`http://${signed.addr}/?room=signed&token=${token}`, { timeout: WAIT_MS });
    await e.click('#join');
    await waitState(e, 'online');
    await e.waitForFunction(() => window.chat.expired === true, null, { timeout: 5_000 })
      .catch(() => { throw new Error('the page did not see its sign-in expire within 5 s'); });
    const lines = await e.$$eval('#messages .event.system', (els) => els.map((x) => x.textContent).join(' | '));
    assert(/Your sign-in expired/.test(lines), `the lines: ${JSON.stringify(lines)}`);
    await sleep(2500);
    const after = await e.evaluate(() => ({ attempt: window.chat.attempt, state: window.chat.state }));
    assert(after.attempt === 0 && after.state === 'offline', `after expiry the page went on: ${JSON.stringify(after)}`);
    await stopServer(signed, 5000);
    signed = null;
  }],

  ['over TLS: Chromium loads the page over h2 (nextHopProtocol) and its /chat WebSocket comes over HTTP/2 (RFC 8441, the server counts it)', async () => {
    const t0 = Date.now();
    tls = { dir: fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-browser-tls-')) };
    const [cert, key] = [path.join(tls.dir, 'cert.pem'), path.join(tls.dir, 'key.pem')];
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { encoding: 'utf8', timeout: 10_000 });
    assert(made.status === 0, `openssl could not make a certificate: ${(made.stderr || made.error || '').toString().trim()}`);
    tls.server = await startServer('127.0.0.1:0', ['--tls-cert', cert, '--tls-key', key]);
    const origin = `https://${tls.server.addr}`;
    // A browser of its own: the certificate is self-signed. Chromium sends a WebSocket over
    // HTTP/2 only on an already-open h2 connection to its origin whose SETTINGS enabled the
    // extended CONNECT: the page load opens that connection.
    tls.browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--ignore-certificate-errors', '--enable-websocket-over-http2'],
      timeout: 20_000,
    });
    const ctx = await tls.browser.newContext({ viewport: { width: 1100, height: 720 }, ignoreHTTPSErrors: true });
    const h = await ctx.newPage();
    h.setDefaultTimeout(WAIT_MS);
    h.on('pageerror', (e) => jsErrors.push(`h: ${e.message}`));
    h.on('console', (m) => consoleLog.write(`[h] ${m.type()}: ${m.text()}\n`));
    pages.h = h;
    await h.goto(`${origin}/?${new URLSearchParams({ room: 'over-h2', name: 'Hana' })}`, { timeout: WAIT_MS });
    const hop = await h.evaluate(() => performance.getEntriesByType('navigation')[0]?.nextHopProtocol);
    assert(hop === 'h2', `the page came over ${JSON.stringify(hop)}, not h2`);
    await h.click('#join');
    await waitState(h, 'online');
    await say(h, 'hello over HTTP/2');
    await waitMessage(h, 'Hana', 'hello over HTTP/2');
    const m = await httpsGet(`${origin}/metrics`);
    const count = (http) => Number((new RegExp(`^switchboard_handshakes_total\\{outcome="accepted",http="${http.replace('.', '\\.')}"\\} (\\d+)$`, 'm').exec(m) || [])[1] || 0);
    const [h2, h1] = [count('2'), count('1.1')];
    assert(h2 >= 1 && h1 === 0, `the server counted the page's WebSocket as accepted over http="2" ${h2} times and over http="1.1" ${h1} times`);
    console.log(`# over TLS: Chromium ${tls.browser.version()} loaded the page over ${hop}; /metrics: WebSockets accepted over http="2" ${h2}, over http="1.1" ${h1} (${Date.now() - t0} ms)`);
    await shot('h', '13-h-over-h2');
  }],

  ['no uncaught JavaScript errors in the pages', async () => {
    assert(jsErrors.length === 0, jsErrors.join('; '));
  }],
];

// ---- runner -----------------------------------------------------------------------------------
let passed = 0;
let failed = 0;
let next = 0;
let finished = false;

function report(ok, name, reason) {
  if (ok) { passed++; console.log(`ok - ${name}`); } else { failed++; console.log(`not ok - ${name}: ${reason}`); }
}

// GET over https from Node, trusting any certificate (the test's is self-signed): the body.
function httpsGet(url) {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { rejectUnauthorized: false, timeout: WAIT_MS }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${url}: status ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: timed out`)));
    req.on('error', reject);
  });
}

async function cleanup() {
  if (browser) { const b = browser; browser = null; await Promise.race([b.close().catch(() => {}), sleep(5000)]); }
  if (server) { const s = server; server = null; await stopServer(s, 5000).catch(() => {}); }
  if (signed) { const s = signed; signed = null; await stopServer(s, 5000).catch(() => {}); }
  if (proxy) { const x = proxy; proxy = null; x.close(); }
  if (tls) {
    const t = tls;
    tls = null;
    if (t.browser) await Promise.race([t.browser.close().catch(() => {}), sleep(5000)]);
    if (t.server) await stopServer(t.server, 5000).catch(() => {});
    fs.rmSync(t.dir, { recursive: true, force: true });
  }
  await Promise.all([serverLog, consoleLog].map((s) => new Promise((r) => s.end(r))));
}

async function finish(code) {
  if (finished) return;
  finished = true;
  console.log(`browser: ${passed} passed, ${failed} failed`);
  process.exitCode = code ?? (failed ? 1 : 0);
}

const deadline = setTimeout(async () => {
  if (finished) return;
  for (; next < checks.length; next++) report(false, checks[next][0], `timed out (the whole test is limited to ${TOTAL_MS / 1000} s)`);
  await Promise.race([cleanup(), sleep(4000)]);
  await finish(1);
  process.exit(1);
}, TOTAL_MS);

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    if (server) server.proc.kill('SIGTERM');
    process.exit(130);
  });
}
process.on('exit', () => {
  for (const s of [server, signed, tls?.server]) if (s && s.proc.exitCode === null) s.proc.kill('SIGKILL');
});

try {
  for (; next < checks.length; next++) {
    const [name, fn] = checks[next];
    if (!server && next > 0) { report(false, name, 'not run: the server is not running'); continue; }
    try {
      await fn();
      if (finished) break;
      report(true, name);
    } catch (e) {
      if (finished) break;
      report(false, name, String(e && e.message ? e.message : e).split('\n')[0]);
      for (const label of Object.keys(pages)) await shot(label, `fail-${next}-${label}`);
    }
  }
} finally {
  clearTimeout(deadline);
  if (!finished) {
    await cleanup();
    console.log(`# screenshots and logs in ${ARTIFACTS}`);
    await finish();
  }
}
