// Everyone logs in at once. The auth function must answer each attempt with
// 200 (token) or 429 (rate limited, with Retry-After); anything else fails.
// Credentials cycle through USERS_FILE so no single account dominates.
//
//   k6 run loadtest/login-storm.js
//   VUS=5 DURATION=3s k6 run loadtest/login-storm.js
import exec from 'k6/execution';
import { sleep } from 'k6';
import {
  CHECKS_RATE,
  LOGIN_COUNTERS,
  SETUP_TIMEOUT,
  SUMMARY_TREND_STATS,
  URLS,
  checkTargets,
  checkUsers,
  envDuration,
  envInt,
  envNumber,
  loadUsers,
  login,
  otherStatusThresholds,
  summarize,
} from './lib/common.js';

const VUS = envInt('VUS', 50);
const DURATION = envDuration('DURATION', '30s');
const THINK_TIME = envNumber('THINK_TIME', 0);
const ERROR_RATE = envNumber('ERROR_RATE', 0.01);
const P95_MS = envNumber('P95_MS', 3000);
const P99_MS = envNumber('P99_MS', 5000);

const users = loadUsers();

export const options = {
  scenarios: {
    login_storm: {
      executor: 'constant-vus',
      vus: VUS,
      duration: DURATION.text,
      exec: 'logIn',
    },
  },
  thresholds: {
    'http_req_failed{scenario:login_storm}': [`rate<${ERROR_RATE}`],
    'http_req_duration{scenario:login_storm}': [`p(95)<${P95_MS}`, `p(99)<${P99_MS}`],
    checks: [`rate>=${CHECKS_RATE}`],
    // A limiter that turns every attempt away would pass the rest.
    logins_ok: ['count>0'],
    ...otherStatusThresholds('logins_other_status'),
  },
  setupTimeout: SETUP_TIMEOUT,
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  checkTargets({ auth: URLS.auth });
  checkUsers(users);
  return { users: users.length };
}

export function logIn() {
  login(users[exec.scenario.iterationInTest % users.length]);
  if (THINK_TIME > 0) sleep(THINK_TIME);
}

export function handleSummary(data) {
  return summarize(data, {
    script: 'login-storm',
    targets: { auth: URLS.auth },
    config: { VUS, DURATION: DURATION.text, USERS: users.length, THINK_TIME, ERROR_RATE, P95_MS, P99_MS, CHECKS_RATE },
    counters: LOGIN_COUNTERS,
    scenarios: { login_storm: DURATION.seconds },
  });
}
