// Shared by every flashsale k6 script: targets and knobs from __ENV, the token
// and credential files, the three requests (login, stock read, buy) with their
// per-code counters, the setup() target check, and the handleSummary report.
import http from 'k6/http';
import exec from 'k6/execution';
import { check } from 'k6';
import { SharedArray } from 'k6/data';
import { Counter, Trend } from 'k6/metrics';

// ---------------------------------------------------------------- settings

function env(name, fallback) {
  const raw = __ENV[name];
  return raw === undefined || raw === '' ? fallback : raw;
}

export function envString(name, fallback) {
  return String(env(name, fallback));
}

export function envInt(name, fallback, min = 1) {
  const raw = env(name, fallback);
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) {
    throw new Error(`${name} must be a whole number >= ${min}, got "${raw}"`);
  }
  return value;
}

export function envNumber(name, fallback, min = 0) {
  const raw = env(name, fallback);
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min) {
    throw new Error(`${name} must be a number >= ${min}, got "${raw}"`);
  }
  return value;
}

// k6 takes durations as strings ("30s", "1m30s"); seed-matrix also needs them
// as numbers to place scenarios one after the other.
export function envDuration(name, fallback) {
  const raw = envString(name, fallback);
  const seconds = durationSeconds(raw);
  if (seconds === null || seconds <= 0) {
    throw new Error(`${name} must be a duration such as 30s, 2m or 1m30s, got "${raw}"`);
  }
  return { text: raw, seconds };
}

function durationSeconds(text) {
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const unit = { h: 3600, m: 60, s: 1, ms: 0.001 };
  const parts = text.match(/(\d+(?:\.\d+)?)(ms|h|m|s)/g);
  if (!parts || parts.join('') !== text) return null;
  return parts.reduce((total, part) => {
    const [, amount, suffix] = part.match(/(\d+(?:\.\d+)?)(ms|h|m|s)/);
    return total + Number(amount) * unit[suffix];
  }, 0);
}

function baseUrl(name, fallback) {
  return envString(name, fallback).replace(/\/+$/, '');
}

// One entry per function; scripts pass the ones they use to checkTargets().
export const URLS = {
  auth: baseUrl('AUTH_URL', 'http://127.0.0.1:8081'),
  stock: baseUrl('STOCK_URL', 'http://127.0.0.1:8082'),
  order: baseUrl('ORDER_URL', 'http://127.0.0.1:8083'),
};
const URL_ENV = { auth: 'AUTH_URL', stock: 'STOCK_URL', order: 'ORDER_URL' };

export const SKU = envString('SKU', 'iphone-17');
export const QUANTITY = envInt('QUANTITY', 1);
// Per-request timeout: past it k6 records status 0, which counts as a failure.
export const REQUEST_TIMEOUT = envDuration('REQUEST_TIMEOUT', '60s').text;
export const CHECKS_RATE = envNumber('CHECKS_RATE', 0.99);

// setup() makes up to five requests, each of which may wait for a Knative
// cold start; k6's default setup timeout is 60s.
export const SETUP_TIMEOUT = '3m';
const SETUP_REQUEST_TIMEOUT = '30s';

// p(99) and a request count are not in k6's default trend stats; the summary needs both.
export const SUMMARY_TREND_STATS = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'];

// ---------------------------------------------------------------- data files

// open() resolves a relative path against the directory of the script being
// run (loadtest/), and k6 warns that it will switch to the calling module
// (loadtest/lib/). Resolving here, one level up from lib/, keeps the meaning
// "relative to loadtest/" in both k6 versions.
function scriptRelative(path) {
  if (path.startsWith('/') || path.startsWith('file://')) return import.meta.resolve(path);
  return import.meta.resolve(`../${path}`);
}

