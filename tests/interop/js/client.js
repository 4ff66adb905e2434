#!/usr/bin/env node
// interop client on grpc-js: runs one gRPC interop test case, as the client
// side of doc/interop-test-descriptions.md (grpc/grpc) specifies it, with
// @grpc/grpc-js and the messages loaded from proto/grpc/testing/ by
// @grpc/proto-loader, against a grpc.testing.TestService server on 127.0.0.1
// (tests/programs/grpc-interop-server).
//
//   node client.js -port N -case NAME [-timeout-ms T]
//
// Cases: empty_unary, large_unary, client_streaming, server_streaming,
// ping_pong, empty_stream, cancel_after_begin, cancel_after_first_response,
// timeout_on_sleeping_server, status_code_and_message,
// special_status_message, unimplemented_method, unimplemented_service,
// custom_metadata; and beyond the descriptions server_stream_100000 and
// client_stream_100000 (100,000 messages, each in order, then OK).
//
// Prints "PASS <case>" and exits 0, or "FAIL <case>: <why>" and exits 1.
// Every case is bounded by -timeout-ms (default 10 s; 120 s for the long
// ones).  The npm packages come from package.json/package-lock.json beside
// this file, installed by install.sh into a build directory; NODE_PATH
// points there (tests/integration/test_grpc_interop_js.py sets it).
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_DIR = path.resolve(__dirname, '..', '..', '..', 'proto');

const REQ_SIZES = [27182, 8, 1828, 45904];
const RESP_SIZES = [31415, 9, 2653, 58979];
const LARGE_REQ = 271828;
const LARGE_RESP = 314159;
const LONG_N = 100000;
const INITIAL_KEY = 'x-grpc-test-echo-initial';
const INITIAL_VALUE = 'test_initial_metadata_value';
const TRAILING_KEY = 'x-grpc-test-echo-trailing-bin';
const TRAILING_VALUE = Buffer.from([0xab, 0xab, 0xab]);
const SPECIAL_MESSAGE =
    '\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \u{1f608}\t\n';

function args() {
  const a = {port: 0, name: '', timeoutMs: 0};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i].replace(/^--?/, '');
    const v = argv[++i];
    if (k === 'port') a.port = Number(v);
    else if (k === 'case') a.name = v;
    else if (k === 'timeout-ms') a.timeoutMs = Number(v);
    else throw new Error('unknown flag ' + argv[i - 1]);
  }
  return a;
}

function fail(msg) {
  throw new Error(msg);
}

function payload(n) {
  return {type: 'COMPRESSABLE', body: Buffer.alloc(n)};
}

function body(msg) {
  return (msg && msg.payload && msg.payload.body) || Buffer.alloc(0);
}

// The payload body has n bytes, all zero.
function checkBody(msg, n, what) {
  const b = body(msg);
  if (b.length !== n) fail(`${what}: payload body of ${b.length} bytes, want ${n}`);
  for (let i = 0; i < b.length; i++) {
    if (b[i] !== 0) fail(`${what}: payload body of ${n} bytes is not all zeros`);
  }
}

function codeName(code) {
  return Object.keys(grpc.status).find((k) => grpc.status[k] === code) || String(code);
}

// err is a status with the code (and, when msg is given, the message) wanted.
function wantCode(err, code, msg, what) {
  if (!err) fail(`${what}: call succeeded, want status ${codeName(code)}`);
  if (err.code !== code) {
    fail(`${what}: status ${codeName(err.code)} (${JSON.stringify(err.details)}),` +
         ` want ${codeName(code)}`);
  }
  if (msg !== undefined && err.details !== msg) {
    fail(`${what}: status message ${JSON.stringify(err.details)},` +
         ` want ${JSON.stringify(msg)}`);
  }
}

function outputRequest(sizes, reqSize) {
  const r = {response_type: 'COMPRESSABLE',
    response_parameters: sizes.map((size) => ({size}))};
  if (reqSize) r.payload = payload(reqSize);
  return r;
}

