// The seed matrix: VUS concurrent users on each function in turn (auth login,
// then stock read, then order), one scenario after the other, so each
// function's req/s and average latency can be set beside the figures of the
// original write-up ("reference" in the summary).
//
//   k6 run loadtest/seed-matrix.js
//   VUS=5 DURATION=3s GAP=1s THINK_TIME=0 k6 run loadtest/seed-matrix.js
import exec from 'k6/execution';
import { sleep } from 'k6';
import {
  CHECKS_RATE,
  LOGIN_COUNTERS,
  ORDER_COUNTERS,
  SKU,
  STOCK_COUNTERS,
  SETUP_TIMEOUT,
  SUMMARY_TREND_STATS,
  URLS,
  buy,
  checkSale,
  checkTargets,
  checkTokens,
  checkUsers,
  envDuration,
  envInt,
  envNumber,
  idempotencyKey,
  loadTokens,
  loadUsers,
  login,
  newRunId,
  otherStatusThresholds,
  readStock,
  scenarioStats,
  summarize,
} from './lib/common.js';

// Figures from the original write-up, 200 concurrent users per function.
const REFERENCE = {
  auth: { rps: 46, avg_ms: 513 },
  stock: { rps: 69, avg_ms: 10 },
  order: { rps: 61, avg_ms: 137 },
};

const VUS = envInt('VUS', 200);
const DURATION = envDuration('DURATION', '20s');
// 200 users at 69 req/s and 10 ms is ~2.9 s per iteration: the reference
// runs paused about 3 s between requests. Keep 3 s to compare like with like.
const THINK_TIME = envNumber('THINK_TIME', 3);
// Pause between functions; also the graceful stop, so the requests of one
// function never overlap the next.
const GAP = envDuration('GAP', '5s');
const ERROR_RATE = envNumber('ERROR_RATE', 0.01);
const P99_MS = envNumber('P99_MS', 10000);

const users = loadUsers();
const tokens = loadTokens();

const FUNCTIONS = [
  { name: 'auth', scenario: 'auth_login', exec: 'logIn' },
  { name: 'stock', scenario: 'stock_read', exec: 'pollStock' },
  { name: 'order', scenario: 'order_buy', exec: 'pressBuy' },
];

const thresholds = { checks: [`rate>=${CHECKS_RATE}`] };
const scenarios = {};
FUNCTIONS.forEach(({ scenario, exec: fn }, i) => {
  scenarios[scenario] = {
    executor: 'constant-vus',
    vus: VUS,
    duration: DURATION.text,
    startTime: `${i * (DURATION.seconds + GAP.seconds)}s`,
    gracefulStop: GAP.text,
    exec: fn,
  };
  thresholds[`http_req_failed{scenario:${scenario}}`] = [`rate<${ERROR_RATE}`];
  thresholds[`http_req_duration{scenario:${scenario}}`] = [`p(99)<${P99_MS}`];
});

export const options = {
  scenarios,
  thresholds: {
    ...thresholds,
    ...otherStatusThresholds('logins_other_status', 'stock_reads_other_status', 'orders_other_status'),
  },
  setupTimeout: SETUP_TIMEOUT,
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  checkTargets(URLS);
  checkUsers(users);
  checkTokens(tokens, 1);
  return { runId: newRunId(), saleBefore: checkSale(SKU) };
}

function thinkTime() {
  if (THINK_TIME > 0) sleep(THINK_TIME);
}

export function logIn() {
  login(users[exec.scenario.iterationInTest % users.length]);
  thinkTime();
}

export function pollStock() {
  readStock(SKU);
  thinkTime();
}

export function pressBuy({ runId }) {
  const n = exec.scenario.iterationInTest;
  buy(tokens[n % tokens.length].access_token, { idempotencyKey: idempotencyKey(runId, n) });
  thinkTime();
}

function ratio(measured, reference) {
  return measured === null ? null : Math.round((measured / reference) * 100) / 100;
}

function compare(data) {
  const functions = {};
  for (const { name, scenario } of FUNCTIONS) {
    // req/s over the scenario's DURATION: requests started while it ran.
    const stats = scenarioStats(data, scenario, DURATION.seconds);
    const ref = REFERENCE[name];
    functions[name] = {
      scenario,
      requests: stats.requests,
      rps: stats.rps,
      avg_ms: stats.duration_ms.avg,
      p95_ms: stats.duration_ms.p95,
      p99_ms: stats.duration_ms.p99,
      failed_rate: stats.failed_rate,
      rps_vs_reference: ratio(stats.rps, ref.rps),
      avg_vs_reference: ratio(stats.duration_ms.avg, ref.avg_ms),
    };
  }
  return functions;
}

export function handleSummary(data) {
  const functions = compare(data);
  const lines = ['  function      req/s (reference)      avg ms (reference)'];
  for (const [name, f] of Object.entries(functions)) {
    const ref = REFERENCE[name];
    lines.push(
      `  ${name.padEnd(8)} ${String(f.rps).padStart(10)} (${String(ref.rps).padStart(4)})` +
        `   ${String(f.avg_ms === null ? '-' : f.avg_ms).padStart(12)} (${String(ref.avg_ms).padStart(4)})`,
    );
  }
  return summarize(data, {
    script: 'seed-matrix',
    targets: URLS,
    config: { VUS, DURATION: DURATION.text, GAP: GAP.text, THINK_TIME, SKU, ERROR_RATE, P99_MS, CHECKS_RATE },
    counters: [...LOGIN_COUNTERS, ...STOCK_COUNTERS, ...ORDER_COUNTERS],
    scenarios: Object.fromEntries(FUNCTIONS.map(({ scenario }) => [scenario, DURATION.seconds])),
    extra: { functions, reference: REFERENCE },
    lines,
  });
}
