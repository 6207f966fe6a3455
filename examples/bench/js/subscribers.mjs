// The client of `scripts/memory`: opens N graphql-transport-ws sockets to URL, one
// `messageAdded(channel: "general")` subscription each; prints "ready" once every socket
// is acknowledged and subscribed (and a moment has passed for the server to register the
// subscriptions), then on a line on stdin sends one `sendMessage` mutation over one more
// socket and prints, as JSON, when the event reached the 1st, median and last subscriber.
import { createRequire } from 'node:module';
const require = createRequire(new URL('../../../tests/js/package.json', import.meta.url));
const WebSocket = require('ws');

const N = +process.argv[2] || 1000;
const url = process.argv[3] || 'ws://127.0.0.1:4000/graphql';
const sub = JSON.stringify({ id: '1', type: 'subscribe', payload: { query: 'subscription { messageAdded(channel: "general") { id text } }' } });
let acked = 0, sentAt = 0;
const arrivals = [];
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
  const ms = (x) => Math.round(x * 10) / 10;
  console.log(JSON.stringify({ first: ms(arrivals[0]), median: ms(arrivals[Math.floor(N / 2)]), last: ms(arrivals[N - 1]) }));
  process.exit(0);
}

process.stdin.once('data', () => {
  open((ws) => {
    sentAt = performance.now();
    ws.send(JSON.stringify({ id: 'm', type: 'subscribe', payload: { query: 'mutation { sendMessage(channel: "general", text: "hello") { id } }' } }));
  }, () => {});
  setTimeout(() => { console.error(`only ${arrivals.length} of ${N} got the event`); process.exit(1); }, 30000);
});
