// The client of `scripts/memory`. Opens N connections to a server, each with PER
// `messageAdded(channel: "general")` subscriptions: graphql-transport-ws sockets to WS_URL,
// or (with SSE_URL set) SSE streams POSTed there, one subscription each (graphql-sse's
// distinct connections mode). Prints "ready" once every subscription is acknowledged
// (and a moment has passed for the server to register them), then, on a line on stdin,
// sends a `sendMessage` mutation over one more WebSocket, ROUNDS times (each once the
// last event of the previous one has arrived), and prints, as JSON, when the event
// reached the 1st, median and last subscription (the median round of each).
//
// Usage: node subscribers.mjs N WS_URL [ROUNDS=5] [PER=1] [SSE_URL]
import { createRequire } from 'node:module';
import http from 'node:http';
const require = createRequire(new URL('../../../tests/js/package.json', import.meta.url));
const WebSocket = require('ws');

const N = +process.argv[2] || 1000;
const url = process.argv[3] || 'ws://127.0.0.1:4000/graphql';
const ROUNDS = +process.argv[4] || 5;
const PER = +process.argv[5] || 1;
const sseUrl = process.argv[6];
const TOTAL = N * PER;
const QUERY = 'subscription { messageAdded(channel: "general") { id text } }';
let ready = 0, sentAt = 0;
let arrivals = [];
const rounds = [];
const keep = [];

function arrived() {
  if (!sentAt) return;
  arrivals.push(performance.now() - sentAt);
  if (arrivals.length === TOTAL) report();
}

function subscribed() {
  if (++ready === TOTAL) setTimeout(() => console.log('ready'), 1500);
}

function open(onAck, onMessage) {
  const ws = new WebSocket(url, 'graphql-transport-ws');
  ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init' })));
  ws.on('message', (raw) => {
    const m = JSON.parse(raw);
    if (m.type === 'connection_ack') onAck(ws);
    else if (m.type === 'ping') ws.send(JSON.stringify({ type: 'pong' }));
    else onMessage(m);
  });
  ws.on('error', (e) => { console.error('socket error', e.message); process.exit(1); });
  return ws;
}

function socket() {
  keep.push(open((ws) => {
    for (let i = 0; i < PER; i++) {
      ws.send(JSON.stringify({ id: String(i), type: 'subscribe', payload: { query: QUERY } }));
      subscribed();
    }
  }, (m) => { if (m.type === 'next') arrived(); }));
}

function stream() {
  const body = JSON.stringify({ query: QUERY });
  const req = http.request(sseUrl, {
    method: 'POST',
    agent: false,
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', 'content-length': Buffer.byteLength(body) },
  }, (res) => {
    if (res.statusCode !== 200) { console.error(`SSE answered ${res.statusCode}`); process.exit(1); }
    subscribed();
    res.setEncoding('utf8');
    let buffer = '';
    res.on('data', (chunk) => {
      buffer += chunk;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (event.startsWith('event: next')) arrived();
      }
    });
  });
  req.on('error', (e) => { console.error('stream error', e.message); process.exit(1); });
  req.end(body);
  keep.push(req);
}

// Open in batches, at most 200 connections not yet subscribed at a time, so that a busy
// server's accept queue is not flooded.
let opened = 0;
function more() {
  const until = Math.min(N, opened + 200, Math.floor(ready / PER) + 200);
  for (; opened < until; opened++) (sseUrl ? stream : socket)();
  if (opened < N) setTimeout(more, 20);
}
more();

function report() {
  arrivals.sort((a, b) => a - b);
  rounds.push({ first: arrivals[0], median: arrivals[Math.floor(TOTAL / 2)], last: arrivals[TOTAL - 1] });
  arrivals = [];
  if (rounds.length < ROUNDS) return send();
  const ms = (x) => Math.round(x * 10) / 10;
  const mid = (k) => ms(rounds.map((r) => r[k]).sort((a, b) => a - b)[Math.floor(ROUNDS / 2)]);
  console.log(JSON.stringify({ first: mid('first'), median: mid('median'), last: mid('last') }));
  process.exit(0);
}

let sender = null;
function send() {
  sentAt = performance.now();
  sender.send(JSON.stringify({ id: `m${rounds.length}`, type: 'subscribe', payload: { query: 'mutation { sendMessage(channel: "general", text: "hello") { id } }' } }));
}

process.stdin.once('data', () => {
  open((ws) => { sender = ws; send(); }, () => {});
  setTimeout(() => { console.error(`only ${arrivals.length} of ${TOTAL} got the event`); process.exit(1); }, 30000 * ROUNDS);
});