class Client {
  constructor(port, deadline) {
    const def = protoLoader.loadSync('grpc/testing/test.proto', {
      includeDirs: [PROTO_DIR], keepCase: true, longs: Number, enums: String,
      defaults: true,
    });
    const testing = grpc.loadPackageDefinition(def).grpc.testing;
    const addr = '127.0.0.1:' + port;
    const creds = grpc.credentials.createInsecure();
    this.tc = new testing.TestService(addr, creds);
    this.unimplemented = new testing.UnimplementedService(addr, creds, {
      channelOverride: this.tc.getChannel(),
    });
    this.deadline = deadline;
  }

  opts(extra) {
    return Object.assign({deadline: this.deadline}, extra || {});
  }

  // A unary call: {err, resp, header, trailer}.
  unary(client, method, req, md) {
    return new Promise((resolve) => {
      const out = {};
      const call = client[method](req, md || new grpc.Metadata(), this.opts(),
          (err, resp) => {
            out.err = err;
            out.resp = resp;
          });
      call.on('metadata', (m) => {
        out.header = m;
      });
      call.on('status', (s) => {
        out.trailer = s.metadata;
        setImmediate(() => resolve(out));
      });
    });
  }

  // Reads a server-streaming or duplex call to its end: {err, msgs, header,
  // trailer}; onData(msg, index) may act on each message.
  collect(call, onData) {
    return new Promise((resolve) => {
      const out = {msgs: []};
      let ended = false;
      let status = null;
      const done = () => {
        if (status && (ended || out.err)) resolve(out);
      };
      call.on('metadata', (m) => {
        out.header = m;
      });
      call.on('data', (m) => {
        out.msgs.push(m);
        if (onData) onData(m, out.msgs.length - 1);
      });
      call.on('error', (e) => {
        out.err = e;
        done();
      });
      call.on('end', () => {
        ended = true;
        done();
      });
      call.on('status', (s) => {
        status = s;
        out.trailer = s.metadata;
        done();
      });
    });
  }

  async emptyUnary() {
    const r = await this.unary(this.tc, 'EmptyCall', {});
    if (r.err) fail('EmptyCall: ' + r.err.message);
    if (!r.resp) fail('EmptyCall: no response');
  }

  async largeUnary() {
    const r = await this.unary(this.tc, 'UnaryCall', {
      response_type: 'COMPRESSABLE', response_size: LARGE_RESP, payload: payload(LARGE_REQ),
    });
    if (r.err) fail('UnaryCall: ' + r.err.message);
    checkBody(r.resp, LARGE_RESP, 'UnaryCall');
  }

  streamingInput(requests) {
    return new Promise((resolve) => {
      const call = this.tc.StreamingInputCall(this.opts(), (err, resp) => {
        resolve({err, resp});
      });
      (async () => {
        for (const r of requests) {
          if (!call.write(r)) await new Promise((ok) => call.once('drain', ok));
        }
        call.end();
      })();
    });
  }

  async clientStreaming() {
    const r = await this.streamingInput(REQ_SIZES.map((n) => ({payload: payload(n)})));
    if (r.err) fail('StreamingInputCall: ' + r.err.message);
    if (r.resp.aggregated_payload_size !== 74922) {
      fail(`aggregated_payload_size ${r.resp.aggregated_payload_size}, want 74922`);
    }
  }

  checkSizes(r, sizes, what) {
    if (r.err) fail(`${what}: after ${r.msgs.length} responses: ${r.err.message}`);
    if (r.msgs.length !== sizes.length) {
      fail(`${what}: ${r.msgs.length} responses, want ${sizes.length}`);
    }
    r.msgs.forEach((m, i) => checkBody(m, sizes[i], `${what} response ${i}`));
  }

  async serverStreaming() {
    const call = this.tc.StreamingOutputCall(outputRequest(RESP_SIZES), this.opts());
    this.checkSizes(await this.collect(call), RESP_SIZES, 'StreamingOutputCall');
  }

  async pingPong() {
    const call = this.tc.FullDuplexCall(this.opts());
    let i = 0;
    const send = () => call.write(outputRequest([RESP_SIZES[i]], REQ_SIZES[i]));
    // Each request only after the previous reply; half-close after the last.
    const r = this.collect(call, (m, k) => {
      if (k !== i) return;
      i++;
      if (i < REQ_SIZES.length) send();
      else call.end();
    });
    send();
    this.checkSizes(await r, RESP_SIZES, 'FullDuplexCall');
  }

