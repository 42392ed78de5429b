// Run as `node --openssl-legacy-provider local_aws.mjs`: s3rver seals its
// ListObjectsV2 continuation tokens with DES, which Node 20's OpenSSL 3 has
// only in its legacy provider (without it, paginated listings fail).
//
// The local AWS peers the AWS tests run against (see local_aws.h), in one
// node process, every server on a 127.0.0.1 port the kernel picks:
//  - s3rver (S3; objects in a temporary directory removed at exit) and
//    dynalite (DynamoDB, in memory);
//  - a Secrets Manager stand-in speaking the AWS JSON 1.1 protocol;
//  - before s3rver and dynalite, a front that checks each request's SigV4
//    signature (Authorization header or presigned query) with the AWS SDK for
//    JavaScript's signer and answers as AWS does when it does not match. The
//    emulators check no signature themselves, so the fronts are what holds
//    our signer to an independent implementation.
// When everything listens, one JSON line with the base URLs goes to stdout:
// the fronts and the stand-in, and for benchmarks the emulators and the
// stand-in without the signature check ("*_direct").
// Its "control" URL is a separate port through which tests inject faults into
// the fronts, stop and restart them, and count the requests they saw (see
// "Control" below); no AWS request ever reaches it, being on its own port.
// The process ends on SIGTERM, SIGINT or SIGHUP, and by itself when its
// parent dies (the test binary starting it may crash), so no peer outlives
// its tests.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';
import dynalite from 'dynalite';
import S3rver from 's3rver';
import s3rverAccounts from 's3rver/lib/models/account.js';

const CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test-secret' };
const REGION = 'us-east-1';
const ACCOUNT_ID = '123456789012';
// AWS refuses requests signed further than this from its clock.
const MAX_CLOCK_SKEW_MS = 15 * 60 * 1000;
const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;
const MAX_JSON_BODY = 16 << 20;
// Longer than any pause between two calls of a test, so a pooled connection
// is not closed under a request that cannot be replayed.
const KEEP_ALIVE_MS = 60_000;
const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';

// Signature checking --------------------------------------------------------

// Why a request is refused; each service words it its own way (below).
class AuthFailure {
  constructor(kind, message, details = {}) {
    this.kind = kind;  // missing, malformed, unknown-key, skewed, expired, mismatch
    this.message = message;
    this.details = details;  // canonicalRequest, stringToSign when known
  }
}

function splitTarget(url) {
  const mark = url.indexOf('?');
  return mark < 0 ? { rawPath: url, rawQuery: '' } : { rawPath: url.slice(0, mark), rawQuery: url.slice(mark + 1) };
}

// Decoded names and values, repeated names as arrays (the signer's shape).
function parseQuery(rawQuery) {
  const query = {};
  for (const pair of rawQuery.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const name = decodeURIComponent(eq < 0 ? pair : pair.slice(0, eq));
    const value = eq < 0 ? '' : decodeURIComponent(pair.slice(eq + 1));
    if (!(name in query)) query[name] = value;
    else query[name] = [].concat(query[name], value);
  }
  return query;
}

function parseAmzDate(text) {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(text ?? '');
  if (!m) return null;
  return new Date(Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]));
}

function expectedCredential(date, service) {
  return `${CREDENTIALS.accessKeyId}/${date}/${REGION}/${service}/aws4_request`;
}

// The SDK's signer, remembering the canonical request and string to sign of
// its last computation so a refusal can show them, as AWS does.
class RecordingSigner extends SignatureV4 {
  createCanonicalRequest(...args) {
    this.canonicalRequest = super.createCanonicalRequest(...args);
    return this.canonicalRequest;
  }
  async createStringToSign(...args) {
    this.stringToSign = await super.createStringToSign(...args);
    return this.stringToSign;
  }
}

function signerFor(service) {
  return new RecordingSigner({
    credentials: CREDENTIALS,
    region: REGION,
    service,
    sha256: Sha256,
    // S3's wire path is already the canonical one; other services encode it once more.
    uriEscapePath: service !== 's3',
    applyChecksum: false,
  });
}

// A repeated header's values joined with ',' as SigV4 does (node's own
// req.headers joins most with ', ').
function headerValue(req, name) {
  return req.headersDistinct[name]?.join(',');
}

function signedHeaderBag(req, names) {
  const headers = {};
  for (const name of names) {
    const value = headerValue(req, name);
    if (value !== undefined) headers[name] = value;
  }
  return headers;
}

function checkCredential(credential, date, service) {
  if (credential.split('/')[0] !== CREDENTIALS.accessKeyId) {
    return new AuthFailure('unknown-key', 'The AWS Access Key Id you provided does not exist in our records.');
  }
  const expected = expectedCredential(date, service);
  if (credential !== expected) {
    return new AuthFailure('mismatch', `Credential should be scoped to ${expected}, not ${credential}.`);
  }
  return null;
}

