#!/usr/bin/env node
// hunt.mjs runs the seed query (hunt.sql) on one file with DuckDB and
// prints its rows as `beacon hunt --format jsonl` does: one JSON object
// per row, the query's columns in its order, Go's number and string
// encoding. Usage: node hunt.mjs [flags] FILE (see README.md).
import { DuckDBInstance } from '@duckdb/node-api';
import { readFileSync, openSync, readSync, closeSync, existsSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
// Node's start-up and the DuckDB module's load come before this line
// (static imports): --timing reports them apart from DuckDB's own work.
const bootMs = process.uptime() * 1000;
const started = process.hrtime.bigint();

// Flags: hunt's names and defaults (cmd/beacon/params.go, hunt.go).
const flags = {
  shape: 'auto', end: '', lookback: '24h', 'end-offset': '1s', 'time-delta-threshold-min': '1ms',
  'total-events-threshold-min': '15', 'total-events-threshold-max': '0', 'jitter-threshold': '50',
  'outlier-threshold-max': '2', 'outlier-count-max': '3', 'outlier-threshold-low': '',
  'compromised-device-count-max': '10', 'action-types': 'ConnectionSuccess,CsonnectionRequest,CsonnectionFailed',
  'sleep-min': '0', 'sleep-max': '0', threads: '', timing: false, strict: false, 'scan-only': false,
};
const args = process.argv.slice(2);
let file = '';
for (let i = 0; i < args.length; i++) {
  let a = args[i];
  if (!a.startsWith('--')) { if (file) usage(`more than one file: ${a}`); file = a; continue; }
  a = a.slice(2);
  let v;
  const eq = a.indexOf('=');
  if (eq >= 0) { v = a.slice(eq + 1); a = a.slice(0, eq); }
  if (!(a in flags)) usage(`unknown flag --${a}`);
  if (typeof flags[a] === 'boolean') { flags[a] = v === undefined ? true : v !== 'false'; continue; }
  if (v === undefined) { if (++i >= args.length) usage(`--${a} needs a value`); v = args[i]; }
  flags[a] = v;
}
if (!file) usage('no input file');

function usage(msg) {
  process.stderr.write(`hunt.mjs: ${msg}\nusage: node hunt.mjs [--shape auto|flat|envelope] [--end ISO8601] [--lookback 24h] [--threads N] [--strict] [--timing] [--scan-only] [hunt's seed flags] FILE\n`);
  process.exit(2);
}

// Go's time.ParseDuration, enough of it for hunt's flags: 24h, 90m, 1h30m,
// 1.5s, 1ms. Returns nanoseconds.
function durationNs(s, name) {
  const unit = { ns: 1, us: 1e3, 'µs': 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/gy;
  let ns = 0, m, pos = 0;
  if (s === '0') return 0;
  while ((m = re.exec(s)) !== null) { ns += Number(m[1]) * unit[m[2]]; pos = re.lastIndex; }
  if (pos !== s.length || s.length === 0) usage(`--${name} ${JSON.stringify(s)}: want a duration such as 24h or 90m`);
  return Math.trunc(ns);
}
const ticksOf = ns => BigInt(Math.trunc(ns / 100)); // truncated, as beacon.Time.Add

// hunt's parseISO8601 (cmd/beacon/hunt.go): a date (midnight UTC) or a
// date-time, minutes/seconds/fraction optional, zone Z, ±hh:mm, ±hhmm,
// ±hh or none (UTC). Returns ticks.
function isoTicks(s) {
  const m = /^(\d{4})-(\d\d)-(\d\d)(?:[Tt ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d+))?)?)?([Zz]|[+-]\d\d(?::?\d\d)?)?$/.exec(s.trim());
  if (!m) usage(`--end ${JSON.stringify(s)}: want an ISO 8601 date or date-time, e.g. 2024-05-02, 2024-05-02T10:00 or 2024-05-02T10:00:00.5+02:00`);
  const [, y, mo, d, h = '0', mi = '0', sec = '0', frac = '', zone = ''] = m;
  const daysInMonth = new Date(Date.UTC(+y, +mo, 0)).getUTCDate(); // day 0 of the next month
  if (+mo < 1 || +mo > 12 || +d < 1 || +d > daysInMonth || +h > 23 || +mi > 59 || +sec > 59) {
    usage(`--end ${JSON.stringify(s)}: not a valid date or time`);
  }
  let secs = BigInt(Date.UTC(+y, +mo - 1, +d, +h, +mi, +sec) / 1000);
  if (zone && zone !== 'Z' && zone !== 'z') {
    const z = zone.replace(':', '');
    const off = (+z.slice(1, 3)) * 3600 + (+(z.slice(3, 5) || '0')) * 60;
    secs -= BigInt(zone[0] === '-' ? -off : off);
  }
  return secs * 10000000n + BigInt((frac + '0000000').slice(0, 7));
}