function loadJsonArray(envName, fallback, required, howToCreate) {
  const path = envString(envName, fallback);
  // SharedArray runs the callback once and hands every VU a read-only view,
  // so 10,000 VUs do not each parse their own copy of the file.
  return new SharedArray(`${envName}:${path}`, () => {
    let text;
    try {
      text = open(scriptRelative(path));
    } catch (err) {
      throw new Error(
        `${envName}=${path} could not be read (relative paths are relative to loadtest/): ${err}. ` +
          `Create it with: ${howToCreate}`,
      );
    }
    let rows;
    try {
      rows = JSON.parse(text);
    } catch (err) {
      throw new Error(`${envName}=${path} is not JSON: ${err}`);
    }
    if (!Array.isArray(rows)) throw new Error(`${envName}=${path} must hold a JSON array`);
    rows.forEach((row, index) => {
      const missing = required.filter((field) => !row || typeof row[field] !== 'string' || row[field] === '');
      if (missing.length > 0) {
        throw new Error(`${envName}=${path}: entry ${index} lacks ${missing.join(', ')}`);
      }
    });
    return rows;
  });
}

// [{user_id, email, access_token}], written by `flashsale tokens --out`.
export function loadTokens() {
  return loadJsonArray(
    'TOKENS_FILE',
    '../var/tokens.json',
    ['access_token'],
    'flashsale tokens --count N --out var/tokens.json',
  );
}

// [{email, password}], written by `flashsale tokens --users-out`.
export function loadUsers() {
  return loadJsonArray(
    'USERS_FILE',
    '../var/users.json',
    ['email', 'password'],
    'flashsale tokens --count N --out var/tokens.json --users-out var/users.json',
  );
}

// ---------------------------------------------------------------- setup checks

// GET /healthz on every target; abort the whole test, before any VU fires, if
// one does not answer 200. The timeout is long because a Knative service
// scaled to zero first has to start a pod.
export function checkTargets(targets) {
  const problems = [];
  for (const [name, url] of Object.entries(targets)) {
    const res = http.get(`${url}/healthz`, { timeout: SETUP_REQUEST_TIMEOUT, tags: { name: 'GET /healthz' } });
    if (res.status !== 200) {
      const why = res.status === 0 ? res.error : `HTTP ${res.status}`;
      problems.push(`${name} (${URL_ENV[name] || name}=${url}): GET /healthz -> ${why}`);
    }
  }
  if (problems.length > 0) {
    exec.test.abort(
      `target check failed: ${problems.join('; ')}. ` +
        'Start the stack with `make run` or point AUTH_URL/STOCK_URL/ORDER_URL at running functions.',
    );
  }
}

// The sale must exist; its stock is kept for the summary (oversell check).
export function checkSale(sku = SKU) {
  const res = http.get(`${URLS.stock}/stock/${encodeURIComponent(sku)}`, {
    timeout: SETUP_REQUEST_TIMEOUT,
    tags: { name: 'GET /stock/:sku' },
  });
  if (res.status === 404) {
    exec.test.abort(`no sale for SKU=${sku}: create one with \`flashsale sale create --sku ${sku} --stock N\``);
  }
  if (res.status !== 200) {
    exec.test.abort(`GET ${URLS.stock}/stock/${sku} answered ${res.status || res.error}`);
  }
  const body = jsonBody(res) || {};
  return { sku, total: body.total, available: body.available, sold_out: body.sold_out };
}

// Enough tokens for the VUs, and a sample that the order function still
// accepts (tokens expire after TOKEN_TTL_SECONDS).
export function checkTokens(tokens, needed) {
  if (tokens.length < needed) {
    exec.test.abort(
      `TOKENS_FILE has ${tokens.length} tokens but this run needs ${needed}: ` +
        `run \`flashsale tokens --count ${needed} --out var/tokens.json\` or lower the VU count`,
    );
  }
  const res = http.get(`${URLS.order}/orders`, {
    headers: { Authorization: `Bearer ${tokens[0].access_token}` },
    timeout: SETUP_REQUEST_TIMEOUT,
    tags: { name: 'GET /orders' },
  });
  if (res.status === 401) {
    exec.test.abort(
      'the order function rejects the first token in TOKENS_FILE (expired?): run `flashsale tokens` again',
    );
  }
}

export function checkUsers(users) {
  if (users.length === 0) {
    exec.test.abort(
      'USERS_FILE is empty: run `flashsale tokens --count N --out var/tokens.json --users-out var/users.json`',
    );
  }
}