function mismatch(signer) {
  return new AuthFailure(
    'mismatch',
    'The request signature we calculated does not match the signature you provided. ' +
      'Check your key and signing method.',
    { canonicalRequest: signer.canonicalRequest, stringToSign: signer.stringToSign },
  );
}

// A request signed in its Authorization header. `body` is the payload for
// services that sign its hash; S3 signs x-amz-content-sha256 instead.
async function verifyAuthorizationHeader(req, service, body) {
  const authorization = headerValue(req, 'authorization');
  if (authorization === undefined) return new AuthFailure('missing', 'Request is missing Authentication Token');
  const m = /^AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})$/.exec(
    authorization,
  );
  if (!m) return new AuthFailure('malformed', `Authorization header is malformed: ${authorization}`);
  const [, credential, signedHeaders, signature] = m;
  const signingDate = parseAmzDate(headerValue(req, 'x-amz-date'));
  if (!signingDate) return new AuthFailure('malformed', 'X-Amz-Date is missing or not in ISO 8601 basic format.');
  const refused = checkCredential(credential, headerValue(req, 'x-amz-date').slice(0, 8), service);
  if (refused) return refused;
  if (Math.abs(Date.now() - signingDate.getTime()) > MAX_CLOCK_SKEW_MS) {
    return new AuthFailure('skewed', `Signature not yet current or expired: ${headerValue(req, 'x-amz-date')}`);
  }
  if (service === 's3' && headerValue(req, 'x-amz-content-sha256') === undefined) {
    return new AuthFailure('malformed', 'Missing required header for this request: x-amz-content-sha256');
  }

  const names = signedHeaders.split(';');
  const { rawPath, rawQuery } = splitTarget(req.url);
  const signer = signerFor(service);
  const signed = await signer.sign(
    {
      method: req.method,
      protocol: 'http:',
      hostname: '127.0.0.1',
      path: rawPath,
      query: parseQuery(rawQuery),
      headers: signedHeaderBag(req, names),
      body,
    },
    { signingDate, signableHeaders: new Set(names) },
  );
  const computed = /SignedHeaders=([^,\s]+), Signature=([0-9a-f]{64})$/.exec(signed.headers.authorization);
  if (!computed || computed[1] !== signedHeaders || computed[2] !== signature) return mismatch(signer);
  return null;
}

const PRESIGN_PARAMS = [
  'X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Date', 'X-Amz-Expires', 'X-Amz-SignedHeaders', 'X-Amz-Signature',
];

