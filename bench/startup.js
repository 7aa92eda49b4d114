// Start-up plus shutdown: runOnce on an empty queue with the migrations
// already applied. Timed inside this process, so Node's own start-up and
// module loading are not counted.
main(async () => {
  const options = workerOptions(process.env.BENCH_MODE);
  const start = process.hrtime.bigint();
  await gw.runOnce(options, { bench_noop: async () => {} });
  report({ ms: msSince(start) });
});
