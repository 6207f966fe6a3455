// Cross-origin browser apps in real Chromium: a page on an origin that --cors-origin
// allows can query the gateway (with a CORS preflight) and open a WebSocket to it; a page
// on another origin can do neither.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';
import { start } from './testbed.js';

const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** A page server on its own port: its own origin. */
function site() {
  return new Promise((resolve) => {
    const s = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<!doctype html><title>app</title><p>app</p>');
    }).listen(0, '127.0.0.1', () => resolve({ server: s, origin: `http://127.0.0.1:${s.address().port}` }));
  });
}

let tb;
let app;
let other;
before(async () => {
  app = await site();
  other = await site();
  tb = await start(['--cors-origin', app.origin]);
});
after(async () => {
  await tb?.stop();
  app?.server.close();
  other?.server.close();
});

/** In the page: a POST query (preflighted: JSON with an authorization header) and a
 *  graphql-transport-ws handshake; what each got. */
function probe(page, graphql, ws) {
  return page.evaluate(async ({ graphql, ws }) => {
    let query;
    try {
      const res = await fetch(graphql, {
        method: 'POST',
        credentials: 'include',
        headers: { 'content-type': 'application/json', authorization: 'Bearer t' },
        body: JSON.stringify({ query: '{ counter { parity } }' }),
      });
      query = await res.json();
    } catch (e) {
      query = `blocked: ${e.name}`;
    }
    const socket = await new Promise((resolve) => {
      const s = new WebSocket(ws, 'graphql-transport-ws');
      s.onopen = () => s.send(JSON.stringify({ type: 'connection_init' }));
      s.onmessage = (m) => { resolve(JSON.parse(m.data).type); s.close(); };
      s.onerror = () => resolve('refused');
    });
    return { query, socket };
  }, { graphql, ws });
}

test('an allowed origin queries and subscribes across origins; another origin cannot', async () => {
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage();
    await page.goto(app.origin);
    const allowed = await probe(page, tb.graphql, tb.ws);
    assert.deepEqual(allowed.query, { data: { counter: { parity: 'even' } } });
    assert.equal(allowed.socket, 'connection_ack');

    const foreign = await browser.newPage();
    await foreign.goto(other.origin);
    const refused = await probe(foreign, tb.graphql, tb.ws);
    assert.equal(refused.query, 'blocked: TypeError');
    assert.equal(refused.socket, 'refused');
  } finally {
    await browser.close();
  }
});