// A presigned URL (signature in the query; the payload is never signed).
async function verifyPresignedQuery(req, service) {
  const { rawPath, rawQuery } = splitTarget(req.url);
  const query = parseQuery(rawQuery);
  for (const name of PRESIGN_PARAMS) {
    if (typeof query[name] !== 'string') {
      return new AuthFailure('malformed', `Query-string authentication version 4 requires ${PRESIGN_PARAMS.join(', ')}.`);
    }
  }
  if (query['X-Amz-Algorithm'] !== 'AWS4-HMAC-SHA256') {
    return new AuthFailure('malformed', 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"');
  }
  const signingDate = parseAmzDate(query['X-Amz-Date']);
  const expiresIn = /^\d+$/.test(query['X-Amz-Expires']) ? Number(query['X-Amz-Expires']) : NaN;
  if (!signingDate || !(expiresIn >= 1 && expiresIn <= MAX_PRESIGN_SECONDS)) {
    return new AuthFailure('malformed', 'X-Amz-Date or X-Amz-Expires is not valid.');
  }
  const refused = checkCredential(query['X-Amz-Credential'], query['X-Amz-Date'].slice(0, 8), service);
  if (refused) return refused;
  if (Date.now() > signingDate.getTime() + expiresIn * 1000) return new AuthFailure('expired', 'Request has expired');
  if (signingDate.getTime() - Date.now() > MAX_CLOCK_SKEW_MS) {
    return new AuthFailure('skewed', 'Request is not valid yet');
  }

  const names = query['X-Amz-SignedHeaders'].split(';');
  const headers = signedHeaderBag(req, names);
  // How the SDK's S3 presigner declares the unsigned payload: a header kept
  // out of both the query and the signed headers.
  headers['x-amz-content-sha256'] = UNSIGNED_PAYLOAD;
  const signer = signerFor(service);
  let presigned;
  try {
    presigned = await signer.presign(
      { method: req.method, protocol: 'http:', hostname: '127.0.0.1', path: rawPath, query, headers },
      {
        signingDate,
        expiresIn,
        signableHeaders: new Set(names),
        unsignableHeaders: new Set(['x-amz-content-sha256']),
        unhoistableHeaders: new Set([...names, 'x-amz-content-sha256']),
      },
    );
  } catch (error) {
    return new AuthFailure('malformed', String(error));
  }
  if (presigned.query['X-Amz-SignedHeaders'] !== query['X-Amz-SignedHeaders'] ||
      presigned.query['X-Amz-Signature'] !== query['X-Amz-Signature']) {
    return mismatch(signer);
  }
  return null;
}

function isPresigned(req) {
  return /[?&]X-Amz-Signature=/.test(req.url);
}

async function verify(req, service, body) {
  try {
    return isPresigned(req) ? await verifyPresignedQuery(req, service) : await verifyAuthorizationHeader(req, service, body);
  } catch (error) {
    // decodeURIComponent on a malformed escape, mostly.
    return new AuthFailure('malformed', String(error));
  }
}

// Answers ---------------------------------------------------------------------

function requestId() {
  return crypto.randomBytes(8).toString('hex').toUpperCase();
}

function xmlEscape(text) {
  return String(text).replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

const S3_FAILURES = {
  missing: [403, 'AccessDenied'],
  malformed: [400, 'AuthorizationHeaderMalformed'],
  'unknown-key': [403, 'InvalidAccessKeyId'],
  skewed: [403, 'RequestTimeTooSkewed'],
  expired: [403, 'AccessDenied'],
  mismatch: [403, 'SignatureDoesNotMatch'],
  'payload-mismatch': [400, 'XAmzContentSHA256Mismatch'],
  // Injected faults, as AWS words them.
  throttle: [503, 'SlowDown'],
  error500: [500, 'InternalError'],
};

function sendS3Error(res, kind, message, details = {}) {
  const [status, code] = S3_FAILURES[kind];
  const id = requestId();
  let xml = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${xmlEscape(message)}</Message>`;
  if (details.canonicalRequest !== undefined) xml += `<CanonicalRequest>${xmlEscape(details.canonicalRequest)}</CanonicalRequest>`;
  if (details.stringToSign !== undefined) xml += `<StringToSign>${xmlEscape(details.stringToSign)}</StringToSign>`;
  xml += `<RequestId>${id}</RequestId></Error>`;
  res.writeHead(status, {
    'Content-Type': 'application/xml',
    'Content-Length': Buffer.byteLength(xml),
    'x-amz-request-id': id,
  });
  res.end(xml);
}

// The JSON services answer every authentication failure with 400.
const JSON_FAILURES = {
  missing: 'MissingAuthenticationTokenException',
  malformed: 'IncompleteSignatureException',
  'unknown-key': 'UnrecognizedClientException',
  skewed: 'InvalidSignatureException',
  expired: 'InvalidSignatureException',
  mismatch: 'InvalidSignatureException',
};

function sendJson(res, status, contentType, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, {
    'Content-Type': contentType,
    'Content-Length': Buffer.byteLength(body),
    'x-amzn-RequestId': requestId(),
  });
  res.end(body);
}

function sendJsonAuthFailure(res, contentType, failure) {
  let message = failure.message;
  if (failure.details.canonicalRequest !== undefined) {
    message += `\n\nThe Canonical String for this request should have been\n'${failure.details.canonicalRequest}'\n\n` +
      `The String-to-Sign should have been\n'${failure.details.stringToSign}'\n`;
  }
  sendJson(res, 400, contentType, { __type: `com.amazon.coral.service#${JSON_FAILURES[failure.kind]}`, message });
}

// Faults and counts --------------------------------------------------------------

const SERVICES = ['s3', 'dynamodb', 'secretsmanager'];
const FAULT_KINDS = ['throttle', 'error500', 'close', 'lose_answer', 'hold'];
// Kinds only the DynamoDB front takes.
const DYNAMODB_ONLY_FAULTS = ['lose_answer', 'hold'];
const PASS = 'pass';

// service -> Map(operation, '' for any -> fault kinds still to answer, in
// order; PASS lets one request through)
const pendingFaults = new Map(SERVICES.map((service) => [service, new Map()]));
// service -> Map(operation -> requests that reached the front)
const requestCounts = new Map(SERVICES.map((service) => [service, new Map()]));
// DynamoDB requests held by a 'hold' fault: { res, sendOn }.
let heldRequests = [];

// Sends the held requests on, but for those whose client has gone: a write
// must not take effect after its test has given up on it.
function releaseHeldRequests() {
  const held = heldRequests;
  heldRequests = [];
  for (const { res, sendOn } of held) {
    if (!res.destroyed && !res.socket?.destroyed) sendOn();
  }
}

function countRequest(service, operation) {
  const counts = requestCounts.get(service);
  counts.set(operation, (counts.get(operation) ?? 0) + 1);
}

// The next fault due for this operation; one for the operation itself goes
// before one for any operation of the service.
function takeFault(service, operation) {
  const queues = pendingFaults.get(service);
  for (const key of [operation, '']) {
    const queue = queues.get(key);
    if (queue !== undefined && queue.length > 0) {
      const kind = queue.shift();
      return kind === PASS ? null : kind;
    }
  }
  return null;
}

// The name AWS gives a path-style S3 request (PutObject, UploadPart, ...).
function s3Operation(req) {
  const { rawPath, rawQuery } = splitTarget(req.url);
  let query;
  try {
    query = parseQuery(rawQuery);
  } catch {
    query = {};
  }
  const has = (name) => Object.hasOwn(query, name);
  const segments = rawPath.split('/').filter((segment) => segment !== '');
  const copy = headerValue(req, 'x-amz-copy-source') !== undefined;
  if (segments.length === 0) return req.method === 'GET' ? 'ListBuckets' : `${req.method} /`;
  if (segments.length === 1) {
    switch (req.method) {
      case 'GET':
        if (has('list-type')) return 'ListObjectsV2';
        if (has('uploads')) return 'ListMultipartUploads';
        if (has('location')) return 'GetBucketLocation';
        return 'ListObjects';
      case 'HEAD': return 'HeadBucket';
      case 'PUT': return rawQuery === '' ? 'CreateBucket' : 'PUT bucket';
      case 'DELETE': return rawQuery === '' ? 'DeleteBucket' : 'DELETE bucket';
      case 'POST': return has('delete') ? 'DeleteObjects' : 'POST bucket';
      default: return `${req.method} bucket`;
    }
  }
  switch (req.method) {
    case 'PUT':
      if (has('uploadId') && has('partNumber')) return copy ? 'UploadPartCopy' : 'UploadPart';
      return copy ? 'CopyObject' : 'PutObject';
    case 'GET': return has('uploadId') ? 'ListParts' : 'GetObject';
    case 'HEAD': return 'HeadObject';
    case 'DELETE': return has('uploadId') ? 'AbortMultipartUpload' : 'DeleteObject';
    case 'POST':
      if (has('uploads')) return 'CreateMultipartUpload';
      if (has('uploadId')) return 'CompleteMultipartUpload';
      return 'POST object';
    default: return `${req.method} object`;
  }
}

// X-Amz-Target "DynamoDB_20120810.PutItem" -> "PutItem".
function jsonOperation(req) {
  const target = headerValue(req, 'x-amz-target') ?? '';
  return target.slice(target.lastIndexOf('.') + 1);
}

const JSON_FAULTS = {
  dynamodb: {
    contentType: 'application/x-amz-json-1.0',
    throttle: [400, 'com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException',
      'The level of configured provisioned throughput for the table was exceeded. ' +
        'Consider increasing your provisioning level with the UpdateTable API.'],
    error500: [500, 'com.amazonaws.dynamodb.v20120810#InternalServerError', 'Internal server error'],
  },
  secretsmanager: {
    contentType: 'application/x-amz-json-1.1',
    throttle: [400, 'ThrottlingException', 'Rate exceeded'],
    error500: [500, 'InternalServiceError', 'An error occurred on the server side.'],
  },
};

// Answers with an injected fault. A body still coming is read first, as
// AWS's own answers normally wait for it, so the client sees the answer
// rather than a reset while it is still sending.
function answerFault(service, kind, req, res) {
  if (kind === 'close') {
    req.socket.destroy();
    return;
  }
  const answer = () => {
    if (service === 's3') {
      sendS3Error(res, kind, kind === 'throttle' ? 'Please reduce your request rate.'
        : 'We encountered an internal error. Please try again.');
      return;
    }
    const faults = JSON_FAULTS[service];
    const [status, type, message] = faults[kind];
    sendJson(res, status, faults.contentType, { __type: type, message });
  };
  if (req.readableEnded) {
    answer();
  } else {
    req.on('end', answer);
    req.resume();
  }
}

// The request reaches the emulator and takes effect, but its answer is lost
// on the way back: the client's connection drops once the emulator answered.
function loseAnswer(req, upstreamPort, body) {
  const upstream = http.request({
    host: '127.0.0.1',
    port: upstreamPort,
    method: req.method,
    path: req.url,
    headers: req.rawHeaders,
    agent: false,
  });
  upstream.on('response', (upstreamResponse) => {
    upstreamResponse.resume();
    upstreamResponse.on('end', () => req.socket.destroy());
  });
  upstream.on('error', () => req.socket.destroy());
  upstream.end(body);
}

// Passing through -------------------------------------------------------------

const upstreamAgent = new http.Agent({ keepAlive: true });
// The front's own keep-alive policy is what its clients see.
const HOP_BY_HOP = new Set(['connection', 'keep-alive']);

function relayResponse(upstreamResponse, res) {
  const headers = [];
  const raw = upstreamResponse.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    if (!HOP_BY_HOP.has(raw[i].toLowerCase())) headers.push(raw[i], raw[i + 1]);
  }
  res.writeHead(upstreamResponse.statusCode, upstreamResponse.statusMessage, headers);
  upstreamResponse.pipe(res);
}

// The same request to the emulator: method, target and every header as
// received (Host included); the body is written by the caller.
function openUpstream(req, res, port) {
  const upstream = http.request({
    host: '127.0.0.1',
    port,
    method: req.method,
    path: req.url,
    headers: req.rawHeaders,
    agent: upstreamAgent,
  });
  upstream.on('response', (upstreamResponse) => relayResponse(upstreamResponse, res));
  upstream.on('error', (error) => {
    if (!res.headersSent) {
      res.writeHead(502, { 'Content-Type': 'text/plain' });
      res.end(`local_aws: upstream failed: ${error.message}`);
    } else {
      res.destroy();
    }
  });
  return upstream;
}

// Streams an S3 body through while hashing it. The last chunk is held back
// until the hash matches x-amz-content-sha256, so a body that does not match
// never completes at the emulator (AWS refuses it with 400).
function streamCheckedBody(req, res, upstream, expectedSha256) {
  if (expectedSha256 === UNSIGNED_PAYLOAD) {
    req.pipe(upstream);
    return;
  }
  const hash = crypto.createHash('sha256');
  let held = null;
  req.on('data', (chunk) => {
    hash.update(chunk);
    if (held !== null && !upstream.write(held)) {
      req.pause();
      upstream.once('drain', () => req.resume());
    }
    held = chunk;
  });
  req.on('end', () => {
    const actual = hash.digest('hex');
    if (actual !== expectedSha256.toLowerCase()) {
      upstream.destroy();
      sendS3Error(res, 'payload-mismatch',
        `The provided 'x-amz-content-sha256' header does not match what was computed: ${actual}`);
      return;
    }
    if (held !== null) upstream.write(held);
    upstream.end();
  });
}

function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        reject(new Error('request body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function listen(server, port = 0) {
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve(server.address().port);
    });
  });
}

