// Presses through the ingress gateway, each one classified: Buy (ACTION=buy) or
// log in (ACTION=login). Run with --local-ips so the buyers come from many
// addresses; the rehearsal (python -m rehearsal.run) starts it.
//
//   BUYERS=1000 AT_ONCE=1 k6 run --local-ips 127.1.0.1-127.1.39.254 rehearsal/k6/presses.js
//   BUYERS=2000 RATE=400 ...                    (arrivals spread over BUYERS/RATE seconds)
//
// A careful client: on a 5xx or no answer it presses again with the same
// Idempotency-Key (after Retry-After, at most 1 s), up to ATTEMPTS presses. Every
// press is counted in one class: 201, 409, 200, 401, 429, 503 with Retry-After,
// 503 without (a proxy's own), another status, or no answer at all.
import http from 'k6/http';
import exec from 'k6/execution';
import { sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import {
  SETUP_TIMEOUT,
  SUMMARY_TREND_STATS,
  envDuration,
  envInt,
  envString,
  idempotencyKey,
  loadTokens,
  loadUsers,
  newRunId,
} from '../../loadtest/lib/common.js';

const ACTION = envString('ACTION', 'buy');
const BUYERS = envInt('BUYERS', 1000);
const FIRST = envInt('FIRST', 0, 0); // index of this run's first token or user in the file
const RATE = envInt('RATE', 0, 0); // 0: everyone at once (AT_ONCE) after START_DELAY
const ATTEMPTS = envInt('ATTEMPTS', 3);
const INGRESS_URL = envString('INGRESS_URL', 'http://127.0.0.10:8080').replace(/\/+$/, '');
const HOST = envString('HOST', ACTION === 'buy' ? 'order.rehearsal' : 'auth.rehearsal');
const SKU = envString('SKU', 'iphone-17');
const START_DELAY = envDuration('START_DELAY', '5s');
const REQUEST_TIMEOUT = envDuration('REQUEST_TIMEOUT', '60s').text;
const PODS = envString('PODS', '').split(',').filter(Boolean);

const people = ACTION === 'buy' ? loadTokens() : loadUsers();

const CLASSES = ['200', '201', '401', '409', '429', '503_retry_after', '503_proxy', '502', 'other', 'no_answer'];
const counters = Object.fromEntries(CLASSES.map((c) => [c, new Counter(`press_${c}`)]));
const wrong = new Counter('press_wrong'); // an answer of the right status with the wrong body
const answeredMs = new Trend('press_answered_ms', true); // answered presses' latency
const answeredAt = new Trend('press_answered_at', true); // ms from the common start to each answer
const podAnswers = Object.fromEntries(PODS.map((p) => [p, new Counter(`pod_${p.replace(/-/g, '_')}`)]));
const podWrong = Object.fromEntries(PODS.map((p) => [p, new Counter(`pod_${p.replace(/-/g, '_')}_wrong`)]));
const otherStatus = new Counter('press_other_status');

const crowd = RATE > 0
  ? {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: `${Math.ceil(BUYERS / RATE)}s`,
      preAllocatedVUs: Math.min(BUYERS, RATE * 4),
      maxVUs: Math.min(BUYERS, RATE * 20),
      startTime: START_DELAY.text,
      exec: 'press',
    }
  : { executor: 'per-vu-iterations', vus: BUYERS, iterations: 1, maxDuration: '5m', exec: 'press' };

export const options = {
  scenarios: { crowd },
  setupTimeout: SETUP_TIMEOUT,
  summaryTrendStats: SUMMARY_TREND_STATS,
  // Every press its own connection: a crowd of people, not a few browsers reusing theirs.
  noConnectionReuse: true,
  thresholds: { press_answered_ms: ['p(99)>=0'] },
};

export function setup() {
  if (people.length < FIRST + BUYERS) exec.test.abort(`${people.length} tokens or users for ${FIRST + BUYERS} presses`);
  const startAt = Date.now() + (RATE > 0 ? START_DELAY.seconds * 1000 : START_DELAY.seconds * 1000);
  return { runId: newRunId(), startAt };
}

function hasHeader(res, name) {
  return Object.keys(res.headers).some((h) => h.toLowerCase() === name.toLowerCase());
}

function jsonBody(res) {
  try {
    return res.json();
  } catch (_) {
    return null;
  }
}

// The press's class, and whether its body is what its status promises.
function classify(res) {
  const status = res.status;
  if (status === 0) return ['no_answer', true];
  const body = jsonBody(res) || {};
  if (status === 201) return ['201', body.status === 'confirmed' && Boolean(body.order_id) && Number.isInteger(body.ticket)];
  if (status === 200) return ['200', ACTION !== 'login' || Boolean(body.access_token)];
  if (status === 409) return ['409', ['sold_out', 'limit_reached'].includes(body.code)];
  if (status === 401) return ['401', body.code === 'invalid_credentials'];
  if (status === 429) return ['429', hasHeader(res, 'Retry-After')];
  // A proxy's own 503 (a refused connection, a full breaker) carries no Retry-After; the function's does.
  if (status === 503) return [hasHeader(res, 'Retry-After') ? '503_retry_after' : '503_proxy', true];
  // HAProxy's 502: the pod closed or reset the connection without an answer (queue-proxy would say 502 too).
  if (status === 502) return ['502', true];
  return ['other', false];
}

function send(n, runId) {
  if (ACTION === 'login') {
    const user = people[FIRST + n];
    return http.post(`${INGRESS_URL}/login`, JSON.stringify({ email: user.email, password: user.password }), {
      headers: { Host: HOST, 'Content-Type': 'application/json' },
      timeout: REQUEST_TIMEOUT,
      responseCallback: http.expectedStatuses(200, 401, 429),
    });
  }
  return http.post(`${INGRESS_URL}/orders`, JSON.stringify({ sku: SKU, quantity: 1 }), {
    headers: {
      Host: HOST,
      'Content-Type': 'application/json',
      Authorization: `Bearer ${people[FIRST + n].access_token}`,
      'Idempotency-Key': idempotencyKey(runId, FIRST + n),
    },
    timeout: REQUEST_TIMEOUT,
    responseCallback: http.expectedStatuses(201, 409),
  });
}

export function press({ runId, startAt }) {
  let n;
  if (RATE > 0) {
    n = exec.scenario.iterationInTest;
    if (n >= BUYERS) return;
  } else {
    n = exec.vu.idInTest - 1;
    const wait = startAt - Date.now();
    if (wait > 0) sleep(wait / 1000);
  }
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const res = send(n, runId);
    const [kind, right] = classify(res);
    counters[kind].add(1);
    if (kind === 'other') otherStatus.add(1, { status: String(res.status) });
    if (!right) wrong.add(1);
    if (res.status !== 0) {
      answeredMs.add(res.timings.duration);
      answeredAt.add(Date.now() - startAt);
    }
    const pod = res.headers['X-Rehearsal-Pod'];
    if (pod && podAnswers[pod]) {
      podAnswers[pod].add(1);
      if (!right || res.status >= 500) podWrong[pod].add(1);
    }
    if (res.status !== 0 && res.status < 500) return;
    const retryAfter = Number(res.headers['Retry-After'] || 0);
    sleep(Math.min(Number.isFinite(retryAfter) ? retryAfter : 0, 1) || 0.2);
  }
}

