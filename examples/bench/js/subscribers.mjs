// The client of `scripts/memory`: opens N graphql-transport-ws sockets to URL, one
// `messageAdded(channel: "general")` subscription each; prints "ready" once every socket
// is acknowledged and subscribed (and a moment has passed for the server to register the
// subscriptions), then on a line on stdin sends a `sendMessage` mutation over one more
// socket, ROUNDS times (argv[4], default 5), each once the last event has arrived, and
// prints, as JSON, when the event reached the 1st, median and last subscriber (the median
// round of each).
import { createRequire } from 'node:module';
const require = createRequire(new URL('../../../tests/js/package.json', import.meta.url));
const WebSocket = require('ws');

const N = +process.argv[2] || 1000;
const url = process.argv[3] || 'ws://127.0.0.1:4000/graphql';
const ROUNDS = +process.argv[4] || 5;
const sub = JSON.stringify({ id: '1', type: 'subscribe', payload: { query: 'subscription { messageAdded(channel: "general") { id text } }' } });
let acked = 0, sentAt = 0;
let arrivals = [];
const rounds = [];
const sockets = [];

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

// Open in batches so the accept queue is not flooded.
let opened = 0;
function more() {
  const until = Math.min(N, opened + 200);
  for (; opened < until; opened++) {
    sockets.push(open((ws) => {
      ws.send(sub);
      if (++acked === N) setTimeout(() => console.log('ready'), 1500);
    }, (m) => {
      if (m.type === 'next' && sentAt) arrivals.push(performance.now() - sentAt);
      if (arrivals.length === N) report();
    }));
  }
  if (opened < N) setTimeout(more, 50);
}
more();

function report() {
  arrivals.sort((a, b) => a - b);
  rounds.push({ first: arrivals[0], median: arrivals[Math.floor(N / 2)], last: arrivals[N - 1] });
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
  setTimeout(() => { console.error(`only ${arrivals.length} of ${N} got the event`); process.exit(1); }, 30000 * ROUNDS);
});