function failInternally(res, error) {
  process.stderr.write(`local_aws: ${error.stack ?? error}\n`);
  if (!res.headersSent) {
    res.writeHead(500, { 'Content-Type': 'text/plain' });
    res.end(String(error));
  } else {
    res.destroy();
  }
}

function s3Front(upstreamPort) {
  return http.createServer((req, res) => {
    const operation = s3Operation(req);
    countRequest('s3', operation);
    verify(req, 's3', undefined).then((failure) => {
      if (failure) {
        sendS3Error(res, failure.kind, failure.message, failure.details);
        return;
      }
      const fault = takeFault('s3', operation);
      if (fault !== null) {
        answerFault('s3', fault, req, res);
        return;
      }
      const upstream = openUpstream(req, res, upstreamPort);
      const declared = isPresigned(req) ? UNSIGNED_PAYLOAD : headerValue(req, 'x-amz-content-sha256');
      streamCheckedBody(req, res, upstream, declared);
    }).catch((error) => failInternally(res, error));
  });
}

function dynamoDbFront(upstreamPort) {
  return http.createServer((req, res) => {
    const operation = jsonOperation(req);
    countRequest('dynamodb', operation);
    readBody(req, MAX_JSON_BODY).then(async (body) => {
      const failure = await verify(req, 'dynamodb', body);
      if (failure) {
        sendJsonAuthFailure(res, 'application/x-amz-json-1.0', failure);
        return;
      }
      const fault = takeFault('dynamodb', operation);
      if (fault === 'lose_answer') {
        loseAnswer(req, upstreamPort, body);
        return;
      }
      if (fault === 'hold') {
        heldRequests.push({ res, sendOn: () => openUpstream(req, res, upstreamPort).end(body) });
        return;
      }
      if (fault !== null) {
        answerFault('dynamodb', fault, req, res);
        return;
      }
      openUpstream(req, res, upstreamPort).end(body);
    }).catch((error) => failInternally(res, error));
  });
}

