// The performance suite of issue 5, run by bench/run (which installs what is
// missing and builds Release first). Every scenario runs the service and its
// reference in the same run on this machine and reports the ratio, because
// absolute numbers on a shared 2-core machine drift:
//  - HTTP scenarios (wrk, keep-alive, 16/64/256 connections): GET one image,
//    list-20, a filtered listing (tags + date range), a 64 KiB upload and
//    /health, on the embedded backend and on AWS (s3rver + dynalite, reached
//    directly). References: nginx serving a copy of the very response; for
//    embedded uploads the disk's fdatasync ceiling; for AWS the emulators
//    alone answering the very requests imgsvc sends (captured once, then
//    replayed by wrk).
//  - Large upload: one 200 MiB image streamed, against nginx's PUT-to-disk
//    ceiling (embedded) and s3rver alone storing the same bytes (AWS); the
//    service's peak RSS.
//  - 2,000 idle keep-alive connections: RSS growth, an active client's p99
//    meanwhile, and whether all are still open at the end.
//  - Cold start of the server (bench/server_cold.cc) and of the Lambda
//    bootstrap (bench/lambda_cold.sh), each beside a static hello world.
//  - Instructions per request (callgrind) for GET, list-20 and a 64 KiB
//    upload, beside the CPU time per request measured under wrk.
//  - The Google Benchmark micro-benchmarks.
// The service runs as deployed: log level info to a file, SQLite with the
// durability it always has (recorded from its log), on this filesystem.
// Each stage, each embedded upload round and each large upload (imgsvc's and
// its reference's) starts once the machine is idle (settle(), at most 30 s;
// the waits are reported).
// Output: JSON lines on stdout (and --out FILE), then a summary table.
//
// Usage: node bench/suite.mjs --build-dir=DIR [--seconds=5] [--connections=16,64,256]
//                             [--only=embedded,aws,large,idle,cold,callgrind,micro] [--out=FILE]
//                             [--perf=DIR]  (perf profiles of imgsvc under each wrk run)
//                             [--perf-call-graph=fp|dwarf]  (dwarf: whole stacks of the
//                                                            frame-pointer-less Release build)
//
// A/B mode, for one change: node bench/suite.mjs --build-dir=DIR --ab=OTHER_IMGSVC
//     [--only=embedded,aws] [--scenarios=get_one,list_20,upload_64k] [--rounds=3] [--connections=64]
// runs another build of imgsvc (OTHER_IMGSVC, e.g. the commit before, built in a
// git worktree) and this build's alternately on one data directory or one set
// of emulators, round after round, so that the machine's drift hits both alike;
// it reports each one's median CPU, minor faults and context switches per
// request and its req/s. Nothing is compared with a reference here. Embedded
// uploads are kept until the end, so that no run pays for the deletions of
// another (about 1.7 GB per 5 s run, in the temp directory).
import { spawn, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const options = Object.fromEntries(
  process.argv.slice(2).map((arg) => {
    const m = /^--([a-z-]+)=(.*)$/.exec(arg);
    if (!m) throw new Error(`unknown argument ${arg}`);
    return [m[1], m[2]];
  }),
);
const BUILD = path.resolve(ROOT, options['build-dir'] ?? 'build-release');
const SECONDS = Number(options.seconds ?? 5);
const CONNECTIONS = (options.connections ?? '16,64,256').split(',').map(Number);
const AB_OTHER = options.ab ? path.resolve(options.ab) : null;
const ONLY = new Set((options.only ?? (AB_OTHER ? 'embedded,aws' : 'embedded,aws,large,idle,cold,callgrind,micro')).split(','));
const IMGSVC = path.join(BUILD, 'src/app/imgsvc');
const TOKEN = 'bench-token-0123456789abcdef0123';
const KEY = `alice:${TOKEN}`;
const SEED_IMAGES = 220;
const LARGE_MIB = 200;
const IDLE_CONNECTIONS = 2000;
const WORK = fs.mkdtempSync(path.join(os.tmpdir(), 'imgsvc-bench-'));
const results = [];

// Upload runs write into directories whose files land in block groups of
// their own. Subdirectories of WORK would all sit in one group, beside the
// inodes that the previous run's cleanup freed, and ext4 without a journal
// skips inodes freed in the last 60 to 360 s, reading each one's inode-table
// block (`recently_deleted` in fs/ext4/ialloc.c): the next run's creations
// paid for the cleanup before them (41 % of an upload's CPU in perf). ext4's
// Orlov allocator spreads the subdirectories of a directory marked +T ("top
// of a hierarchy") over the disk. A filesystem with a journal has no such
// skip; without chattr, or elsewhere, the directories are plain.
const SPREAD = path.join(WORK, 'spread');
fs.mkdirSync(SPREAD);
const SPREAD_DIRS = spawnSync('chattr', ['+T', SPREAD]).status === 0;
const children = new Set();
let nextPort = 18300;

// Plumbing -------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function emit(line) {
  results.push(line);
  const text = JSON.stringify(line);
  console.log(text);
  if (options.out) fs.appendFileSync(options.out, `${text}\n`);
}

