// Sale day all at once: a login storm on auth, buyers pressing Buy on order
// and shoppers polling stock, side by side. Each request carries k6's
// `scenario` tag, so every function gets its own thresholds.
//
//   k6 run loadtest/mixed.js
//   VUS=5 DURATION=3s k6 run loadtest/mixed.js
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
  summarize,
} from './lib/common.js';

// VUS, when set, sizes all three scenarios; the specific knobs win over it.
const LOGIN_VUS = envInt('LOGIN_VUS', __ENV.VUS || 20);
const BUYER_VUS = envInt('BUYER_VUS', __ENV.VUS || 50);
const STOCK_VUS = envInt('STOCK_VUS', __ENV.VUS || 50);
const DURATION = envDuration('DURATION', '30s');
const THINK_TIME = envNumber('THINK_TIME', 0);
const ERROR_RATE = envNumber('ERROR_RATE', 0.01);
const LOGIN_P95_MS = envNumber('LOGIN_P95_MS', 3000);
const BUY_P95_MS = envNumber('BUY_P95_MS', 1000);
const STOCK_P95_MS = envNumber('STOCK_P95_MS', 250);

const users = loadUsers();
const tokens = loadTokens();

function constantVus(vus, exec) {
  return { executor: 'constant-vus', vus, duration: DURATION.text, exec };
}

export const options = {
  scenarios: {
    login_storm: constantVus(LOGIN_VUS, 'logIn'),
    buyers: constantVus(BUYER_VUS, 'pressBuy'),
    stock_reads: constantVus(STOCK_VUS, 'pollStock'),
  },
  thresholds: {
    'http_req_failed{scenario:login_storm}': [`rate<${ERROR_RATE}`],
    'http_req_failed{scenario:buyers}': [`rate<${ERROR_RATE}`],
    'http_req_failed{scenario:stock_reads}': [`rate<${ERROR_RATE}`],
    'http_req_duration{scenario:login_storm}': [`p(95)<${LOGIN_P95_MS}`],
    'http_req_duration{scenario:buyers}': [`p(95)<${BUY_P95_MS}`],
    'http_req_duration{scenario:stock_reads}': [`p(95)<${STOCK_P95_MS}`],
    checks: [`rate>=${CHECKS_RATE}`],
    ...otherStatusThresholds('logins_other_status', 'orders_other_status', 'stock_reads_other_status'),
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

// Buyers cycle through the tokens; after each user's first order the
// per-user limit answers 409 limit_reached, and after the stock 409 sold_out.
export function pressBuy({ runId }) {
  const n = exec.scenario.iterationInTest;
  buy(tokens[n % tokens.length].access_token, { idempotencyKey: idempotencyKey(runId, n) });
  thinkTime();
}

export function pollStock() {
  readStock(SKU);
  thinkTime();
}

export function handleSummary(data) {
  return summarize(data, {
    script: 'mixed',
    targets: URLS,
    config: {
      LOGIN_VUS,
      BUYER_VUS,
      STOCK_VUS,
      DURATION: DURATION.text,
      SKU,
      THINK_TIME,
      ERROR_RATE,
      LOGIN_P95_MS,
      BUY_P95_MS,
      STOCK_P95_MS,
      CHECKS_RATE,
    },
    counters: [...LOGIN_COUNTERS, ...ORDER_COUNTERS, ...STOCK_COUNTERS],
    scenarios: { login_storm: DURATION.seconds, buyers: DURATION.seconds, stock_reads: DURATION.seconds },
    extra: { sale: { sku: SKU, before: data.setup_data ? data.setup_data.saleBefore : null } },
  });
}