// Secrets Manager stand-in ------------------------------------------------------

const SECRETS_JSON = 'application/x-amz-json-1.1';

class SecretsError extends Error {
  constructor(type, message) {
    super(message);
    this.type = type;
  }
}

function epochSeconds(ms) {
  return ms / 1000;
}

// name -> { arn, name, createdMs, changedMs, versions: Map(id -> { value, createdMs, stages: Set }) }
const secrets = new Map();

function findSecret(secretId) {
  if (typeof secretId !== 'string' || secretId === '') {
    throw new SecretsError('InvalidParameterException', 'SecretId must be a non-empty string.');
  }
  for (const secret of secrets.values()) {
    if (secret.name === secretId || secret.arn === secretId) return secret;
  }
  throw new SecretsError('ResourceNotFoundException', "Secrets Manager can't find the specified secret.");
}

function versionWithStage(secret, stage) {
  for (const [id, version] of secret.versions) {
    if (version.stages.has(stage)) return [id, version];
  }
  return null;
}

// Adds a version; AWSCURRENT moves to it and the one it leaves becomes AWSPREVIOUS.
function addVersion(secret, versionId, value, stages) {
  const existing = secret.versions.get(versionId);
  if (existing) {
    if (existing.value !== value) {
      throw new SecretsError('ResourceExistsException',
        `A version with ClientRequestToken ${versionId} already exists with a different value.`);
    }
    return existing;
  }
  const now = Date.now();
  if (stages.includes('AWSCURRENT')) {
    const current = versionWithStage(secret, 'AWSCURRENT');
    if (current) {
      const previous = versionWithStage(secret, 'AWSPREVIOUS');
      if (previous) previous[1].stages.delete('AWSPREVIOUS');
      current[1].stages.delete('AWSCURRENT');
      current[1].stages.add('AWSPREVIOUS');
    }
  }
  for (const version of secret.versions.values()) {
    for (const stage of stages) if (stage !== 'AWSCURRENT') version.stages.delete(stage);
  }
  const version = { value, createdMs: now, stages: new Set(stages) };
  secret.versions.set(versionId, version);
  secret.changedMs = now;
  return version;
}