  async emptyStream() {
    const call = this.tc.FullDuplexCall(this.opts());
    call.end();
    this.checkSizes(await this.collect(call), [], 'FullDuplexCall');
  }

  async cancelAfterBegin() {
    const r = await new Promise((resolve) => {
      const call = this.tc.StreamingInputCall(this.opts(), (err, resp) => {
        resolve({err, resp});
      });
      call.cancel();
    });
    wantCode(r.err, grpc.status.CANCELLED, undefined, 'StreamingInputCall');
  }

  async cancelAfterFirstResponse() {
    const call = this.tc.FullDuplexCall(this.opts());
    const r = this.collect(call, (m, k) => {
      if (k === 0) call.cancel();
    });
    call.write(outputRequest([31415], 27182));
    const out = await r;
    if (out.msgs.length !== 1) fail(`${out.msgs.length} responses before the cancel, want 1`);
    checkBody(out.msgs[0], 31415, 'first response');
    wantCode(out.err, grpc.status.CANCELLED, undefined, 'FullDuplexCall');
  }

  async timeoutOnSleepingServer() {
    const call = this.tc.FullDuplexCall({deadline: Date.now() + 1});
    call.write(outputRequest([], 27182));
    const r = await this.collect(call);
    wantCode(r.err, grpc.status.DEADLINE_EXCEEDED, undefined, 'FullDuplexCall');
  }

  async statusCodeAndMessage(msg) {
    const st = {code: 2, message: msg};
    const u = await this.unary(this.tc, 'UnaryCall', {response_status: st});
    wantCode(u.err, grpc.status.UNKNOWN, msg, 'UnaryCall');
    const call = this.tc.FullDuplexCall(this.opts());
    call.write({response_status: st});
    call.end();
    const d = await this.collect(call);
    wantCode(d.err, grpc.status.UNKNOWN, msg, 'FullDuplexCall');
  }

  async specialStatusMessage() {
    const u = await this.unary(this.tc, 'UnaryCall',
        {response_status: {code: 2, message: SPECIAL_MESSAGE}});
    wantCode(u.err, grpc.status.UNKNOWN, SPECIAL_MESSAGE, 'UnaryCall');
  }

  async unimplementedMethod() {
    const r = await this.unary(this.tc, 'UnimplementedCall', {});
    wantCode(r.err, grpc.status.UNIMPLEMENTED, undefined, 'UnimplementedCall');
  }

  async unimplementedService() {
    const r = await this.unary(this.unimplemented, 'UnimplementedCall', {});
    wantCode(r.err, grpc.status.UNIMPLEMENTED, undefined,
        'UnimplementedService/UnimplementedCall');
  }

  static checkEchoed(header, trailer, what) {
    const h = header ? header.get(INITIAL_KEY) : [];
    if (h.length !== 1 || h[0] !== INITIAL_VALUE) {
      fail(`${what}: initial metadata ${INITIAL_KEY} = ${JSON.stringify(h)},` +
           ` want ["${INITIAL_VALUE}"]`);
    }
    const t = trailer ? trailer.get(TRAILING_KEY) : [];
    if (t.length !== 1 || !Buffer.isBuffer(t[0]) || !t[0].equals(TRAILING_VALUE)) {
      fail(`${what}: trailing metadata ${TRAILING_KEY} = ${JSON.stringify(t)},` +
           ` want [0xababab]`);
    }
  }

  async customMetadata() {
    const md = () => {
      const m = new grpc.Metadata();
      m.set(INITIAL_KEY, INITIAL_VALUE);
      m.set(TRAILING_KEY, TRAILING_VALUE);
      return m;
    };
    const u = await this.unary(this.tc, 'UnaryCall', {
      response_type: 'COMPRESSABLE', response_size: LARGE_RESP, payload: payload(LARGE_REQ),
    }, md());
    if (u.err) fail('UnaryCall: ' + u.err.message);
    checkBody(u.resp, LARGE_RESP, 'UnaryCall');
    Client.checkEchoed(u.header, u.trailer, 'UnaryCall');

    const call = this.tc.FullDuplexCall(md(), this.opts());
    call.write(outputRequest([LARGE_RESP], LARGE_REQ));
    call.end();
    const d = await this.collect(call);
    this.checkSizes(d, [LARGE_RESP], 'FullDuplexCall');
    Client.checkEchoed(d.header, d.trailer, 'FullDuplexCall');
  }