function count(data, name) {
  const metric = data.metrics[name];
  return metric ? metric.values.count : 0;
}

function trend(data, name) {
  const v = (data.metrics[name] || { values: {} }).values;
  const pick = (key) => (typeof v[key] === 'number' ? Math.round(v[key] * 100) / 100 : null);
  return { med: pick('med'), p95: pick('p(95)'), p99: pick('p(99)'), max: pick('max'), count: v.count || 0 };
}

export function handleSummary(data) {
  const classes = Object.fromEntries(CLASSES.map((c) => [c, count(data, `press_${c}`)]));
  const pods = Object.fromEntries(
    PODS.map((p) => [p, { answers: count(data, `pod_${p.replace(/-/g, '_')}`), wrong: count(data, `pod_${p.replace(/-/g, '_')}_wrong`) }]),
  );
  const summary = {
    action: ACTION,
    host: HOST,
    buyers: BUYERS,
    rate: RATE,
    classes,
    wrong: count(data, 'press_wrong'),
    answered_ms: trend(data, 'press_answered_ms'),
    answered_at_ms: trend(data, 'press_answered_at'),
    pods,
    setup_ok: Boolean(data.setup_data),
  };
  return {
    [envString('SUMMARY_FILE', 'presses-summary.json')]: JSON.stringify(summary, null, 2),
    stdout: `${ACTION} ${HOST}: ${JSON.stringify(classes)}\n`,
  };
}
