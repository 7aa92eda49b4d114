// Sustained load: a running worker whose bench_timed jobs record how long
// after the producer sent them they started (payload.t, microseconds since
// the epoch), by ladder step (payload.s). Says "ready" once running; on a
// line of standard input it stops and reports each step's percentiles.
main(async () => {
  const nextLine = stdinLines();
  const steps = new Map();
  const runner = await gw.run(workerOptions(process.env.BENCH_MODE), {
    bench_timed: async (payload) => {
      const ms = (nowUs() - payload.t) / 1000;
      let list = steps.get(payload.s);
      if (!list) steps.set(payload.s, (list = []));
      list.push(ms);
    },
  });
  process.stdout.write("ready\n");
  await nextLine();
  await runner.stop();
  const summary = [...steps].map(([step, list]) => ({ step, count: list.length, ...percentiles(list) }));
  report({ steps: summary, max_rss_kb: maxRssKb(), cpu_ms: cpuMs() });
});