function requireSecretString(input) {
  if (typeof input.SecretString !== 'string' || input.SecretString === '') {
    throw new SecretsError('InvalidParameterException', 'SecretString must be a non-empty string.');
  }
  return input.SecretString;
}

function arnSuffix() {
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  return Array.from(crypto.randomBytes(6), (b) => alphabet[b % alphabet.length]).join('');
}

const SECRETS_OPERATIONS = {
  CreateSecret(input) {
    if (typeof input.Name !== 'string' || !/^[A-Za-z0-9/_+=.@-]{1,512}$/.test(input.Name)) {
      throw new SecretsError('InvalidParameterException', 'Name must be 1 to 512 of A-Z a-z 0-9 /_+=.@-');
    }
    if (secrets.has(input.Name)) {
      throw new SecretsError('ResourceExistsException', `The operation failed because the secret ${input.Name} already exists.`);
    }
    const now = Date.now();
    const secret = {
      arn: `arn:aws:secretsmanager:${REGION}:${ACCOUNT_ID}:secret:${input.Name}-${arnSuffix()}`,
      name: input.Name,
      createdMs: now,
      changedMs: now,
      versions: new Map(),
    };
    const out = { ARN: secret.arn, Name: secret.name };
    if (input.SecretString !== undefined) {
      const versionId = input.ClientRequestToken ?? crypto.randomUUID();
      addVersion(secret, versionId, requireSecretString(input), ['AWSCURRENT']);
      out.VersionId = versionId;
    }
    secrets.set(secret.name, secret);
    return out;
  },

  DescribeSecret(input) {
    const secret = findSecret(input.SecretId);
    const stages = {};
    for (const [id, version] of secret.versions) {
      if (version.stages.size > 0) stages[id] = [...version.stages];
    }
    return {
      ARN: secret.arn,
      Name: secret.name,
      CreatedDate: epochSeconds(secret.createdMs),
      LastChangedDate: epochSeconds(secret.changedMs),
      VersionIdsToStages: stages,
    };
  },

  GetSecretValue(input) {
    const secret = findSecret(input.SecretId);
    let found;
    if (input.VersionId !== undefined) {
      const version = secret.versions.get(input.VersionId);
      found = version && (input.VersionStage === undefined || version.stages.has(input.VersionStage))
        ? [input.VersionId, version] : null;
    } else {
      found = versionWithStage(secret, input.VersionStage ?? 'AWSCURRENT');
    }
    if (!found) {
      throw new SecretsError('ResourceNotFoundException',
        `Secrets Manager can't find the specified secret value for ${input.VersionId !== undefined
          ? `VersionId: ${input.VersionId}` : `staging label: ${input.VersionStage ?? 'AWSCURRENT'}`}`);
    }
    const [versionId, version] = found;
    return {
      ARN: secret.arn,
      Name: secret.name,
      VersionId: versionId,
      SecretString: version.value,
      VersionStages: [...version.stages],
      CreatedDate: epochSeconds(version.createdMs),
    };
  },

  PutSecretValue(input) {
    const secret = findSecret(input.SecretId);
    const stages = input.VersionStages ?? ['AWSCURRENT'];
    if (!Array.isArray(stages) || stages.length === 0 || !stages.every((s) => typeof s === 'string' && s !== '')) {
      throw new SecretsError('InvalidParameterException', 'VersionStages must be a non-empty list of labels.');
    }
    const versionId = input.ClientRequestToken ?? crypto.randomUUID();
    const version = addVersion(secret, versionId, requireSecretString(input), stages);
    return { ARN: secret.arn, Name: secret.name, VersionId: versionId, VersionStages: [...version.stages] };
  },
};

