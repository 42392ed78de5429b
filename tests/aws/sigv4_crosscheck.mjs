// Signs a table of requests with the AWS SDK for JavaScript v3's SigV4 signer
// (@smithy/signature-v4, pinned in package.json) for sigv4_crosscheck_test.cc,
// which compares the answers with our signer's byte for byte.
//
// Usage: node sigv4_crosscheck.mjs TABLE.json  (the answer goes to stdout)
//
// Each case is signed with the service rules our signer follows:
//  - "headers": signer.sign() on the request; S3 with uriEscapePath false (the
//    wire path is already encoded once) and applyChecksum (x-amz-content-sha256
//    on every request), other services with the path normalised and encoded
//    again and no x-amz-content-sha256 (only S3 requires it);
//  - "presign": signer.presign() of an S3 GET whose payload is UNSIGNED-PAYLOAD
//    (S3's query authentication). The SDK's S3RequestPresigner, not pinned
//    here, would also put X-Amz-Content-Sha256=UNSIGNED-PAYLOAD in the query;
//    S3 does not require that parameter and our URLs leave it out.
// The canonical request and string to sign are rebuilt with the SDK's own
// functions, then signed again with its signString(): the result must be the
// signature sign()/presign() produced, which proves they are the ones it
// signed. The signature itself is always taken from sign()/presign()'s output.

import fs from 'node:fs';

import { Sha256 } from '@aws-crypto/sha256-js';
import { escapeUri } from '@smithy/core/protocols';
import {
  ALGORITHM_IDENTIFIER,
  createScope,
  getCanonicalHeaders,
  getPayloadHash,
  SignatureV4,
  SIGNATURE_QUERY_PARAM,
  SHA256_HEADER,
  UNSIGNED_PAYLOAD,
} from '@smithy/signature-v4';

// Lower-case names of the headers a case carries; a JS object cannot hold
// one name twice, so the table must not either.
function headerObject(pairs) {
  const headers = {};
  const seen = new Set();
  for (const [name, value] of pairs) {
    if (seen.has(name.toLowerCase())) throw new Error(`header ${name} given twice`);
    seen.add(name.toLowerCase());
    headers[name] = value;
  }
  return headers;
}

// A repeated query name becomes an array, as the SDK's HttpRequest holds it.
function queryObject(pairs) {
  const query = {};
  for (const [name, value] of pairs) {
    if (!(name in query)) query[name] = value;
    else if (Array.isArray(query[name])) query[name].push(value);
    else query[name] = [query[name], value];
  }
  return query;
}

function sortedHeaderPairs(headers) {
  return Object.entries(headers)
    .map(([name, value]) => [name.toLowerCase(), value])
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

function makeSigner(testCase) {
  const isS3 = testCase.service === 's3';
  const credentials = {
    accessKeyId: testCase.credentials.access_key_id,
    secretAccessKey: testCase.credentials.secret_access_key,
  };
  if (testCase.credentials.session_token) credentials.sessionToken = testCase.credentials.session_token;
  return new SignatureV4({
    service: testCase.service,
    region: testCase.region,
    credentials,
    sha256: Sha256,
    uriEscapePath: !isS3,
    applyChecksum: isS3,
  });
}

function makeRequest(testCase, headers) {
  const request = {
    method: testCase.method,
    protocol: 'https:',
    hostname: headers.host,
    path: testCase.path,
    query: queryObject(testCase.query),
    headers,
  };
  if (testCase.body_base64 !== undefined) request.body = Buffer.from(testCase.body_base64, 'base64');
  return request;
}

// Rebuilds the canonical request and string to sign of a signed request with
// the SDK's functions, and checks that they give `signature` (the SDK's own).
async function explain(signer, signedRequest, canonicalHeaders, signingDate, signature) {
  const { longDate, shortDate } = signer.formatDate(signingDate);
  const payloadHash = await getPayloadHash(signedRequest, Sha256);
  const canonicalRequest = signer.createCanonicalRequest(signedRequest, canonicalHeaders, payloadHash);
  const credentialScope = createScope(shortDate, await signer.regionProvider(), signer.service);
  const stringToSign = await signer.createStringToSign(longDate, credentialScope, canonicalRequest,
                                                       ALGORITHM_IDENTIFIER);
  if ((await signer.signString(stringToSign, { signingDate })) !== signature) {
    throw new Error(`${signedRequest.method} ${signedRequest.path}: the rebuilt canonical request is not the one signed`);
  }
  return { canonical_request: canonicalRequest, string_to_sign: stringToSign };
}

async function signHeaders(testCase, signingDate) {
  const signer = makeSigner(testCase);
  const request = makeRequest(testCase, headerObject(testCase.headers));
  const signed = await signer.sign(request, { signingDate });
  const authorization = signed.headers.authorization;
  const signature = /Signature=([0-9a-f]{64})$/.exec(authorization)[1];
  const explained = await explain(signer, signed, getCanonicalHeaders(signed), signingDate, signature);
  return { ...explained, signature, authorization, headers: sortedHeaderPairs(signed.headers) };
}

async function presign(testCase, signingDate) {
  if (testCase.service !== 's3') throw new Error('only S3 URLs are presigned');
  const signer = makeSigner(testCase);
  // S3 query authentication signs UNSIGNED-PAYLOAD; presign() takes the
  // payload hash from x-amz-content-sha256, which must then stay a header
  // (not hoisted into the query) that is not signed.
  const headers = { ...headerObject(testCase.headers), [SHA256_HEADER]: UNSIGNED_PAYLOAD };
  const keepOut = new Set([SHA256_HEADER]);
  const options = { signingDate, expiresIn: testCase.expires, unhoistableHeaders: keepOut, unsignableHeaders: keepOut };
  const presigned = await signer.presign(makeRequest(testCase, headers), options);
  const signature = presigned.query[SIGNATURE_QUERY_PARAM];
  const explained = await explain(signer, presigned, getCanonicalHeaders(presigned, keepOut), signingDate,
                                  signature);
  // Only the parameters presign() added, encoded as the SDK puts them in a URL.
  const own = new Set(testCase.query.map(([name]) => name));
  const added = Object.entries(presigned.query)
    .filter(([name]) => !own.has(name))
    .map(([name, value]) => `${escapeUri(name)}=${escapeUri(value)}`)
    .sort();
  return { ...explained, signature, presigned_query: added };
}

const table = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const results = [];
for (const testCase of table.cases) {
  const signingDate = new Date(testCase.signing_date * 1000);
  const result = testCase.form === 'presign' ? await presign(testCase, signingDate) : await signHeaders(testCase, signingDate);
  results.push({ name: testCase.name, ...result });
}
process.stdout.write(JSON.stringify({ sdk: '@smithy/signature-v4', results }));