// A per-run prefix so Idempotency-Keys of one run never replay an earlier run's orders.
export function newRunId() {
  let hex = '';
  for (let i = 0; i < 18; i++) hex += Math.floor(Math.random() * 16).toString(16);
  return hex;
}

// UUID-shaped key from the run id and a number unique within the run.
export function idempotencyKey(runId, n) {
  const tail = n.toString(16).padStart(12, '0');
  return `${runId.slice(0, 8)}-${runId.slice(8, 12)}-4${runId.slice(12, 15)}-8${runId.slice(15, 18)}-${tail}`;
}

// ---------------------------------------------------------------- metrics

export const metrics = {
  ordersConfirmed: new Counter('orders_confirmed'),
  unitsConfirmed: new Counter('units_confirmed'),
  ordersSoldOut: new Counter('orders_sold_out'),
  ordersLimitReached: new Counter('orders_limit_reached'),
  ordersSaleNotStarted: new Counter('orders_sale_not_started'),
  ordersOtherStatus: new Counter('orders_other_status'),
  loginsOk: new Counter('logins_ok'),
  loginsRateLimited: new Counter('logins_rate_limited'),
  loginsOtherStatus: new Counter('logins_other_status'),
  stockReadsOk: new Counter('stock_reads_ok'),
  stockReadsOtherStatus: new Counter('stock_reads_other_status'),
  // Flash-sale crowd, both measured from the common start instant: how late
  // each buyer fired, and when its answer came back (max = all answered).
  crowdStartLag: new Trend('crowd_start_lag', true),
  crowdAnsweredAfter: new Trend('crowd_answered_after', true),
};

export const ORDER_COUNTERS = [
  'orders_confirmed',
  'units_confirmed',
  'orders_sold_out',
  'orders_limit_reached',
  'orders_sale_not_started',
  'orders_other_status',
];
export const LOGIN_COUNTERS = ['logins_ok', 'logins_rate_limited', 'logins_other_status'];
export const STOCK_COUNTERS = ['stock_reads_ok', 'stock_reads_other_status'];

// k6 only keeps a tagged sub-metric in the summary when a threshold names it,
// so each "other status" counter gets a no-op threshold per likely status;
// the summary then says which statuses they were (0 = timeout or refused).
const LIKELY_OTHER_STATUSES = [0, 400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 502, 503, 504];
const NO_OP = 'count>=0';

export function otherStatusThresholds(...counterNames) {
  const thresholds = {};
  for (const name of counterNames) {
    for (const status of LIKELY_OTHER_STATUSES) thresholds[`${name}{status:${status}}`] = [NO_OP];
  }
  return thresholds;
}

// The parsed body, or null when it is not JSON (a proxy's HTML error page, say).
function jsonBody(res) {
  try {
    return res.json();
  } catch (_) {
    return null;
  }
}

function isProblem(res) {
  return String(res.headers['Content-Type'] || '').startsWith('application/problem+json');
}

// ---------------------------------------------------------------- requests

// A 409 (sold out, limit reached, sale not started) is a correct answer to a
// Buy press; only 5xx, timeouts and other surprises count in http_req_failed.
export const BUY_EXPECTED = http.expectedStatuses(201, 409);
export const LOGIN_EXPECTED = http.expectedStatuses(200, 429);

const CONFLICT_COUNTERS = {
  sold_out: metrics.ordersSoldOut,
  limit_reached: metrics.ordersLimitReached,
  sale_not_started: metrics.ordersSaleNotStarted,
};