function start(name, command, args, env = {}) {
  const log = fs.openSync(path.join(WORK, `${name}.log`), 'a');
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

async function stop(child, signal = 'SIGTERM') {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  await exited;
}

function cleanup() {
  for (const child of children) child.kill('SIGKILL');
  spawnSync('sh', ['-c', `[ -f ${WORK}/nginx.pid ] && kill $(cat ${WORK}/nginx.pid)`]);
  fs.rmSync(WORK, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(1));

const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
function request(method, url, { headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    if (body) req.end(body);
    else req.end();
  });
}

async function waitHealthy(port, what) {
  for (let i = 0; i < 300; ++i) {
    try {
      if ((await request('GET', `http://127.0.0.1:${port}/health`)).status === 200) return;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  throw new Error(`${what} did not start on port ${port}; see ${WORK}`);
}

function procStat(pid) {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return { ticks: Number(fields[11]) + Number(fields[12]), minorFaults: Number(fields[7]) };
}
const TICKS_PER_SECOND = Number(spawnSync('getconf', ['CLK_TCK']).stdout.toString().trim());
// CPU ticks spent over a run, per request served, in µs.
const cpuUsPerRequest = (ticks, requests) => (requests ? (1e6 * ticks) / TICKS_PER_SECOND / requests : null);

function memoryKib(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name) => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(status)[1]);
  return { rss: field('VmRSS'), hwm: field('VmHWM') };
}
// Resets VmHWM to the current RSS, so the next peak is this scenario's.
const resetPeak = (pid) => fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');

// Context switches of all the process's threads so far (a sleep and a wake
// each): what thread hand-offs cost shows here before it shows in CPU.
function contextSwitches(pid) {
  let total = 0;
  for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const status = fs.readFileSync(`/proc/${pid}/task/${task}/status`, 'utf8');
      for (const m of status.matchAll(/ctxt_switches:\s+(\d+)/g)) total += Number(m[1]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return total;
}

// A PNG header (width, height) and random bytes up to `size`: the service
// probes headers, it never decodes pixels.
function pngOf(size, width = 64, height = 64) {
  const signature = Buffer.from('89504e470d0a1a0a0000000d', 'hex');
  const ihdr = Buffer.alloc(17);
  ihdr.write('IHDR', 0, 'latin1');
  ihdr.writeUInt32BE(width, 4);
  ihdr.writeUInt32BE(height, 8);
  ihdr.set([8, 6, 0, 0, 0], 12);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(zlib.crc32(ihdr));
  const head = Buffer.concat([signature, ihdr, crc]);
  return Buffer.concat([head, randomFillSync(Buffer.alloc(Math.max(0, size - head.length)))]);
}

const BOUNDARY = 'imgsvcbenchboundary7MA4YWxkTrZu0gW';
function multipart(fields, files) {
  const parts = [];
  for (const [name, value] of Object.entries(fields)) {
    parts.push(Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`));
  }
  for (const [index, file] of files.entries()) {
    parts.push(Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="img${index}.png"\r\n` +
                           'Content-Type: image/png\r\n\r\n'));
    parts.push(file, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from(`--${BOUNDARY}--\r\n`));
  return Buffer.concat(parts);
}
const MULTIPART_TYPE = `multipart/form-data; boundary=${BOUNDARY}`;

// wrk --------------------------------------------------------------------------

// One wrk run; the Lua script replays one request (method, headers, body
// from a file) and prints its own JSON line at the end.
// With `freshId` (a UUID in the request's path or body), each request sends
// a new UUID in its place: a replayed write then writes a new item or
// object, as imgsvc's own writes do, instead of hitting the one the first
// replay wrote.
async function wrk(url, connections,
                   { method = 'GET', headers = {}, bodyFile, seconds = SECONDS, allowStatusErrors = false,
                     freshId } = {}) {
  const lua = path.join(WORK, `wrk-${nextPort++}.lua`);
  const lines = [`wrk.method = ${JSON.stringify(method)}`];
  for (const [name, value] of Object.entries(headers)) lines.push(`wrk.headers[${JSON.stringify(name)}] = ${JSON.stringify(String(value))}`);
  if (bodyFile) lines.push(`local f = assert(io.open(${JSON.stringify(bodyFile)}, "rb")); wrk.body = f:read("*a"); f:close()`);
  if (freshId) {
    // The path and the body split at the UUID; each request joins them
    // with its own (wrk thread, run and counter in it: unique across the
    // threads and the rounds).
    const target = new URL(url);
    const luaParts = (text) => `{${text.split(freshId).map((part) => JSON.stringify(part)).join(', ')}}`;
    lines.push(`local path_parts = ${luaParts(target.pathname + target.search)}`);
    lines.push(`local body_parts = nil
if wrk.body then
  local b = wrk.body
  body_parts = {}
  local from = 1
  while true do
    local i, j = string.find(b, ${JSON.stringify(freshId)}, from, true)
    if not i then table.insert(body_parts, string.sub(b, from)) break end
    table.insert(body_parts, string.sub(b, from, i - 1))
    from = j + 1
  end
end
local threads = 0
setup = function(thread) threads = threads + 1; thread:set("thread_number", threads) end
local sent = 0
local run = nil
request = function()
  if not run then math.randomseed(os.time() + thread_number); run = math.random(0, 0x7fffffff) end
  sent = sent + 1
  local id = string.format("%08x-%04x-4000-8000-%012x", run, thread_number, sent)
  local body = body_parts and table.concat(body_parts, id) or nil
  return wrk.format(nil, table.concat(path_parts, id), nil, body)
end`);
  }
  lines.push(`done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end`);
  fs.writeFileSync(lua, lines.join('\n'));
  const threads = Math.min(2, connections);
  const child = spawn('wrk', [`-t${threads}`, `-c${connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', lua, url]);
  let out = '';
  child.stdout.on('data', (chunk) => (out += chunk));
  child.stderr.on('data', (chunk) => (out += chunk));
  await new Promise((resolve) => child.on('exit', resolve));
  const m = /WRKJSON (\{.*\})/.exec(out);
  if (!m) throw new Error(`wrk printed no result:\n${out}`);
  const r = JSON.parse(m[1]);
  if (!allowStatusErrors && r.status_errors > r.requests / 100) throw new Error(`${url}: ${r.status_errors} of ${r.requests} answers not 2xx/3xx`);
  const errors = r.connect_errors + r.read_errors + r.write_errors + r.status_errors + r.timeouts;
  return { requests: r.requests, rps: r.requests / (r.duration_us / 1e6), p50_ms: r.p50_us / 1000,
           p99_ms: r.p99_us / 1000, errors, status_errors: r.status_errors, seconds };
}

// wrk against a process, with that process's CPU per request and peak RSS.
// With --perf=DIR, `perf record -g` samples the process meanwhile, into
// DIR/<label>.perf (`perf report -i` it).
async function measured(pid, url, connections, spec, label) {
  resetPeak(pid);
  let perf = null;
  if (options.perf && label) {
    fs.mkdirSync(options.perf, { recursive: true });
    perf = spawn('perf', ['record', '-q', '-F', '4000', `--call-graph=${options['perf-call-graph'] ?? 'fp'}`, '-p', String(pid), '-o',
                          path.join(options.perf, `${label}-${connections}.perf`)], { stdio: 'ignore' });
    await sleep(200);
  }
  const before = procStat(pid);
  const switchesBefore = contextSwitches(pid);
  const run = await wrk(url, connections, spec);
  const after = procStat(pid);
  const ticks = after.ticks - before.ticks;
  const switches = contextSwitches(pid) - switchesBefore;
  if (perf) {
    const done = new Promise((resolve) => perf.once('exit', resolve));
    perf.kill('SIGINT');
    await done;
  }
  run.cpu_us_per_request = cpuUsPerRequest(ticks, run.requests);
  run.context_switches_per_request = run.requests ? switches / run.requests : null;
  run.minor_faults_per_request = run.requests ? (after.minorFaults - before.minorFaults) / run.requests : null;
  run.cpu_percent = (100 * ticks) / TICKS_PER_SECOND / run.seconds;
  run.peak_rss_kib = memoryKib(pid).hwm;
  return run;
}

const round3 = (x) => (x === null || x === undefined ? x : Math.round(x * 1000) / 1000);
function line(fields) {
  const out = {};
  for (const [k, v] of Object.entries(fields)) out[k] = typeof v === 'number' ? round3(v) : v;
  return out;
}

// nginx -----------------------------------------------------------------------

async function startNginx() {
  const port = nextPort++;
  const www = path.join(WORK, 'www');
  fs.mkdirSync(path.join(www, 'put'), { recursive: true });
  // nginx's workers run unprivileged: they read the copies and write PUTs.
  fs.chmodSync(WORK, 0o755);
  fs.chmodSync(www, 0o755);
  fs.chmodSync(path.join(www, 'put'), 0o777);
  const config = fs.readFileSync(path.join(ROOT, 'bench/nginx.conf.in'), 'utf8')
    .replaceAll('@DIR@', WORK).replaceAll('@PORT@', String(port));
  fs.writeFileSync(path.join(WORK, 'nginx.conf'), config);
  const result = spawnSync('nginx', ['-c', path.join(WORK, 'nginx.conf'), '-p', WORK]);
  if (result.status !== 0) throw new Error(`nginx did not start: ${result.stderr}`);
  for (let i = 0; i < 100 && !fs.existsSync(path.join(WORK, 'nginx.pid')); ++i) await sleep(20);
  return { port, www, pid: Number(fs.readFileSync(path.join(WORK, 'nginx.pid'), 'utf8')) };
}

// nginx's CPU per request is its workers' (the master only forks them): the
// machine's price of answering the same response, beside imgsvc's.
async function nginxReference(nginx, name, body, connections) {
  fs.writeFileSync(path.join(nginx.www, `${name}.json`), body, { mode: 0o644 });
  const workers = fs.readFileSync(`/proc/${nginx.pid}/task/${nginx.pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
  const ticks = () => workers.reduce((sum, pid) => sum + procStat(pid).ticks, 0);
  const before = ticks();
  const run = await wrk(`http://127.0.0.1:${nginx.port}/${name}.json`, connections);
  run.cpu_us_per_request = cpuUsPerRequest(ticks() - before, run.requests);
  return run;
}

// The disk's durable small-write ceiling: 4 KiB appends, each followed by
// fdatasync, for a few seconds, in this process (as a database would). With
// the CPU each took: the machine's price of the least durable write, which
// an upload (a file and a database record made durable) pays more than once.
function fdatasyncCeiling(dir, seconds = 3) {
  const file = path.join(dir, 'fdatasync.probe');
  const fd = fs.openSync(file, 'w');
  const block = Buffer.alloc(4096, 7);
  const until = Date.now() + seconds * 1000;
  const cpuBefore = process.cpuUsage();
  let writes = 0;
  while (Date.now() < until) {
    fs.writeSync(fd, block);
    fs.fdatasyncSync(fd);
    ++writes;
  }
  const cpu = process.cpuUsage(cpuBefore);
  fs.closeSync(fd);
  fs.rmSync(file);
  return { rate: writes / seconds, cpu_us_per_write: (cpu.user + cpu.system) / writes };
}

// The service --------------------------------------------------------------------

async function startImgsvc(name, args, env = {}, binary = IMGSVC) {
  const port = nextPort++;
  const child = start(name, binary, ['serve', '--port', String(port), '--log-level', 'info', ...args],
                      { IMGSVC_API_TOKEN: TOKEN, ...env });
  await waitHealthy(port, name);
  return { name, port, pid: child.pid, child, url: `http://127.0.0.1:${port}`, log: path.join(WORK, `${name}.log`) };
}

function storeSettings(service) {
  const text = fs.readFileSync(service.log, 'utf8');
  const open = text.split('\n').find((l) => l.includes('"embedded store open"'));
  return open ? JSON.parse(open) : {};
}

// 220 images for alice in requests of 10: all tagged cat, every other one
// also dog, so the filtered listing keeps about half of what it reads.
async function seed(service) {
  const image = pngOf(4096);
  let first;
  for (let done = 0; done < SEED_IMAGES; done += 10) {
    const body = multipart({ user_id: 'alice', visibility: 'public', category: 'animals',
                             tags: (done / 10) % 2 ? 'cat,dog' : 'cat' }, Array(10).fill(image));
    const answer = await request('POST', `${service.url}/api/v1/images`,
                                 { headers: { 'x-api-key': KEY, 'content-type': MULTIPART_TYPE }, body });
    if (answer.status !== 201) throw new Error(`seeding ${service.name}: ${answer.status} ${answer.body}`);
    first ??= JSON.parse(answer.body).images[0].image_id;
  }
  return first;
}

function scenarioPaths(imageId) {
  const today = new Date().toISOString().slice(0, 10);
  return {
    get_one: `/api/v1/images/${imageId}`,
    list_20: '/api/v1/images?user_id=alice&limit=20',
    list_filtered: `/api/v1/images?user_id=alice&tags=cat,dog&created_from=${today}&created_to=${today}&limit=20`,
    health: '/health',
  };
}

const uploadBodyFile = () => {
  const file = path.join(WORK, 'upload-64k.body');
  if (!fs.existsSync(file)) {
    fs.writeFileSync(file, multipart({ user_id: 'alice', visibility: 'public', tags: 'bench' }, [pngOf(64 * 1024)]));
  }
  return file;
};
const UPLOAD_SPEC = () => ({ method: 'POST', headers: { 'x-api-key': KEY, 'content-type': MULTIPART_TYPE },
                             bodyFile: uploadBodyFile() });

// Embedded backend -------------------------------------------------------------

async function embeddedScenarios(nginx) {
  const dataDir = path.join(WORK, 'embedded-data');
  const service = await startImgsvc('embedded', ['--data-dir', dataDir]);
  const settings = storeSettings(service);
  const fsType = spawnSync('stat', ['-f', '-c', '%T', WORK]).stdout.toString().trim();
  const imageId = await seed(service);
  const paths = scenarioPaths(imageId);
  for (const [scenario, target] of Object.entries(paths)) {
    const answer = await request('GET', service.url + target, { headers: { 'x-api-key': KEY } });
    if (answer.status !== 200) throw new Error(`${scenario}: ${answer.status} ${answer.body}`);
    for (const connections of CONNECTIONS) {
      await emitMedianRound(connections, async () => {
        const reference = await nginxReference(nginx, scenario, answer.body, connections);
        const run = await measured(service.pid, service.url + target, connections, { headers: { 'x-api-key': KEY } },
                                   `embedded-${scenario}`);
        const ratio = run.rps / reference.rps;
        return { ratio, line: { backend: 'embedded', scenario, connections, response_bytes: answer.body.length,
                                ...prefixed('imgsvc', run), ...prefixed('nginx', reference), ratio_to_nginx: ratio,
                                filesystem: fsType, sqlite_journal_mode: settings.sqlite_journal_mode,
                                sqlite_synchronous: settings.sqlite_synchronous, log_level: 'info' } };
      });
    }
  }
  await stop(service.child);

  // Uploads: a fresh data directory per run, so disk use starts alike.
  let uploadRun = 0;
  for (const connections of CONNECTIONS) {
    await emitMedianRound(connections, async () => {
      await settle('embedded upload round');
      const ceiling = fdatasyncCeiling(WORK);
      const dir = path.join(SPREAD, `upload-data-${++uploadRun}`);
      const uploader = await startImgsvc(`embedded-upload-${uploadRun}`, ['--data-dir', dir]);
      const run = await measured(uploader.pid, `${uploader.url}/api/v1/images`, connections, UPLOAD_SPEC(),
                                 'embedded-upload_64k');
      await stop(uploader.child);
      fs.rmSync(dir, { recursive: true, force: true });
      const ratio = run.rps / ceiling.rate;
      return { ratio, line: { backend: 'embedded', scenario: 'upload_64k', connections, ...prefixed('imgsvc', run),
                              fdatasync_per_s: ceiling.rate, fdatasync_cpu_us: ceiling.cpu_us_per_write,
                              ratio_to_fdatasync: ratio, filesystem: fsType,
                              data_dirs_spread: SPREAD_DIRS,
                              sqlite_journal_mode: settings.sqlite_journal_mode,
                              sqlite_synchronous: settings.sqlite_synchronous } };
    });
  }
}

// At 64 connections (the level of the targets) a scenario runs 3 rounds,
// each measuring its reference and imgsvc back to back, and the round with
// the median ratio is reported with every round's ratio: one 5 s run on a
// shared machine can land in a stall. Every round's CPU per request goes
// with it, for the CPU targets, which are judged on their median: the
// round of the median ratio is not the round of the median CPU. Other
// levels run once.
const ROUNDS_AT_64 = 3;
async function emitMedianRound(connections, measureRound) {
  const rounds = connections === 64 ? ROUNDS_AT_64 : 1;
  const results = [];
  for (let round = 0; round < rounds; ++round) results.push(await measureRound());
  const sorted = [...results].sort((a, b) => (a.ratio ?? 0) - (b.ratio ?? 0));
  const chosen = sorted[Math.floor((sorted.length - 1) / 2)];
  emit(line({ ...chosen.line, rounds, round_ratios: results.map((r) => round3(r.ratio)),
              round_cpu_us_per_request: results.map((r) => round3(r.line.imgsvc_cpu_us_per_request)) }));
}

function prefixed(prefix, run) {
  const out = {};
  for (const [k, v] of Object.entries(run)) if (k !== 'seconds') out[`${prefix}_${k}`] = v;
  return out;
}

// AWS backend ---------------------------------------------------------------------

async function startPeers() {
  const child = start('peers', 'node', ['--openssl-legacy-provider', path.join(ROOT, 'tests/support/local_aws.mjs')]);
  const log = path.join(WORK, 'peers.log');
  for (let i = 0; i < 200; ++i) {
    const first = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n')[0] : '';
    if (first.startsWith('{')) {
      const peers = { pid: child.pid, child, ...JSON.parse(first) };
      // Provisioned through the signature-checking fronts, as a deployment would be.
      const init = spawnSync(IMGSVC, ['init', ...AWS_FLAGS.slice(2), '--api-token', TOKEN], {
        env: { ...process.env, ...AWS_ENV, AWS_ENDPOINT_URL_S3: peers.s3, AWS_ENDPOINT_URL_DYNAMODB: peers.dynamodb,
               AWS_ENDPOINT_URL_SECRETS_MANAGER: peers.secretsmanager } });
      if (init.status !== 0) throw new Error(`imgsvc init: ${init.stdout}${init.stderr}`);
      return peers;
    }
    await sleep(50);
  }
  throw new Error('the local AWS peers did not start');
}

// A recording proxy: forwards every request to `upstream` and keeps the
// last one of each operation (method, path, headers, body) to be replayed by
// wrk against the emulator alone, and counts operations per service request.
function startRecorder(upstream) {
  const recorded = new Map();
  const counts = new Map();
  const target = new URL(upstream);
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const operation = req.headers['x-amz-target']?.split('.').pop() ?? `${req.method}`;
      recorded.set(operation, { method: req.method, path: req.url, headers: { ...req.headers }, body });
      counts.set(operation, (counts.get(operation) ?? 0) + 1);
      const forward = http.request({ host: target.hostname, port: target.port, method: req.method, path: req.url,
                                     headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      });
      forward.on('error', () => res.destroy());
      forward.end(body);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () =>
    resolve({ url: `http://127.0.0.1:${server.address().port}`, recorded, counts, server })));
}

// Replays a recorded request with wrk against the emulator alone.
async function emulatorAlone(recording, base, connections) {
  const bodyFile = path.join(WORK, `replay-${nextPort++}.body`);
  fs.writeFileSync(bodyFile, recording.body);
  const headers = { ...recording.headers };
  for (const name of ['host', 'content-length', 'connection']) delete headers[name];
  // Writes (an upload's S3 PUT and conditional PutItem) are replayed with a
  // new image id each, as imgsvc makes them: replayed as recorded, every
  // PutItem after the first failed its condition and wrote nothing, and the
  // ceiling came out too high.
  const write = recording.method === 'PUT' || recording.headers['x-amz-target']?.endsWith('.PutItem');
  const freshId = write ? UUID.exec(recording.path)?.[0] ?? UUID.exec(recording.body.toString())?.[0] : undefined;
  return wrk(base + recording.path, connections, { method: recording.method, headers,
                                                   bodyFile: recording.body.length ? bodyFile : undefined,
                                                   allowStatusErrors: true, freshId });
}
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;

const AWS_ENV = { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test-secret', AWS_REGION: 'us-east-1',
                  AWS_EC2_METADATA_DISABLED: 'true' };
const AWS_FLAGS = ['--storage', 'aws', '--bucket', 'bench-images', '--table', 'BenchImages',
                   '--token-secret', 'bench_api_token'];

// The emulators reached directly, not through the signature-checking fronts.
const directEnvOf = (peers) => ({ ...AWS_ENV, AWS_ENDPOINT_URL_S3: peers.s3_direct,
                                  AWS_ENDPOINT_URL_DYNAMODB: peers.dynamodb_direct,
                                  AWS_ENDPOINT_URL_SECRETS_MANAGER: peers.secretsmanager, IMGSVC_API_TOKEN: '' });

async function awsScenarios(nginx, peers) {
  const directEnv = directEnvOf(peers);
  const service = await startImgsvc('aws', AWS_FLAGS, directEnv);
  const imageId = await seed(service);
  const paths = scenarioPaths(imageId);

  // One request of each scenario through recording proxies: what imgsvc
  // sends for it, and how many calls.
  const dynamoRecorder = await startRecorder(peers.dynamodb_direct);
  const s3Recorder = await startRecorder(peers.s3_direct);
  const recording = await startImgsvc('aws-recording', AWS_FLAGS, { ...directEnv,
    AWS_ENDPOINT_URL_S3: s3Recorder.url, AWS_ENDPOINT_URL_DYNAMODB: dynamoRecorder.url });
  const calls = {};
  const replays = {};
  for (const [scenario, target] of [...Object.entries(paths), ['upload_64k', null]]) {
    dynamoRecorder.counts.clear();
    s3Recorder.counts.clear();
    dynamoRecorder.recorded.clear();
    s3Recorder.recorded.clear();
    const answer = target
      ? await request('GET', recording.url + target, { headers: { 'x-api-key': KEY } })
      : await request('POST', `${recording.url}/api/v1/images`, { headers: UPLOAD_SPEC().headers,
                                                                  body: fs.readFileSync(uploadBodyFile()) });
    if (answer.status >= 300) throw new Error(`recording ${scenario}: ${answer.status} ${answer.body}`);
    calls[scenario] = { ...Object.fromEntries(dynamoRecorder.counts), ...Object.fromEntries(s3Recorder.counts) };
    replays[scenario] = [...[...dynamoRecorder.recorded.values()].map((r) => [r, peers.dynamodb_direct]),
                         ...[...s3Recorder.recorded.values()].map((r) => [r, peers.s3_direct])];
    replays[scenario].forEach(([r], i) => (replays[scenario][i].push(calls[scenario][r.headers['x-amz-target']?.split('.').pop() ?? r.method])));
  }
  await stop(recording.child);
  dynamoRecorder.server.close();
  s3Recorder.server.close();

  for (const [scenario, target] of [...Object.entries(paths), ['upload_64k', null]]) {
    const body = target ? (await request('GET', service.url + target, { headers: { 'x-api-key': KEY } })).body : null;
    for (const connections of CONNECTIONS) {
      await emitMedianRound(connections, async () => {
        // The emulators alone, each call the scenario makes; their costs add
        // up in the one node process, so the ceiling of the whole request is
        // 1 / sum(calls / rate).
        const alone = {};
        let secondsPerRequest = 0;
        for (const [recorded, base, count] of replays[scenario]) {
          const operation = recorded.headers['x-amz-target']?.split('.').pop() ?? `S3 ${recorded.method}`;
          const run = await emulatorAlone(recorded, base, connections);
          alone[operation] = { rps: round3(run.rps), p99_ms: round3(run.p99_ms), status_errors: run.status_errors };
          secondsPerRequest += count / run.rps;
        }
        const ceiling = secondsPerRequest ? 1 / secondsPerRequest : null;
        // The emulators' node process meanwhile: near 100% of a core, they
        // are what limits the scenario, not imgsvc.
        const peersBefore = procStat(peers.pid).ticks;
        const run = await measured(service.pid, target ? service.url + target : `${service.url}/api/v1/images`,
                                   connections, target ? { headers: { 'x-api-key': KEY } } : UPLOAD_SPEC(),
                                   `aws-${scenario}`);
        const peersTicks = procStat(peers.pid).ticks - peersBefore;
        const peersCpu = { peers_cpu_percent: (100 * peersTicks) / TICKS_PER_SECOND / run.seconds,
                           peers_cpu_us_per_request: cpuUsPerRequest(peersTicks, run.requests) };
        // What calls no AWS (/health) is compared with nginx instead.
        const reference = ceiling ? null : await nginxReference(nginx, `aws-${scenario}`, body, connections);
        const ratio = ceiling ? run.rps / ceiling : run.rps / reference.rps;
        return { ratio, line: { backend: 'aws', scenario, connections, ...prefixed('imgsvc', run), ...peersCpu,
                                calls_per_request: calls[scenario], emulator_alone: alone, emulator_ceiling_rps: ceiling,
                                ...(ceiling ? { ratio_to_emulator: ratio } : { nginx_rps: reference.rps, nginx_cpu_us_per_request: reference.cpu_us_per_request, ratio_to_nginx: ratio }) } };
      });
    }
  }
  await stop(service.child);
}

// Large upload ----------------------------------------------------------------------

// s3rver alone storing a file the way imgsvc does: CreateMultipartUpload,
// 8 MiB parts one after another, CompleteMultipartUpload; signed by the AWS
// SDK for JavaScript's signer with UNSIGNED-PAYLOAD (s3rver checks no
// signature, and hashing in JS would charge the reference for work it
// does not need). Seconds from the first request to the last answer.
async function s3rverMultipartAlone(base, key, file) {
  const { SignatureV4 } = await import(path.join(ROOT, 'node_modules/@smithy/signature-v4/dist-cjs/index.js'));
  const { Sha256 } = await import(path.join(ROOT, 'node_modules/@aws-crypto/sha256-js/build/main/index.js'));
  const signer = new SignatureV4({ service: 's3', region: 'us-east-1', sha256: Sha256, uriEscapePath: false,
                                   credentials: { accessKeyId: 'test', secretAccessKey: 'test-secret' } });
  const target = new URL(`${base}/bench-images/${key}`);
  const call = async (method, query, body = Buffer.alloc(0)) => {
    const signed = await signer.sign({
      method, protocol: 'http:', hostname: target.hostname, port: Number(target.port), path: target.pathname, query,
      headers: { host: target.host, 'content-length': String(body.length), 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' },
    });
    const search = new URLSearchParams(query).toString().replace(/=(&|$)/g, '$1');
    const answer = await request(method, `${target.href}?${search}`, { headers: signed.headers, body });
    if (answer.status !== 200) throw new Error(`s3rver ${method} ${search}: ${answer.status} ${answer.body}`);
    return answer;
  };
  const part = 8 << 20;
  const fd = fs.openSync(file, 'r');
  const size = fs.fstatSync(fd).size;
  const started = process.hrtime.bigint();
  const created = await call('POST', { uploads: '' });
  const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(created.body.toString())[1];
  const etags = [];
  for (let offset = 0, number = 1; offset < size; offset += part, ++number) {
    const chunk = Buffer.alloc(Math.min(part, size - offset));
    fs.readSync(fd, chunk, 0, chunk.length, offset);
    etags.push((await call('PUT', { partNumber: String(number), uploadId }, chunk)).headers.etag);
  }
  const complete = `<CompleteMultipartUpload>${etags.map((etag, i) =>
    `<Part><PartNumber>${i + 1}</PartNumber><ETag>${etag}</ETag></Part>`).join('')}</CompleteMultipartUpload>`;
  await call('POST', { uploadId }, Buffer.from(complete));
  fs.closeSync(fd);
  return Number(process.hrtime.bigint() - started) / 1e9;
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor((values.length - 1) / 2)];
// The two sides of a comparison, each going first in every other round, so
// that a drift over the rounds weighs on both alike.
const inTurns = (round, pair) => (round % 2 ? [...pair].reverse() : pair);
const LARGE_ROUNDS = 3;

// Sends a file to `url` with curl: status and seconds.
function curlUpload(url, args) {
  const result = spawnSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{time_total}', ...args, url]);
  const [code, seconds] = result.stdout.toString().trim().split(' ');
  return { status: Number(code), seconds: Number(seconds) };
}

async function largeUpload(nginx, peers) {
  const file = path.join(WORK, 'large.png');
  fs.writeFileSync(file, pngOf(1024 * 1024, 4000, 3000));
  const extra = Buffer.alloc(1024 * 1024);
  for (let i = 1; i < LARGE_MIB; ++i) fs.appendFileSync(file, randomFillSync(extra));
  const form = ['-H', `x-api-key: ${KEY}`, '-F', 'user_id=alice', '-F', `files=@${file};type=image/png`];
  const limit = ['--max-upload-mb', String(LARGE_MIB + 1)];

  // Each round runs the service and its reference in turns (the emulators
  // slow down as the stage goes); medians are reported.
  const embedded = await startImgsvc('large-embedded', ['--data-dir', path.join(WORK, 'large-data'), ...limit]);
  const put = [], viaEmbedded = [];
  let embeddedPeak = 0;
  const byNginx = async () => {
    await settle('large round, nginx');
    put.push(curlUpload(`http://127.0.0.1:${nginx.port}/put/large.png`, ['-T', file]));
    fs.rmSync(path.join(nginx.www, 'put/large.png'), { force: true });
  };
  const byEmbedded = async () => {
    await settle('large round, embedded');
    resetPeak(embedded.pid);
    viaEmbedded.push(curlUpload(`${embedded.url}/api/v1/images`, form));
    embeddedPeak = Math.max(embeddedPeak, memoryKib(embedded.pid).hwm);
  };
  for (let round = 0; round < LARGE_ROUNDS; ++round) {
    for (const turn of inTurns(round, [byNginx, byEmbedded])) await turn();
  }
  await stop(embedded.child);
  fs.rmSync(path.join(WORK, 'large-data'), { recursive: true, force: true });
  const putSeconds = median(put.map((r) => r.seconds));
  const embeddedSeconds = median(viaEmbedded.map((r) => r.seconds));
  emit(line({ scenario: 'large_upload', backend: 'embedded', mib: LARGE_MIB, rounds: LARGE_ROUNDS,
              statuses: viaEmbedded.map((r) => r.status).join(','), imgsvc_seconds: embeddedSeconds,
              imgsvc_round_seconds: viaEmbedded.map((r) => r.seconds).join(','),
              nginx_put_round_seconds: put.map((r) => r.seconds).join(','),
              imgsvc_mib_per_s: LARGE_MIB / embeddedSeconds, nginx_put_seconds: putSeconds,
              nginx_put_mib_per_s: LARGE_MIB / putSeconds, ratio_to_nginx_put: putSeconds / embeddedSeconds,
              imgsvc_peak_rss_kib: embeddedPeak }));

  if (peers) {
    const aws = await startImgsvc('large-aws', [...AWS_FLAGS, ...limit], {
      ...AWS_ENV, AWS_ENDPOINT_URL_S3: peers.s3_direct, AWS_ENDPOINT_URL_DYNAMODB: peers.dynamodb_direct,
      AWS_ENDPOINT_URL_SECRETS_MANAGER: peers.secretsmanager, IMGSVC_API_TOKEN: '' });
    const alone = [], viaAws = [];
    let awsPeak = 0;
    const byS3rver = async (round) => {
      await settle('large round, s3rver alone');
      alone.push(await s3rverMultipartAlone(peers.s3_direct, `large-alone-${round}.png`, file));
    };
    const byAws = async () => {
      await settle('large round, AWS');
      resetPeak(aws.pid);
      viaAws.push(curlUpload(`${aws.url}/api/v1/images`, form));
      awsPeak = Math.max(awsPeak, memoryKib(aws.pid).hwm);
    };
    for (let round = 0; round < LARGE_ROUNDS; ++round) {
      for (const turn of inTurns(round, [byS3rver, byAws])) await turn(round);
    }
    await stop(aws.child);
    const aloneSeconds = median(alone);
    const awsSeconds = median(viaAws.map((r) => r.seconds));
    emit(line({ scenario: 'large_upload', backend: 'aws', mib: LARGE_MIB, rounds: LARGE_ROUNDS,
                statuses: viaAws.map((r) => r.status).join(','), imgsvc_seconds: awsSeconds,
                imgsvc_round_seconds: viaAws.map((r) => r.seconds).join(','),
                s3rver_alone_round_seconds: alone.map(round3).join(','),
                imgsvc_mib_per_s: LARGE_MIB / awsSeconds, s3rver_alone_multipart_seconds: aloneSeconds,
                time_ratio_to_s3rver_alone: awsSeconds / aloneSeconds, imgsvc_peak_rss_kib: awsPeak }));
  }
  fs.rmSync(file);
}

// Idle connections -----------------------------------------------------------------

function openIdle(port, count) {
  const sockets = [];
  const one = () => new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write('GET /health HTTP/1.1\r\nHost: bench\r\n\r\n'));
    socket.once('data', () => resolve(socket));
    socket.once('error', reject);
    sockets.push(socket);
  });
  return (async () => {
    for (let i = 0; i < count; i += 100) await Promise.all(Array.from({ length: Math.min(100, count - i) }, one));
    return sockets;
  })();
}

// Asks every socket for /health again: how many still answer.
async function stillOpen(sockets) {
  const answers = await Promise.all(sockets.map((socket) => new Promise((resolve) => {
    if (socket.destroyed) return resolve(false);
    const timer = setTimeout(() => resolve(false), 10000);
    socket.once('data', (data) => { clearTimeout(timer); resolve(data.toString().startsWith('HTTP/1.1 200')); });
    socket.once('close', () => { clearTimeout(timer); resolve(false); });
    socket.write('GET /health HTTP/1.1\r\nHost: bench\r\n\r\n');
  })));
  return answers.filter(Boolean).length;
}

async function idleConnections() {
  const service = await startImgsvc('idle', ['--data-dir', path.join(WORK, 'idle-data')]);
  const imageId = await seed(service);
  const target = `${service.url}/api/v1/images/${imageId}`;
  const baseline = await measured(service.pid, target, 16, { headers: { 'x-api-key': KEY } });
  const rssBefore = memoryKib(service.pid).rss;
  const sockets = await openIdle(service.port, IDLE_CONNECTIONS);
  await sleep(500);
  const rssWithIdle = memoryKib(service.pid).rss;
  const during = await measured(service.pid, target, 16, { headers: { 'x-api-key': KEY } });
  const open = await stillOpen(sockets);
  for (const socket of sockets) socket.destroy();
  await stop(service.child);
  emit(line({ scenario: 'idle_connections', backend: 'embedded', idle_connections: IDLE_CONNECTIONS,
              rss_before_kib: rssBefore, rss_with_idle_kib: rssWithIdle, rss_growth_mib: (rssWithIdle - rssBefore) / 1024,
              active_p99_ms_without: baseline.p99_ms, active_p99_ms_with: during.p99_ms, active_rps_with: during.rps,
              still_open_at_end: open }));
}

// Cold start -------------------------------------------------------------------------

function coldStarts() {
  const server = spawnSync(path.join(BUILD, 'bench/server_cold'), [
    `--imgsvc=${IMGSVC}`, `--hello=${path.join(BUILD, 'bench/hello_static')}`,
    `--data-dir=${path.join(WORK, 'cold-data')}`, '--rounds=20', `--port=${nextPort++}`]);
  const serverSummary = server.stdout.toString().split('\n').find((l) => l.includes('"summary"'));
  if (!serverSummary) throw new Error(`server_cold failed: ${server.stderr}`);
  emit({ scenario: 'cold_start', ...JSON.parse(serverSummary) });
  const lambda = spawnSync(path.join(ROOT, 'bench/lambda_cold.sh'), ['20', '50'],
                           { env: { ...process.env, BUILD_DIR: BUILD } });
  const lambdaSummary = lambda.stdout.toString().split('\n').find((l) => l.includes('"summary"'));
  if (!lambdaSummary) throw new Error(`lambda_cold.sh failed: ${lambda.stderr}`);
  emit({ scenario: 'cold_start', measurement: 'lambda', ...JSON.parse(lambdaSummary) });
}

// Instructions per request (callgrind) -------------------------------------------------

// Runs the server under callgrind, makes `count` requests one after another,
// stops it: total instructions (Ir) of the whole process.
async function instructionsFor(name, count, dataDir, makeRequest) {
  const out = path.join(WORK, `callgrind.${name}.${count}`);
  const port = nextPort++;
  const child = start(`callgrind-${name}`, 'valgrind', ['--tool=callgrind', `--callgrind-out-file=${out}`,
    IMGSVC, 'serve', '--port', String(port), '--data-dir', dataDir, '--log-level', 'info'], { IMGSVC_API_TOKEN: TOKEN });
  await waitHealthy(port, `callgrind ${name}`);
  for (let i = 0; i < count; ++i) {
    const answer = await makeRequest(`http://127.0.0.1:${port}`);
    if (answer.status >= 300) throw new Error(`callgrind ${name}: ${answer.status}`);
  }
  await stop(child);
  const summary = /summary: (\d+)/.exec(fs.readFileSync(out, 'utf8'));
  return Number(summary[1]);
}

async function callgrind() {
  const dataDir = path.join(WORK, 'callgrind-data');
  const seeding = await startImgsvc('callgrind-seed', ['--data-dir', dataDir]);
  const imageId = await seed(seeding);
  await stop(seeding.child);
  const paths = scenarioPaths(imageId);
  const get = (target) => (base) => request('GET', base + target, { headers: { 'x-api-key': KEY } });
  const upload = (base) => request('POST', `${base}/api/v1/images`, { headers: UPLOAD_SPEC().headers,
                                                                       body: fs.readFileSync(uploadBodyFile()) });
  const N = 200;
  for (const [scenario, makeRequest, n] of [['get_one', get(paths.get_one), N], ['list_20', get(paths.list_20), N],
                                            ['health', get(paths.health), N], ['upload_64k', upload, 50]]) {
    // The health checks of startup and the stop are the same in both runs.
    const base = await instructionsFor(scenario, 0, dataDir, makeRequest);
    const total = await instructionsFor(scenario, n, dataDir, makeRequest);
    emit(line({ scenario: 'instructions_per_request', request: scenario, requests: n,
                instructions_per_request: Math.round((total - base) / n) }));
  }
}

// Micro-benchmarks ------------------------------------------------------------------------

function microBenchmarks() {
  for (const name of ['micro_bench', 'aws_bench']) {
    const binary = path.join(BUILD, 'bench', name);
    if (!fs.existsSync(binary)) continue;
    const run = spawnSync(binary, ['--benchmark_format=json', '--benchmark_repetitions=3',
                                   '--benchmark_report_aggregates_only=true']);
    for (const b of JSON.parse(run.stdout.toString()).benchmarks ?? []) {
      if (b.aggregate_name !== 'median') continue;
      const nanoseconds = { ns: 1, us: 1e3, ms: 1e6, s: 1e9 }[b.time_unit] ?? 1;
      emit(line({ scenario: 'micro', benchmark: b.run_name, cpu_ns: b.cpu_time * nanoseconds,
                  ...(b.bytes_per_second ? { mib_per_s: b.bytes_per_second / (1 << 20) } : {}) }));
    }
  }
}

// A/B ---------------------------------------------------------------------------------

// The other build and this one take turns on the same data, a fresh process
// for each run; the data is seeded once, by this build.
async function abComparison(backend, peers) {
  const builds = [['other', AB_OTHER], ['this', IMGSVC]];
  const args = backend === 'embedded' ? ['--data-dir', path.join(SPREAD, 'ab-data')] : AWS_FLAGS;
  const env = backend === 'embedded' ? {} : directEnvOf(peers);
  const seeder = await startImgsvc(`ab-${backend}-seed`, args, env);
  const paths = { ...scenarioPaths(await seed(seeder)), upload_64k: '/api/v1/images' };
  await stop(seeder.child);
  const connections = CONNECTIONS.length === 1 ? CONNECTIONS[0] : 64;
  const rounds = Number(options.rounds ?? 3);
  for (const scenario of (options.scenarios ?? 'get_one,list_20,upload_64k').split(',')) {
    if (!paths[scenario]) throw new Error(`unknown scenario ${scenario}`);
    const spec = scenario === 'upload_64k' ? UPLOAD_SPEC() : { headers: { 'x-api-key': KEY } };
    const runs = { other: [], this: [] };
    for (let round = 0; round < rounds; ++round) {
      // Each goes first in every other round: a run can leave the page cache
      // or the emulators warmer for the next.
      for (const [build, binary] of inTurns(round, builds)) {
        const service = await startImgsvc(`ab-${backend}-${scenario}-${build}-${round}`, args, env, binary);
        const run = await measured(service.pid, service.url + paths[scenario], connections, spec,
                                   `ab-${backend}-${scenario}-${build}-${round}`);
        await stop(service.child);
        runs[build].push(run);
        emit(line({ ab: true, backend, scenario, connections, round, build, binary, rps: run.rps,
                    cpu_us_per_request: run.cpu_us_per_request, minor_faults_per_request: run.minor_faults_per_request,
                    context_switches_per_request: run.context_switches_per_request, errors: run.errors }));
      }
    }
    const summary = { ab: true, summary: true, backend, scenario, connections, rounds };
    for (const build of ['other', 'this']) {
      for (const measure of ['rps', 'cpu_us_per_request', 'minor_faults_per_request', 'context_switches_per_request']) {
        summary[`${build}_${measure}`] = median(runs[build].map((run) => run[measure]));
      }
    }
    summary.cpu_ratio = summary.this_cpu_us_per_request / summary.other_cpu_us_per_request;
    emit(line(summary));
  }
}

// Each stage starts on an idle machine, so that what ran before it (the
// build, or the previous stage's cleanup: ext4 frees, discards and writes
// back what a stage deleted) is not measured as the stage's own. Waits for
// a second in which the vCPUs were at least 90 % idle and the disks wrote
// at most a few requests (logs), for 30 s at most, and records the wait.
const SETTLE_LIMIT_MS = 30000;
function cpuIdleAndTotal() {
  const ticks = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return { idle: ticks[3] + ticks[4], total: ticks.reduce((a, b) => a + b, 0) };
}
// Writes, discards and flushes completed by the disks, partitions aside.
function diskWrites() {
  const disks = new Set(fs.readdirSync('/sys/block').filter((name) => !/^(loop|ram|zram)/.test(name)));
  let writes = 0;
  for (const row of fs.readFileSync('/proc/diskstats', 'utf8').split('\n')) {
    const fields = row.trim().split(/\s+/);
    if (disks.has(fields[2])) writes += [7, 14, 18].reduce((sum, i) => sum + Number(fields[i] ?? 0), 0);
  }
  return writes;
}
async function settle(stage) {
  const begun = Date.now();
  for (;;) {
    const cpu0 = cpuIdleAndTotal(), writes0 = diskWrites();
    await sleep(1000);
    const cpu1 = cpuIdleAndTotal(), writes1 = diskWrites();
    const idle = (cpu1.idle - cpu0.idle) / Math.max(1, cpu1.total - cpu0.total);
    const quiet = idle >= 0.9 && writes1 - writes0 <= 5;
    if (quiet || Date.now() - begun >= SETTLE_LIMIT_MS) {
      emit({ settle: true, stage, seconds: round3((Date.now() - begun) / 1000), quiet, idle_percent: round3(idle * 100),
             disk_writes_last_second: writes1 - writes0 });
      return;
    }
  }
}

// Main ----------------------------------------------------------------------------------

const started = Date.now();
emit({ machine: true, cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model, kernel: os.release(),
       memory_gib: Math.round(os.totalmem() / 2 ** 30), filesystem: spawnSync('stat', ['-f', '-c', '%T', WORK]).stdout.toString().trim(),
       load_average: os.loadavg().map(round3), seconds_per_run: SECONDS, connections: CONNECTIONS,
       ...JSON.parse(spawnSync(path.join(BUILD, 'bench/machine_costs')).stdout.toString()),
       command: `bench/run ${process.argv.slice(2).join(' ')}`.trim() });
if (AB_OTHER) {
  if (!fs.existsSync(AB_OTHER)) throw new Error(`--ab: no such binary ${AB_OTHER}`);
  if (ONLY.has('embedded')) await abComparison('embedded');
  if (ONLY.has('aws')) {
    const abPeers = await startPeers();
    await abComparison('aws', abPeers);
    await stop(abPeers.child);
  }
  emit({ summary: true, minutes: round3((Date.now() - started) / 60000) });
  process.exit(0);
}
const nginx = await startNginx();
let peers = null;
if (ONLY.has('embedded')) await settle('embedded').then(() => embeddedScenarios(nginx));
if (ONLY.has('aws') || ONLY.has('large')) peers = await startPeers();
if (ONLY.has('aws')) await settle('aws').then(() => awsScenarios(nginx, peers));
if (ONLY.has('large')) await settle('large').then(() => largeUpload(nginx, peers));
if (ONLY.has('idle')) await settle('idle').then(() => idleConnections());
if (peers) await stop(peers.child);
if (ONLY.has('cold')) await settle('cold').then(() => coldStarts());
if (ONLY.has('callgrind')) await callgrind();
if (ONLY.has('micro')) microBenchmarks();
emit({ summary: true, minutes: round3((Date.now() - started) / 60000) });
process.exit(0);