  static longSizes() {
    return Array.from({length: LONG_N}, (_, i) => i % 251);
  }

  async serverStream100000() {
    const sizes = Client.longSizes();
    const call = this.tc.StreamingOutputCall(outputRequest(sizes), this.opts());
    this.checkSizes(await this.collect(call), sizes, 'StreamingOutputCall');
  }

  async clientStream100000() {
    const sizes = Client.longSizes();
    const r = await this.streamingInput(sizes.map((n) => ({payload: payload(n)})));
    if (r.err) fail('StreamingInputCall: ' + r.err.message);
    const sum = sizes.reduce((a, b) => a + b, 0);
    if (r.resp.aggregated_payload_size !== sum) {
      fail(`aggregated_payload_size ${r.resp.aggregated_payload_size}, want ${sum}`);
    }
    // In order: each request asks for a reply of its own size, so the
    // replies show the order the server read the requests in.
    //
    // At most AHEAD requests are written ahead of the replies.  grpc-js's
    // write() takes every message at once (it returns true and calls back
    // before the bytes leave), and with 100,000 queued its sending slows to
    // about 100 messages a second, whatever the server (grpcio's server
    // shows the same): so the client paces itself, as an application would.
    const AHEAD = 256;
    const call = this.tc.FullDuplexCall(this.opts());
    let got = 0;
    let wake = null;
    const d = this.collect(call, () => {
      got++;
      if (wake) {
        const w = wake;
        wake = null;
        w();
      }
    });
    let sent = 0;
    let ended = false;
    d.then(() => {
      ended = true; // the call ended early: stop writing
      if (wake) wake();
    });
    for (const n of sizes) {
      while (sent - got >= AHEAD && !ended) await new Promise((ok) => { wake = ok; });
      if (ended) break;
      if (!call.write(outputRequest([n]))) await new Promise((ok) => call.once('drain', ok));
      sent++;
    }
    call.end();
    this.checkSizes(await d, sizes, 'FullDuplexCall');
  }
}

async function main() {
  const a = args();
  const long = a.name === 'server_stream_100000' || a.name === 'client_stream_100000';
  const timeoutMs = a.timeoutMs > 0 ? a.timeoutMs : (long ? 120000 : 10000);
  const c = new Client(a.port, Date.now() + timeoutMs);
  const cases = {
    empty_unary: () => c.emptyUnary(),
    large_unary: () => c.largeUnary(),
    client_streaming: () => c.clientStreaming(),
    server_streaming: () => c.serverStreaming(),
    ping_pong: () => c.pingPong(),
    empty_stream: () => c.emptyStream(),
    cancel_after_begin: () => c.cancelAfterBegin(),
    cancel_after_first_response: () => c.cancelAfterFirstResponse(),
    timeout_on_sleeping_server: () => c.timeoutOnSleepingServer(),
    status_code_and_message: () => c.statusCodeAndMessage('test status message'),
    special_status_message: () => c.specialStatusMessage(),
    unimplemented_method: () => c.unimplementedMethod(),
    unimplemented_service: () => c.unimplementedService(),
    custom_metadata: () => c.customMetadata(),
    server_stream_100000: () => c.serverStream100000(),
    client_stream_100000: () => c.clientStream100000(),
  };
  if (!(a.port > 0) || !cases[a.name]) {
    process.stderr.write(`usage: client.js -port N -case NAME (unknown case "${a.name}")\n`);
    process.exit(2);
  }
  // A hard bound besides the calls' deadline.
  const timer = setTimeout(() => {
    console.log(`FAIL ${a.name}: not done after ${timeoutMs + 5000} ms`);
    process.exit(1);
  }, timeoutMs + 5000);
  try {
    await cases[a.name]();
    // The channel outlives the case: a plain call on it still works (after
    // a cancel, the server reset that stream only).
    await c.emptyUnary().catch((e) => fail('EmptyCall after the case: ' + e.message));
  } catch (e) {
    console.log(`FAIL ${a.name}: ${e.message}`);
    process.exit(1);
  }
  clearTimeout(timer);
  console.log(`PASS ${a.name}`);
  c.tc.close();
  process.exit(0);
}

main();