async function handleSecretsRequest(req, res, checkSignatures) {
  countRequest('secretsmanager', jsonOperation(req));
  const body = await readBody(req, MAX_JSON_BODY);
  const failure = checkSignatures ? await verify(req, 'secretsmanager', body) : null;
  if (failure) {
    sendJsonAuthFailure(res, SECRETS_JSON, failure);
    return;
  }
  const fault = takeFault('secretsmanager', jsonOperation(req));
  if (fault !== null) {
    answerFault('secretsmanager', fault, req, res);
    return;
  }
  const target = headerValue(req, 'x-amz-target') ?? '';
  const operation = target.startsWith('secretsmanager.') ? target.slice('secretsmanager.'.length) : '';
  const fail = (type, message) => sendJson(res, 400, SECRETS_JSON, { __type: type, Message: message });
  if (req.method !== 'POST' || splitTarget(req.url).rawPath !== '/' ||
      !Object.hasOwn(SECRETS_OPERATIONS, operation)) {
    fail('UnknownOperationException', `Unknown operation ${req.method} ${req.url} ${target}`);
    return;
  }
  if (!(headerValue(req, 'content-type') ?? '').startsWith(SECRETS_JSON)) {
    fail('SerializationException', `Content-Type must be ${SECRETS_JSON}`);
    return;
  }
  let input;
  try {
    input = JSON.parse(body.toString('utf8') || '{}');
  } catch {
    fail('SerializationException', 'The request body is not valid JSON.');
    return;
  }
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    fail('SerializationException', 'The request body must be a JSON object.');
    return;
  }
  try {
    sendJson(res, 200, SECRETS_JSON, SECRETS_OPERATIONS[operation](input));
  } catch (error) {
    if (!(error instanceof SecretsError)) throw error;
    fail(error.type, error.message);
  }
}

// The stand-in checks signatures as AWS does. Benchmarks reach it, like the
// emulators, on a second port that skips the check: verifying in JavaScript
// costs about a millisecond per call, which would dominate what they measure.
function secretsManager({ checkSignatures }) {
  return http.createServer((req, res) => {
    handleSecretsRequest(req, res, checkSignatures).catch((error) => failInternally(res, error));
  });
}

// Control -------------------------------------------------------------------------
// JSON over HTTP on its own port:
//   POST /fault {"service", "kind", "count", "operation"?, "after"?}  after
//        letting `after` through (default 0), the next `count` requests of
//        `service` (of `operation` only, when given: an X-Amz-Target suffix
//        like "PutItem", or an S3 name like "PutObject") that pass the
//        signature check are answered with `kind` instead: throttle,
//        error500, close (the connection, without an answer), lose_answer
//        (DynamoDB: the emulator gets the request, the client not its answer),
//        or hold (DynamoDB: the request waits, unanswered, for POST /release);
//   POST /release   the DynamoDB requests held go on to the emulator;
//   POST /stop {"service"}   its front stops listening and drops every open
//        connection, so connects are refused;
//   POST /start {"service"}  it listens again on the same port;
//   POST /reset   no pending fault, held requests released, counts back to
//        zero, everything listening;
//   GET  /count?service=s3&operation=PutObject  {"count": requests seen by
//        the front since the last reset; every operation when none is named}.

// service -> { server, port, sockets }; filled at start.
const fronts = new Map();

function addFront(service, server, port) {
  const sockets = new Set();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  fronts.set(service, { server, port, sockets });
}

function stopFront(front) {
  if (!front.server.listening) return Promise.resolve();
  return new Promise((resolve) => {
    front.server.close(() => resolve());
    for (const socket of front.sockets) socket.destroy();
  });
}

async function startFront(front) {
  if (!front.server.listening) await listen(front.server, front.port);
}

class ControlError extends Error {}

function serviceFrom(input) {
  if (!SERVICES.includes(input.service)) {
    throw new ControlError(`service must be one of ${SERVICES.join(', ')}, not ${JSON.stringify(input.service)}`);
  }
  return input.service;
}

