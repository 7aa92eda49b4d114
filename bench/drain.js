// Drain: runOnce over the jobs already queued, timed inside this process
// (start-up included, as on the Rust side; Node's process start-up not).
// With BENCH_BARRIER set it says "ready" and waits for a line on standard
// input first, so that several processes begin together.
main(async () => {
  const options = workerOptions(process.env.BENCH_MODE);
  if (process.env.BENCH_BARRIER) {
    const nextLine = stdinLines();
    process.stdout.write("ready\n");
    await nextLine();
  }
  const startUs = nowUs();
  const start = process.hrtime.bigint();
  await gw.runOnce(options, { bench_noop: async () => {} });
  report({ ms: msSince(start), start_us: startUs, end_us: nowUs(), max_rss_kb: maxRssKb(), cpu_ms: cpuMs() });
});
