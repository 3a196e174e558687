// The crowd: BUYERS users, each with their own token, press Buy once at the
// same instant. Every answer must be 201 or 409 (sold_out / limit_reached);
// the summary compares confirmed units with the stock seen before the rush.
//
//   k6 run loadtest/flash-sale.js
//   BUYERS=50 DURATION=... k6 run loadtest/flash-sale.js   (see loadtest/README.md)
import exec from 'k6/execution';
import { sleep } from 'k6';
import {
  CHECKS_RATE,
  ORDER_COUNTERS,
  QUANTITY,
  SKU,
  SETUP_TIMEOUT,
  SUMMARY_TREND_STATS,
  URLS,
  buy,
  checkSale,
  checkTargets,
  checkTokens,
  envDuration,
  envInt,
  envNumber,
  idempotencyKey,
  loadTokens,
  metrics,
  newRunId,
  otherStatusThresholds,
  summarize,
} from './lib/common.js';

const BUYERS = envInt('BUYERS', 10000);
const P99_MS = envNumber('P99_MS', 10000);
// Time between setup() and the Buy press; every VU is already initialised
// before setup() runs, so this only has to cover scheduling the iterations.
const START_DELAY = envDuration('START_DELAY', '3s');
const MAX_DURATION = envDuration('MAX_DURATION', '2m');

const tokens = loadTokens();

export const options = {
  scenarios: {
    crowd: {
      executor: 'per-vu-iterations',
      vus: BUYERS,
      iterations: 1,
      maxDuration: MAX_DURATION.text,
      exec: 'pressBuy',
    },
  },
  thresholds: {
    // Only Buy requests carry the 201/409 response callback; a 5xx or a
    // timeout anywhere fails the run.
    http_req_failed: ['rate==0'],
    'http_req_failed{scenario:crowd}': ['rate==0'],
    'http_req_duration{scenario:crowd}': [`p(99)<${P99_MS}`],
    checks: [`rate>=${CHECKS_RATE}`],
    orders_other_status: ['count==0'],
    ...otherStatusThresholds('orders_other_status'),
  },
  setupTimeout: SETUP_TIMEOUT,
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  checkTargets({ stock: URLS.stock, order: URLS.order });
  checkTokens(tokens, BUYERS);
  const sale = checkSale(SKU);
  if (sale.available === 0) console.warn(`SKU=${SKU} is already sold out: every buyer should get 409 sold_out`);
  return { runId: newRunId(), startAt: Date.now() + START_DELAY.seconds * 1000, saleBefore: sale };
}

export function pressBuy({ runId, startAt }) {
  // Start barrier: everyone waits for the same wall-clock instant.
  const wait = startAt - Date.now();
  if (wait > 0) sleep(wait / 1000);
  metrics.crowdStartLag.add(Math.max(0, Date.now() - startAt));

  const buyer = exec.vu.idInTest; // 1..BUYERS in this single-scenario test
  buy(tokens[buyer - 1].access_token, { idempotencyKey: idempotencyKey(runId, buyer) });
  metrics.crowdAnsweredAfter.add(Date.now() - startAt);
}

function trendValue(data, name, stat) {
  const metric = data.metrics[name];
  return metric && typeof metric.values[stat] === 'number' ? Math.round(metric.values[stat]) : null;
}

export function handleSummary(data) {
  const before = data.setup_data ? data.setup_data.saleBefore : null;
  const unitsConfirmed = data.metrics.units_confirmed ? data.metrics.units_confirmed.values.count : 0;
  const sale = {
    sku: SKU,
    before,
    units_confirmed: unitsConfirmed,
    // Exact only when nothing else buys this SKU during the run.
    oversold: before ? unitsConfirmed > before.available : null,
  };
  const allAnsweredMs = trendValue(data, 'crowd_answered_after', 'max');
  const crowd = {
    start_lag_ms: {
      med: trendValue(data, 'crowd_start_lag', 'med'),
      p99: trendValue(data, 'crowd_start_lag', 'p(99)'),
      max: trendValue(data, 'crowd_start_lag', 'max'),
    },
    // From the common start instant until the last buyer had an answer.
    all_answered_ms: allAnsweredMs,
  };
  return summarize(data, {
    script: 'flash-sale',
    targets: { stock: URLS.stock, order: URLS.order },
    config: {
      BUYERS,
      QUANTITY,
      SKU,
      P99_MS,
      CHECKS_RATE,
      START_DELAY: START_DELAY.text,
      MAX_DURATION: MAX_DURATION.text,
    },
    counters: ORDER_COUNTERS,
    // req/s of the crowd over the time it took to answer everyone.
    scenarios: { crowd: allAnsweredMs ? allAnsweredMs / 1000 : undefined },
    extra: { sale, crowd },
    lines: [
      before
        ? `  sale ${SKU}: ${before.available} available before, ${unitsConfirmed} units confirmed` +
          (sale.oversold ? '  OVERSOLD' : '')
        : `  sale ${SKU}: setup did not finish`,
      `  crowd: start lag p99 ${crowd.start_lag_ms.p99 ?? '-'}ms, everyone answered after ${allAnsweredMs ?? '-'}ms`,
    ],
  });
}
