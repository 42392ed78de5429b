// A counting TCP proxy for bench/get_aws.sh: sits between imgsvc and each
// AWS peer and counts the connections opened to it and the HTTP requests
// sent over them, by operation (X-Amz-Target for the JSON protocols, the
// method otherwise). Bytes pass through untouched; requests are found by
// reading the client's stream as HTTP/1.1 (request line, headers, then a
// Content-Length body skipped; imgsvc sends no chunked request).
//
// With --delay-ms=N first, each chunk of a peer's answer is held N ms
// before it goes on, as the network to a remote AWS region would hold it
// (bench/aws_latency.sh).
//
// Usage: node bench/count_proxy.mjs [--delay-ms=N] NAME=UPSTREAM_URL ...
// Prints one JSON line, {"NAME": "http://127.0.0.1:PORT", ..., "stats": URL};
// GET on the stats URL answers the counts so far:
// {"NAME": {"connections": n, "requests": n, "unframed": n, "operations": {"GetItem": n}}, ...}
// ("unframed": connections whose requests could no longer be told apart).
// Ends on SIGTERM or SIGINT, and by itself when its parent dies.

import http from 'node:http';
import net from 'node:net';

const HEADER_LIMIT = 64 * 1024;

// Reads the client's bytes as a sequence of HTTP/1.1 requests.
class RequestCounter {
  constructor(counts) {
    this.counts = counts;
    this.pending = Buffer.alloc(0);
    this.bodyLeft = 0;
    this.lost = false;  // a request we could not frame: stop counting on this connection
  }

  feed(chunk) {
    if (this.lost) return;
    let data = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    for (;;) {
      if (this.bodyLeft > 0) {
        const skipped = Math.min(this.bodyLeft, data.length);
        this.bodyLeft -= skipped;
        data = data.subarray(skipped);
        if (this.bodyLeft > 0) break;
      }
      const end = data.indexOf('\r\n\r\n');
      if (end < 0) {
        if (data.length > HEADER_LIMIT) this.lose();
        break;
      }
      this.record(data.subarray(0, end).toString('latin1'));
      data = data.subarray(end + 4);
      if (this.lost) return;
    }
    this.pending = Buffer.from(data);
  }

  record(head) {
    const [requestLine, ...headerLines] = head.split('\r\n');
    const headers = {};
    for (const line of headerLines) {
      const colon = line.indexOf(':');
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const method = requestLine.split(' ')[0];
    const target = headers['x-amz-target'];
    const operation = target ? target.slice(target.indexOf('.') + 1) : method;
    this.counts.requests += 1;
    this.counts.operations[operation] = (this.counts.operations[operation] ?? 0) + 1;
    if (headers['transfer-encoding']) {
      this.lose();
      return;
    }
    this.bodyLeft = Number(headers['content-length'] ?? 0);
  }

  lose() {
    this.lost = true;
    this.counts.unframed += 1;
  }
}

function startProxy(name, upstream, stats, delayMs) {
  const counts = { connections: 0, requests: 0, unframed: 0, operations: {} };
  stats[name] = counts;
  const server = net.createServer((client) => {
    counts.connections += 1;
    const counter = new RequestCounter(counts);
    const upstreamSocket = net.connect(Number(upstream.port), upstream.hostname);
    client.setNoDelay(true);
    upstreamSocket.setNoDelay(true);
    client.on('data', (chunk) => counter.feed(chunk));
    client.pipe(upstreamSocket);
    if (delayMs > 0) {
      // Chunks keep their order: each is held the same time.
      upstreamSocket.on('data', (chunk) => setTimeout(() => client.write(chunk), delayMs));
    } else {
      upstreamSocket.pipe(client);
    }
    client.on('error', () => upstreamSocket.destroy());
    upstreamSocket.on('error', () => client.destroy());
    client.on('close', () => upstreamSocket.destroy());
    // Delayed chunks may still be queued: ended, not destroyed, after them.
    upstreamSocket.on('close', () => setTimeout(() => (delayMs > 0 ? client.end() : client.destroy()), delayMs));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`));
  });
}

const stats = {};
const urls = {};
let delayMs = 0;
for (const argument of process.argv.slice(2)) {
  const delay = /^--delay-ms=(\d+)$/.exec(argument);
  if (delay) {
    delayMs = Number(delay[1]);
    continue;
  }
  const eq = argument.indexOf('=');
  if (eq <= 0 || argument.startsWith('-')) {
    process.stderr.write(`usage: node bench/count_proxy.mjs [--delay-ms=N] NAME=UPSTREAM_URL ...\n`);
    process.exit(2);
  }
  urls[argument.slice(0, eq)] = await startProxy(argument.slice(0, eq), new URL(argument.slice(eq + 1)), stats, delayMs);
}

const statsServer = http.createServer((req, res) => {
  const body = JSON.stringify(stats);
  res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
});
await new Promise((resolve) => statsServer.listen(0, '127.0.0.1', resolve));
urls.stats = `http://127.0.0.1:${statsServer.address().port}`;

for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(signal, () => process.exit(0));
const parentPid = process.ppid;
setInterval(() => {
  if (process.ppid !== parentPid) process.exit(0);
}, 500);

process.stdout.write(`${JSON.stringify(urls)}\n`);
