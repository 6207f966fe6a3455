// GraphiQL in real Chromium (Debian's, driven by playwright-core) against the demo: a live
// subscription in the GraphiQL page sees a mutation sent from outside. The screenshot is
// kept in artifacts/graphiql-live.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const demoBin = process.env.DEMO_BIN ?? path.join(root, 'target/debug/examples/demo');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

let demo;
let gateway;
let chat;
before(async () => {
  // Every port free, none of the demo's defaults (4000-4003): a demo already running
  // must not fail the suite.
  const [gw, chatPort, usersPort, activityPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  gateway = `http://127.0.0.1:${gw}`;
  chat = `http://127.0.0.1:${chatPort}`;
  demo = spawn(demoBin, ['--listen', `127.0.0.1:${gw}`], {
    env: { ...process.env, LIVEGATE_UPSTREAM_CHAT_URL: chat, LIVEGATE_UPSTREAM_USERS_URL: `http://127.0.0.1:${usersPort}`, LIVEGATE_UPSTREAM_ACTIVITY_URL: `http://127.0.0.1:${activityPort}` },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  // The demo prints its URLs once it listens.
  await new Promise((resolve, reject) => {
    demo.once('exit', (c) => reject(new Error(`demo exited with ${c}`)));
    demo.stdout.on('data', (d) => { if (d.toString().includes('GraphiQL')) resolve(); });
  });
});
after(() => demo?.kill());

test('a live subscription in GraphiQL shows a message posted from outside', async () => {
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const failed = [];
    page.on('requestfailed', (r) => failed.push(r.url()));
    // GraphiQL opens with the query it last had, from its local storage.
    const query = 'subscription Live {\n  messages(channel: "general") {\n    id\n    text\n    author { name }\n  }\n}';
    await page.addInitScript((q) => localStorage.setItem('graphiql:query', q), query);
    await page.goto(`${gateway}/graphql`);
    await page.waitForSelector('.graphiql-query-editor .CodeMirror', { timeout: 20000 });
    await page.waitForFunction(() => document.querySelector('.graphiql-query-editor .CodeMirror')?.CodeMirror.getValue().startsWith('subscription Live'));
    await page.click('.graphiql-execute-button');
    const response = '.graphiql-response .CodeMirror';
    await page.waitForFunction((sel) => document.querySelector(sel)?.CodeMirror.getValue().includes('Welcome to livegate!'), response, { timeout: 10000 });

    // From outside GraphiQL: a mutation through the gateway.
    const res = await fetch(`${gateway}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: 'mutation { sendMessage(channel: "general", text: "Hello from outside the browser") { id } }' }),
    });
    assert.equal(res.status, 200);
    await page.waitForFunction((sel) => document.querySelector(sel)?.CodeMirror.getValue().includes('Hello from outside the browser'), response, { timeout: 10000 });
    const shown = await page.evaluate((sel) => JSON.parse(document.querySelector(sel).CodeMirror.getValue()), response);
    assert.equal(shown.data.messages.at(-1).text, 'Hello from outside the browser');
    assert.equal(shown.data.messages.at(-1).author.name, 'Ada Lovelace');
    mkdirSync(path.join(root, 'artifacts'), { recursive: true });
    await page.screenshot({ path: path.join(root, 'artifacts/graphiql-live.png') });
    assert.deepEqual(failed, [], 'every asset loaded from the gateway');
  } finally {
    await browser.close();
  }
});
