// Schema hot reload on SIGHUP, with the real graphql-ws client holding subscriptions open
// across a good reload and across a refused one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { start, collector } from './testbed.js';

const file = path.join(tmpdir(), `livegate-reload-${process.pid}.graphql`);
let tb;
before(async () => { tb = await start(['--schema-file', file]); });
after(async () => { await tb.stop(); rmSync(file, { force: true }); });

function collect(c, query) {
  const got = collector();
  c.subscribe({ query }, got.observer);
  return got;
}

const reloads = async (result) => {
  const page = await tb.metrics();
  const line = page.split('\n').find((l) => l.startsWith(`livegate_schema_reloads_total{result="${result}"}`));
  return line ? Number(line.split(' ')[1]) : 0;
};

test('a good reload keeps the subscriptions that stay, ends the one whose field is gone; a bad one changes nothing', async () => {
  const c = createClient({ url: tb.ws, webSocketImpl: WebSocket, retryAttempts: 0 });
  const messages = collect(c, 'subscription { messages(channel: "reload") { text } }');
  const counter = collect(c, 'subscription { counter { parity } }');
  assert.deepEqual(await messages.next(1), { data: { messages: [] } });
  assert.ok(await counter.next(1));

  // Drop the live `counter` field from Subscription, and reload.
  const v1 = readFileSync(file, 'utf8');
  const v2 = v1.replace(/\n\s*counter: Counter @live\(pollMs: 100\)/, '');
  assert.notEqual(v2, v1);
  writeFileSync(file, v2);
  process.kill(tb.pid, 'SIGHUP');
  await tb.until(() => reloads('loaded'), (n) => n === 1, 'the reload');
  const ended = await counter.complete();
  assert.match(JSON.stringify(ended.error), /no longer a live field/);
  // The other subscription goes on, on the same socket.
  await tb.query('mutation { sendMessage(channel: "reload", text: "after") { id } }');
  assert.deepEqual(await messages.next(2), { data: { messages: [{ text: 'after' }] } });

  // A schema with errors: refused, and everything goes on as it was.
  writeFileSync(file, `${v2}\ntype Broken { x: Nope }\n`);
  process.kill(tb.pid, 'SIGHUP');
  await tb.until(() => reloads('refused'), (n) => n === 1, 'the refusal');
  await tb.query('mutation { sendMessage(channel: "reload", text: "still") { id } }');
  assert.deepEqual(await messages.next(3), { data: { messages: [{ text: 'after' }, { text: 'still' }] } });
  const q = await tb.query('{ counter { parity } }');
  assert.ok(q.data.counter, JSON.stringify(q));
  await c.dispose();
});