const lookbackNs = durationNs(flags.lookback, 'lookback');
const endOffsetNs = durationNs(flags['end-offset'], 'end-offset');
const tdMinNs = durationNs(flags['time-delta-threshold-min'], 'time-delta-threshold-min');
if (lookbackNs <= 0 || endOffsetNs < 0 || endOffsetNs >= lookbackNs || tdMinNs <= 0) {
  usage('want --lookback > 0, 0 <= --end-offset < --lookback, --time-delta-threshold-min > 0');
}
const lookback = ticksOf(lookbackNs), endOffset = ticksOf(endOffsetNs);
// TotalEventsThresholdMax: the override, or toint((starttime - endtime) / TimeDeltaThresholdMin)
// in float64 over nanoseconds, as Params.EventsMax.
let eventsMax = BigInt(flags['total-events-threshold-max']);
if (eventsMax === 0n) eventsMax = BigInt(Math.trunc((lookbackNs - endOffsetNs) / tdMinNs));
const nowTicks = flags.end ? isoTicks(flags.end) : null;
const low = flags['outlier-threshold-low'] === '' ? -Number(flags['outlier-count-max']) : Number(flags['outlier-threshold-low']);

// The shape: a line holding "properties" (a record or {"records":[…]})
// is the Streaming API's; otherwise flat rows.
let shape = flags.shape;
if (!existsSync(file)) { process.stderr.write(`hunt.mjs: ${file}: no such file\n`); process.exit(1); }
if (shape === 'auto') {
  const fd = openSync(file, 'r');
  let head = Buffer.alloc(1 << 16);
  head = head.subarray(0, readSync(fd, head, 0, head.length, 0));
  closeSync(fd);
  if (head[0] === 0x1f && head[1] === 0x8b) {
    try { head = gunzipSync(readFileSync(file)).subarray(0, 1 << 16); } catch { head = Buffer.alloc(0); }
  }
  const first = head.toString('utf8').split('\n')[0];
  shape = /"properties"\s*:/.test(first) ? 'envelope' : 'flat';
}
if (shape !== 'flat' && shape !== 'envelope') usage(`--shape ${shape}: want auto, flat or envelope`);

const inst = await DuckDBInstance.create(':memory:', flags.threads ? { threads: String(flags.threads) } : {});
const con = await inst.connect();
const sqlString = s => `'${s.replaceAll("'", "''")}'`;
const sets = [
  `SET VARIABLE file = ${sqlString(file)}`,
  `SET VARIABLE now = ${nowTicks === null ? 'NULL' : nowTicks}::BIGINT`,
  `SET VARIABLE lookback = ${lookback}::BIGINT`,
  `SET VARIABLE end_offset = ${endOffset}::BIGINT`,
  `SET VARIABLE events_min = ${BigInt(flags['total-events-threshold-min'])}::BIGINT`,
  `SET VARIABLE events_max = ${eventsMax}::BIGINT`,
  `SET VARIABLE jitter_threshold = ${sqlString(String(Number(flags['jitter-threshold'])))}::DOUBLE`,
  `SET VARIABLE outlier_threshold_max = ${sqlString(String(Number(flags['outlier-threshold-max'])))}::DOUBLE`,
  `SET VARIABLE outlier_threshold_low = ${sqlString(String(low))}::DOUBLE`,
  `SET VARIABLE outlier_count_max = ${BigInt(flags['outlier-count-max'])}::BIGINT`,
  `SET VARIABLE device_count_max = ${BigInt(flags['compromised-device-count-max'])}::BIGINT`,
  `SET VARIABLE action_types = [${flags['action-types'].split(',').map(s => sqlString(s.trim())).join(', ')}]::VARCHAR[]`,
  `SET VARIABLE sleep_min = ${sqlString(String(Number(flags['sleep-min'])))}::DOUBLE`,
  `SET VARIABLE sleep_max = ${sqlString(String(Number(flags['sleep-max'])))}::DOUBLE`,
];
for (const s of sets) await con.run(s);
// The ORDER BY decides the output order: DuckDB need not keep the file's
// (measured: 15-20 % less CPU on the flat day).
await con.run('SET preserve_insertion_order = false');
await con.run(readFileSync(join(here, 'macros.sql'), 'utf8'));
if (flags.strict) await con.run('CREATE OR REPLACE TEMP MACRO ns_of(s) AS ns_of_strict(s)');
await con.run(readFileSync(join(here, `source-${shape}.sql`), 'utf8'));
const ready = process.hrtime.bigint();
// --scan-only reads every column of every row into DuckDB and
// aggregates each, and nothing else: a floor under any query over this
// reader, to compare hunt with.
const query = flags['scan-only']
  ? `SELECT count(*) AS events, max(ticks) AS newest, max(DeviceId) AS a, max(DeviceName) AS b, max(ActionType) AS c,
            max(RemoteIP) AS d, max(RemoteIPType) AS e, max(RemotePort) AS f, max(RemoteUrl) AS g,
            max(AccountName) AS h, max(AccountDomain) AS i, max(FileName) AS j FROM events`
  : readFileSync(join(here, 'hunt.sql'), 'utf8');