const CONTROL_OPERATIONS = {
  'POST /fault'(input) {
    const service = serviceFrom(input);
    if (!FAULT_KINDS.includes(input.kind)) {
      throw new ControlError(`kind must be one of ${FAULT_KINDS.join(', ')}, not ${JSON.stringify(input.kind)}`);
    }
    if (DYNAMODB_ONLY_FAULTS.includes(input.kind) && service !== 'dynamodb') {
      throw new ControlError(`only the dynamodb front takes ${input.kind}`);
    }
    if (!Number.isInteger(input.count) || input.count < 1) throw new ControlError('count must be a positive integer');
    const after = input.after ?? 0;
    if (!Number.isInteger(after) || after < 0) throw new ControlError('after must be a non-negative integer');
    const operation = input.operation ?? '';
    if (typeof operation !== 'string') throw new ControlError('operation must be a string');
    const queues = pendingFaults.get(service);
    if (!queues.has(operation)) queues.set(operation, []);
    const queue = queues.get(operation);
    for (let i = 0; i < after; ++i) queue.push(PASS);
    for (let i = 0; i < input.count; ++i) queue.push(input.kind);
    return {};
  },
  async 'POST /stop'(input) {
    await stopFront(fronts.get(serviceFrom(input)));
    return {};
  },
  async 'POST /start'(input) {
    await startFront(fronts.get(serviceFrom(input)));
    return {};
  },
  'POST /release'() {
    releaseHeldRequests();
    return {};
  },
  async 'POST /reset'() {
    for (const queues of pendingFaults.values()) queues.clear();
    releaseHeldRequests();
    for (const counts of requestCounts.values()) counts.clear();
    for (const front of fronts.values()) await startFront(front);
    return {};
  },
  'GET /count'(input) {
    const counts = requestCounts.get(serviceFrom(input));
    if (input.operation) return { count: counts.get(input.operation) ?? 0 };
    let count = 0;
    for (const seen of counts.values()) count += seen;
    return { count };
  },
};

async function handleControlRequest(req, res) {
  const { rawPath, rawQuery } = splitTarget(req.url);
  const body = await readBody(req, MAX_JSON_BODY);
  const operation = CONTROL_OPERATIONS[`${req.method} ${rawPath}`];
  try {
    if (operation === undefined) throw new ControlError(`no control operation ${req.method} ${rawPath}`);
    const input = req.method === 'GET' ? parseQuery(rawQuery) : JSON.parse(body.toString('utf8') || '{}');
    if (input === null || typeof input !== 'object' || Array.isArray(input)) {
      throw new ControlError('the body must be a JSON object');
    }
    sendJson(res, 200, 'application/json', await operation(input));
  } catch (error) {
    if (!(error instanceof ControlError || error instanceof SyntaxError || error instanceof URIError)) throw error;
    sendJson(res, 400, 'application/json', { error: error.message });
  }
}

function controlServer() {
  return http.createServer((req, res) => {
    handleControlRequest(req, res).catch((error) => failInternally(res, error));
  });
}

// Start and stop ----------------------------------------------------------------

const s3Directory = fs.mkdtempSync(path.join(os.tmpdir(), 'imgsvc-s3rver-'));
process.on('exit', () => fs.rmSync(s3Directory, { recursive: true, force: true }));
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(signal, () => process.exit(0));

// Tests' peers die with the test process; scripts/local-aws detaches them
// (IMGSVC_LOCAL_AWS_DETACHED=1) and stops them by PID.
if (process.env.IMGSVC_LOCAL_AWS_DETACHED !== '1') {
  const parentPid = process.ppid;
  setInterval(() => {
    if (process.ppid !== parentPid) process.exit(0);
  }, 500);
}

// s3rver only knows its own key pair; the fronts have checked ours already.
s3rverAccounts.DUMMY_ACCOUNT.createKeyPair(CREDENTIALS.accessKeyId, CREDENTIALS.secretAccessKey);
const s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: s3Directory });
const s3Port = (await s3.run()).port;
s3.httpServer.keepAliveTimeout = KEEP_ALIVE_MS;

// Tables take a moment to become ACTIVE, as in AWS, so waiting for it is exercised.
const dynamo = dynalite({ createTableMs: 50, deleteTableMs: 50, updateTableMs: 50 });
const dynamoPort = await listen(dynamo);

for (const [service, server] of [['s3', s3Front(s3Port)], ['dynamodb', dynamoDbFront(dynamoPort)],
  ['secretsmanager', secretsManager({ checkSignatures: true })]]) {
  addFront(service, server, await listen(server));
}
const secretsManagerDirect = secretsManager({ checkSignatures: false });
const secretsManagerDirectPort = await listen(secretsManagerDirect);
const controlPort = await listen(controlServer());

const url = (port) => `http://127.0.0.1:${port}`;
process.stdout.write(`${JSON.stringify({
  s3: url(fronts.get('s3').port),
  dynamodb: url(fronts.get('dynamodb').port),
  secretsmanager: url(fronts.get('secretsmanager').port),
  s3_direct: url(s3Port),
  dynamodb_direct: url(dynamoPort),
  secretsmanager_direct: url(secretsManagerDirectPort),
  control: url(controlPort),
})}\n`);
