// The seed app's shape on Node.js's event loop: per request to /overview,
// two HTTPS requests to the identity API by host name (each with its own
// lookup and handshake), then three pages from the code-hosting API over
// one kept connection. No MySQL query: Node.js has no MySQL client here.
//
//   node node_app.js PORT [CERT KEY]
//
// /repos/ID, the second endpoint, makes the same two identity requests and
// fetches one page. With CERT and KEY it serves HTTPS.
//
// Configured by environment as scenario/app.py (IDENTITY_URL, CODE_URL).
// With PROFILE_DIR, it times what each request awaits with
// process.hrtime, by hand, and writes one JSON file per request,
// request-PID-N.json, as scenario/async_app.py does:
//   {"request": s, "lookups": [calls, s], "ssl_reads": [chunks, s],
//    "handshakes": [calls, s]}
// ssl_reads is the time each response's chunks took to come (see get): on
// an event loop, the wait for the data is the read's.
"use strict";
const dns = require("dns").promises;
const fs = require("fs");
const http = require("http");
const https = require("https");
const net = require("net");
const path = require("path");
const tls = require("tls");

const IDENTITY = new URL(process.env.IDENTITY_URL);
const CODE = new URL(process.env.CODE_URL);
const PAGES = Number(process.env.CODE_PAGES || 3);
const PROFILE_DIR = process.env.PROFILE_DIR;
let requestNumber = 0;

const now = () => Number(process.hrtime.bigint()) / 1e9;

class Timings {
  constructor() {
    this.cats = {};
  }
  add(cat, t0) {
    const c = (this.cats[cat] ||= [0, 0]);
    c[0] += 1;
    c[1] += now() - t0;
  }
}

async function connect(url, t) {
  let address = url.hostname;
  if (!net.isIP(address)) {
    const t0 = now();
    address = (await dns.lookup(url.hostname, { family: 4 })).address;
    t.add("lookups", t0);
  }
  const t0 = now();
  const socket = await new Promise((resolve, reject) => {
    const s = tls.connect(
      {
        host: address,
        port: Number(url.port),
        servername: net.isIP(url.hostname) ? undefined : url.hostname,
        rejectUnauthorized: false,
      },
      () => resolve(s),
    );
    s.once("error", reject);
  });
  t.add("handshakes", t0);
  return socket;
}

// One GET over the connection; resolves to the body's length. Timed as
// reads: from the request written to each chunk's arrival, and from the end
// of this handler to the next; the handler's own work is the app's, as
// cProfile would leave it out of `_ssl` reads.
function get(socket, host, target, t) {
  return new Promise((resolve, reject) => {
    let head = Buffer.alloc(0);
    let length = -1;
    let body = 0;
    let t0;
    const onData = (chunk) => {
      t.add("ssl_reads", t0);
      try {
        onChunk(chunk);
      } finally {
        t0 = now();
      }
    };
    const onChunk = (chunk) => {
      if (length < 0) {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return;
        const m = /content-length:\s*(\d+)/i.exec(head.subarray(0, end).toString());
        length = m ? Number(m[1]) : 0;
        body = head.length - end - 4;
      } else {
        body += chunk.length;
      }
      if (body < length) return;
      socket.off("data", onData);
      socket.off("error", reject);
      resolve(length);
    };
    socket.on("data", onData);
    socket.once("error", reject);
    socket.write(`GET ${target} HTTP/1.1\r\nHost: ${host}\r\n\r\n`, () => {
      t0 = now();
    });
  });
}

async function loadUser(t) {
  for (const target of ["/v1/accounts/1", "/v1/accounts/1/groups"]) {
    const socket = await connect(IDENTITY, t);
    await get(socket, IDENTITY.hostname, target, t);
    socket.destroy();
  }
}

let codeHosting = null;

async function codePage(page, t) {
  codeHosting ||= await connect(CODE, t);
  return get(codeHosting, CODE.hostname, `/repos?page=${page}`, t);
}

async function getRepositoriesData(t) {
  let bytes = 0;
  for (let page = 1; page <= PAGES; page++) {
    bytes += await codePage(page, t);
  }
  return bytes;
}

// Over TLS when given a certificate and key (`node_app.js PORT CERT KEY`).
const [certFile, keyFile] = process.argv.slice(3, 5);
const serve = (handler) =>
  certFile
    ? https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) }, handler)
    : http.createServer(handler);

const server = serve(async (req, res) => {
  const t0 = now();
  const t = new Timings();
  req.resume(); // a POST's body: not read
  await loadUser(t);
  // /repos/ID, the second endpoint: the user loader and one page.
  const repo = /^\/repos\/(\d+)$/.exec(req.url);
  const bytes = repo
    ? await codePage((Number(repo[1]) % PAGES) + 1, t)
    : await getRepositoriesData(t);
  res.on("finish", () => {
    if (!PROFILE_DIR) return;
    requestNumber += 1;
    const name = `request-${process.pid}-${String(requestNumber).padStart(6, "0")}.json`;
    fs.writeFileSync(path.join(PROFILE_DIR, name), JSON.stringify({ request: now() - t0, ...t.cats }));
  });
  res.setHeader("Content-Type", "application/json");
  res.end(JSON.stringify({ repositories_bytes: bytes }));
});

server.listen(Number(process.argv[2]), "127.0.0.1");
