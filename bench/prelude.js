// Shared by the benchmark's Node scripts: examples/bench.rs puts this in
// front of each of them. Node graphile-worker 0.18 with its batching on
// ("batched": the settings behind its published figures) or off
// ("unbatched": its defaults), both at concurrency 24.
const gw = require("graphile-worker");

const silent = new gw.Logger(() => () => {});

function workerOptions(mode) {
  const base = {
    connectionString: process.env.DATABASE_URL,
    schema: process.env.GRAPHILE_WORKER_SCHEMA,
    concurrency: 24,
    logger: silent,
    noHandleSignals: true,
  };
  switch (mode) {
    case "batched":
      return {
        ...base,
        maxPoolSize: 25,
        preset: {
          worker: {
            localQueue: { size: 500, refetchDelay: { durationMs: 10 } },
            completeJobBatchDelay: 0,
            failJobBatchDelay: 0,
          },
        },
      };
    case "unbatched":
      return base;
    default:
      throw new Error(`BENCH_MODE must be batched or unbatched, not ${mode}`);
  }
}

function envInt(name) {
  const value = Number.parseInt(process.env[name] ?? "", 10);
  if (!Number.isFinite(value)) throw new Error(`${name} must be an integer`);
  return value;
}

// Milliseconds since `start` (a process.hrtime.bigint() reading).
function msSince(start) {
  return Number(process.hrtime.bigint() - start) / 1e6;
}

// Microseconds since the Unix epoch: the clock the Rust side stamps jobs with.
function nowUs() {
  return (performance.timeOrigin + performance.now()) * 1000;
}

// Peak resident set of this process, in kilobytes.
function maxRssKb() {
  return process.resourceUsage().maxRSS;
}

// CPU time this process has used, user and system, in milliseconds.
function cpuMs() {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

// Lines of standard input, one per call (the Rust side's go and stop).
function stdinLines() {
  const lines = require("readline").createInterface({ input: process.stdin });
  const iterator = lines[Symbol.asyncIterator]();
  return async () => (await iterator.next()).value;
}

// Nearest-rank p50, p99 and max of a list of numbers, as the Rust side
// computes them.
function percentiles(values) {
  const sorted = Float64Array.from(values).sort();
  const rank = (p) => sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)];
  return { p50: rank(0.5), p99: rank(0.99), max: sorted[sorted.length - 1] };
}

// The Rust side reads the last line of standard output as JSON.
function report(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
}

function main(body) {
  body().then(
    () => process.exit(0),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
