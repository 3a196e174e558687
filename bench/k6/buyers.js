// Buyers pressing Buy over and over, for the benchmark: losers after sell-out
// (VUS closed-loop users, no pause) or steady checkout (RATE buys a second),
// optionally beside a login storm of LOGIN_VUS users (the isolation scenario).
// The loadtest/ scripts cover the rest; this one reuses their library.
//
//   VUS=1000 DURATION=20s k6 run bench/k6/buyers.js
//   RATE=50 LOGIN_VUS=8 NEW_CONNECTIONS=1 DURATION=20s k6 run bench/k6/buyers.js
import exec from 'k6/execution';
import {
  CHECKS_RATE,
  LOGIN_COUNTERS,
  ORDER_COUNTERS,
  SETUP_TIMEOUT,
  SUMMARY_TREND_STATS,
  URLS,
  buy,
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
  summarize,
} from '../../loadtest/lib/common.js';

const VUS = envInt('VUS', 100);
// 0: closed loop (VUS users, each buys again as soon as answered); >0: open
// loop, RATE buys a second whatever the latency, so p95 measures the answer
// and not the queue the users themselves build.
const RATE = envInt('RATE', 0, 0);
const LOGIN_VUS = envInt('LOGIN_VUS', 0, 0);
// 1: a new connection for every request. k6 keeps each VU's connection, so a
// login VU stays on the gunicorn worker it first reached; in front of a pod
// the queue-proxy spreads every kind of request over the workers instead.
const NEW_CONNECTIONS = envInt('NEW_CONNECTIONS', 0, 0) === 1;
const DURATION = envDuration('DURATION', '20s');
const ERROR_RATE = envNumber('ERROR_RATE', 0.01);

const tokens = loadTokens();
const users = LOGIN_VUS > 0 ? loadUsers() : [];

const buyers = RATE > 0
  ? {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION.text,
      preAllocatedVUs: VUS,
      maxVUs: VUS,
      exec: 'pressBuy',
    }
  : { executor: 'constant-vus', vus: VUS, duration: DURATION.text, exec: 'pressBuy' };

const scenarios = { buyers };
const thresholds = {
  'http_req_failed{scenario:buyers}': [`rate<${ERROR_RATE}`],
  'http_req_duration{scenario:buyers}': ['p(99)>=0'], // keeps the sub-metric in the summary
  checks: [`rate>=${CHECKS_RATE}`],
  ...otherStatusThresholds('orders_other_status'),
};
if (LOGIN_VUS > 0) {
  scenarios.login_storm = { executor: 'constant-vus', vus: LOGIN_VUS, duration: DURATION.text, exec: 'logIn' };
  thresholds['http_req_failed{scenario:login_storm}'] = [`rate<${ERROR_RATE}`];
  thresholds['http_req_duration{scenario:login_storm}'] = ['p(99)>=0'];
  Object.assign(thresholds, otherStatusThresholds('logins_other_status'));
}

export const options = {
  scenarios,
  thresholds,
  noConnectionReuse: NEW_CONNECTIONS,
  setupTimeout: SETUP_TIMEOUT,
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  checkTargets(LOGIN_VUS > 0 ? { order: URLS.order, auth: URLS.auth } : { order: URLS.order });
  checkTokens(tokens, 1);
  if (LOGIN_VUS > 0) checkUsers(users);
  return { runId: newRunId() };
}

// Tokens in turn: with a per-user limit of 1 each buyer's first press can
// confirm; once the sale is sold out every press is a loser's 409.
export function pressBuy({ runId }) {
  const n = exec.scenario.iterationInTest;
  buy(tokens[n % tokens.length].access_token, { idempotencyKey: idempotencyKey(runId, n) });
}

export function logIn() {
  login(users[exec.scenario.iterationInTest % users.length]);
}

export function handleSummary(data) {
  const names = Object.keys(scenarios);
  return summarize(data, {
    script: 'buyers',
    targets: LOGIN_VUS > 0 ? { order: URLS.order, auth: URLS.auth } : { order: URLS.order },
    config: { VUS, RATE, LOGIN_VUS, NEW_CONNECTIONS, DURATION: DURATION.text, ERROR_RATE, CHECKS_RATE },
    counters: LOGIN_VUS > 0 ? [...ORDER_COUNTERS, ...LOGIN_COUNTERS] : ORDER_COUNTERS,
    scenarios: Object.fromEntries(names.map((name) => [name, DURATION.seconds])),
  });
}
