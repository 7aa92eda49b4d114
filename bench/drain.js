// Drain: runOnce over the jobs already queued, timed inside this process
// (start-up included, as on the Rust side; Node's process start-up not).
main(async () => {
  const options = workerOptions(process.env.BENCH_MODE);
  const start = process.hrtime.bigint();
  await gw.runOnce(options, { bench_noop: async () => {} });
  report({ ms: msSince(start) });
});
