// Many readers polling the stock counter of one sale, as shoppers do while
// they wait for the sale to open. Every read must be a 200 with a body.
//
//   k6 run loadtest/stock-check.js
//   VUS=5 DURATION=3s k6 run loadtest/stock-check.js
import { sleep } from 'k6';
import {
  CHECKS_RATE,
  SKU,
  STOCK_COUNTERS,
  SETUP_TIMEOUT,
  SUMMARY_TREND_STATS,
  URLS,
  checkSale,
  checkTargets,
  envDuration,
  envInt,
  envNumber,
  otherStatusThresholds,
  readStock,
  summarize,
} from './lib/common.js';

const VUS = envInt('VUS', 200);
const DURATION = envDuration('DURATION', '30s');
const THINK_TIME = envNumber('THINK_TIME', 0);
const ERROR_RATE = envNumber('ERROR_RATE', 0.01);
const P95_MS = envNumber('P95_MS', 250);
const P99_MS = envNumber('P99_MS', 500);

export const options = {
  scenarios: {
    stock_reads: {
      executor: 'constant-vus',
      vus: VUS,
      duration: DURATION.text,
      exec: 'pollStock',
    },
  },
  thresholds: {
    'http_req_failed{scenario:stock_reads}': [`rate<${ERROR_RATE}`],
    'http_req_duration{scenario:stock_reads}': [`p(95)<${P95_MS}`, `p(99)<${P99_MS}`],
    checks: [`rate>=${CHECKS_RATE}`],
    ...otherStatusThresholds('stock_reads_other_status'),
  },
  setupTimeout: SETUP_TIMEOUT,
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  checkTargets({ stock: URLS.stock });
  return { saleBefore: checkSale(SKU) };
}

export function pollStock() {
  readStock(SKU);
  if (THINK_TIME > 0) sleep(THINK_TIME);
}

export function handleSummary(data) {
  return summarize(data, {
    script: 'stock-check',
    targets: { stock: URLS.stock },
    config: { VUS, DURATION: DURATION.text, SKU, THINK_TIME, ERROR_RATE, P95_MS, P99_MS, CHECKS_RATE },
    counters: STOCK_COUNTERS,
    scenarios: { stock_reads: DURATION.seconds },
  });
}