const reader = await con.runAndReadAll(query);
const rows = reader.getRowObjectsJS();
const queried = process.hrtime.bigint();

// Go's encoding: json.Marshal for strings (<, >, &, U+2028, U+2029 escaped),
// strconv.AppendFloat(v, 'g', -1, 64) for floats, Kusto's datetime text.
const goString = s => JSON.stringify(s).replace(/[<>&\u2028\u2029]/g, c => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
function goFloat(v) {
  if (!Number.isFinite(v)) return 'null';
  if (v === 0) return Object.is(v, -0) ? '-0' : '0';
  const [mant, e] = Math.abs(v).toExponential().split('e');
  const digits = mant.replace('.', '');
  const exp = Number(e);
  const sign = v < 0 ? '-' : '';
  if (exp < -4 || exp >= 6) { // shortest 'g' uses %e outside [1e-4, 1e6)
    const m = digits.length > 1 ? digits[0] + '.' + digits.slice(1) : digits;
    const x = Math.abs(exp);
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${x < 10 ? '0' + x : x}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  if (exp + 1 >= digits.length) return sign + digits + '0'.repeat(exp + 1 - digits.length);
  return `${sign}${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`;
}
function kustoTime(t) {
  t = BigInt(t);
  let s = t / 10000000n, f = t % 10000000n;
  if (f < 0n) { s -= 1n; f += 10000000n; }
  let out = new Date(Number(s) * 1000).toISOString().slice(0, 19);
  if (f !== 0n) out += '.' + f.toString().padStart(7, '0').replace(/0+$/, '');
  return '"' + out + 'Z"';
}
const enc = {
  DeviceId: goString, DeviceName: goString, InitiatingProcessAccountName: goString,
  InitiatingProcessAccountDomain: goString, InitiatingProcessFileName: goString, RemoteIP: goString,
  min_Timestamp: kustoTime, max_Timestamp: kustoTime, Timestamp: kustoTime,
  TimeDeltaList: l => '[' + l.map(String).join(',') + ']',
  TimeDeltaInSeconds_avg: goFloat, TimeDeltaInSeconds_stdev: goFloat, TimeDeltaInSeconds_variance: goFloat,
  Jitter: goFloat, BeaconSleepMin: goFloat, BeaconSleepMax: goFloat,
  Domains: l => '[' + l.map(goString).join(',') + ']',
};
const cols = reader.columnNames();
let out = '';
for (const r of rows) {
  out += '{' + cols.map(c => JSON.stringify(c) + ':' + (enc[c] ?? (v => typeof v === 'string' ? goString(v) : String(v)))(r[c])).join(',') + '}\n';
}
process.stdout.write(out);
if (flags.timing) {
  const ms = (a, b) => (Number(b - a) / 1e6).toFixed(0);
  // duckdb = instance, settings, macros and view (setup) + the query itself.
  process.stderr.write(`hunt.mjs: ${shape} ${file}: ${rows.length} row(s); node+module ${bootMs.toFixed(0)} ms, ` +
    `setup ${ms(started, ready)} ms, query ${ms(ready, queried)} ms, output ${ms(queried, process.hrtime.bigint())} ms; duckdb ${ms(started, queried)} ms\n`);
}