export function buy(token, { sku = SKU, quantity = QUANTITY, idempotencyKey: key } = {}) {
  const headers = { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` };
  if (key) headers['Idempotency-Key'] = key;
  const res = http.post(`${URLS.order}/orders`, JSON.stringify({ sku, quantity }), {
    headers,
    responseCallback: BUY_EXPECTED,
    timeout: REQUEST_TIMEOUT,
    tags: { name: 'POST /orders' },
  });
  const body = jsonBody(res) || {};
  check(res, { 'buy: 201 or 409': (r) => r.status === 201 || r.status === 409 });
  if (res.status === 201) {
    metrics.ordersConfirmed.add(1);
    metrics.unitsConfirmed.add(quantity);
    check(res, {
      'buy: 201 is a confirmed order with a ticket': () =>
        body.status === 'confirmed' && Boolean(body.order_id) && body.ticket !== undefined,
    });
  } else if (res.status === 409) {
    const counter = CONFLICT_COUNTERS[body.code];
    if (counter) counter.add(1);
    else metrics.ordersOtherStatus.add(1, { status: '409' });
    check(res, { 'buy: 409 is problem+json with a known code': (r) => Boolean(counter) && isProblem(r) });
  } else {
    metrics.ordersOtherStatus.add(1, { status: String(res.status) });
  }
  return res;
}

export function login(user) {
  const res = http.post(`${URLS.auth}/login`, JSON.stringify({ email: user.email, password: user.password }), {
    headers: { 'Content-Type': 'application/json' },
    responseCallback: LOGIN_EXPECTED,
    timeout: REQUEST_TIMEOUT,
    tags: { name: 'POST /login' },
  });
  check(res, { 'login: 200 or 429': (r) => r.status === 200 || r.status === 429 });
  if (res.status === 200) {
    metrics.loginsOk.add(1);
    const body = jsonBody(res) || {};
    check(res, {
      'login: 200 carries a bearer token': () => body.token_type === 'Bearer' && Boolean(body.access_token),
    });
  } else if (res.status === 429) {
    metrics.loginsRateLimited.add(1);
    check(res, { 'login: 429 says when to retry': (r) => Boolean(r.headers['Retry-After']) && isProblem(r) });
  } else {
    metrics.loginsOtherStatus.add(1, { status: String(res.status) });
  }
  return res;
}

export function readStock(sku = SKU) {
  const res = http.get(`${URLS.stock}/stock/${encodeURIComponent(sku)}`, {
    timeout: REQUEST_TIMEOUT,
    tags: { name: 'GET /stock/:sku' },
  });
  check(res, { 'stock: 200': (r) => r.status === 200 });
  if (res.status === 200) {
    metrics.stockReadsOk.add(1);
    const body = jsonBody(res) || {};
    check(res, {
      'stock: 200 has available and sold_out': () =>
        body.sku === sku && typeof body.available === 'number' && typeof body.sold_out === 'boolean',
    });
  } else {
    metrics.stockReadsOtherStatus.add(1, { status: String(res.status) });
  }
  return res;
}

// ---------------------------------------------------------------- summary

const round = (value) => (typeof value === 'number' ? Math.round(value * 100) / 100 : null);

function trendMs(metric) {
  const v = (metric && metric.values) || {};
  return {
    avg: round(v.avg),
    min: round(v.min),
    med: round(v.med),
    p90: round(v['p(90)']),
    p95: round(v['p(95)']),
    p99: round(v['p(99)']),
    max: round(v.max),
  };
}

// Request count, req/s, failure rate and latency for one scenario; needs a
// threshold on http_req_duration{scenario:NAME} so k6 keeps the sub-metric.
export function scenarioStats(data, scenario, activeSeconds) {
  const duration = data.metrics[`http_req_duration{scenario:${scenario}}`];
  const failed = data.metrics[`http_req_failed{scenario:${scenario}}`];
  const requests = duration ? duration.values.count : 0;
  const seconds = activeSeconds || data.state.testRunDurationMs / 1000;
  return {
    requests,
    rps: round(requests / seconds),
    failed_rate: failed ? round(failed.values.rate) : null,
    duration_ms: trendMs(duration),
  };
}

function counterValue(data, name) {
  const metric = data.metrics[name];
  return metric ? metric.values.count : 0;
}

function otherStatuses(data, counterNames) {
  const byCounter = {};
  for (const name of counterNames.filter((n) => n.endsWith('_other_status'))) {
    const statuses = {};
    for (const status of LIKELY_OTHER_STATUSES) {
      const count = counterValue(data, `${name}{status:${status}}`);
      if (count > 0) statuses[String(status)] = count;
    }
    byCounter[name] = statuses;
  }
  return byCounter;
}

function thresholdResults(data) {
  const results = {};
  for (const name of Object.keys(data.metrics).sort()) {
    for (const [expr, outcome] of Object.entries(data.metrics[name].thresholds || {})) {
      if (expr === NO_OP) continue;
      results[name] = results[name] || {};
      results[name][expr] = outcome.ok;
    }
  }
  return results;
}

function verdict(report) {
  if (!report.setup_ok) return 'ABORTED before the load started (see the error above)';
  return report.thresholds_ok ? 'all thresholds passed' : 'THRESHOLDS FAILED';
}

function summaryText(report, lines) {
  const fmt = (ms) => (ms === null ? '-' : `${ms}ms`);
  const out = [
    '',
    `${report.script}: ${verdict(report)} (${report.duration_s}s, summary in ${report.summary_file})`,
    `  http  ${report.http.requests} requests, ${report.http.rps}/s, ` +
      `failed ${(report.http.failed_rate * 100).toFixed(2)}%`,
  ];
  for (const [name, stats] of Object.entries(report.scenarios)) {
    const d = stats.duration_ms;
    out.push(
      `  ${name.padEnd(14)} ${String(stats.requests).padStart(7)} req ${String(stats.rps).padStart(9)}/s  ` +
        `avg ${fmt(d.avg)}  p95 ${fmt(d.p95)}  p99 ${fmt(d.p99)}  max ${fmt(d.max)}  failed ${stats.failed_rate}`,
    );
  }
  out.push(`  checks ${report.checks.passes} passed, ${report.checks.fails} failed`);
  for (const [name, count] of Object.entries(report.counters)) {
    const statuses = report.other_statuses[name];
    const detail = statuses && Object.keys(statuses).length > 0 ? ` ${JSON.stringify(statuses)}` : '';
    out.push(`  ${name.padEnd(26, '.')} ${count}${detail}`);
  }
  out.push(...lines);
  for (const [name, exprs] of Object.entries(report.thresholds)) {
    for (const [expr, ok] of Object.entries(exprs)) out.push(`  ${ok ? 'ok  ' : 'FAIL'} ${name} ${expr}`);
  }
  return `${out.join('\n')}\n\n`;
}

// handleSummary body for every script: writes the JSON report to SUMMARY_FILE
// (relative to the directory k6 runs in) and prints a short text summary.
export function summarize(data, { script, targets, config, counters, scenarios, extra = {}, lines = [] }) {
  const file = envString('SUMMARY_FILE', `${script}-summary.json`);
  const checks = data.metrics.checks ? data.metrics.checks.values : { passes: 0, fails: 0, rate: null };
  const thresholds = thresholdResults(data);
  const reqs = data.metrics.http_reqs;
  const failed = data.metrics.http_req_failed;
  const report = {
    script,
    generated_at: new Date().toISOString(),
    summary_file: file,
    targets,
    config,
    duration_s: round(data.state.testRunDurationMs / 1000),
    // Every setup() returns an object; none means it aborted (target down, no tokens...).
    setup_ok: data.setup_data !== undefined && data.setup_data !== null,
    thresholds_ok: Object.values(thresholds).every((exprs) => Object.values(exprs).every(Boolean)),
    thresholds,
    http: {
      requests: reqs ? reqs.values.count : 0,
      rps: reqs ? round(reqs.values.rate) : 0,
      failed_rate: failed ? round(failed.values.rate) : 0,
      duration_ms: trendMs(data.metrics.http_req_duration),
    },
    scenarios: Object.fromEntries(
      Object.entries(scenarios).map(([name, seconds]) => [name, scenarioStats(data, name, seconds)]),
    ),
    checks: { passes: checks.passes, fails: checks.fails, rate: round(checks.rate) },
    counters: Object.fromEntries(counters.map((name) => [name, counterValue(data, name)])),
    other_statuses: otherStatuses(data, counters),
    ...extra,
    metrics: data.metrics,
  };
  return {
    [file]: JSON.stringify(report, null, 2),
    stdout: summaryText(report, lines),
  };
}
