// Latency from addJob to task start: an in-process runner, and jobs added
// one at a time through a separate WorkerUtils (its own pool). Each sample
// runs from just before the addJob call to the first line of the task.
main(async () => {
  const warmup = envInt("BENCH_WARMUP");
  const samples = envInt("BENCH_SAMPLES");
  let waiting = null;
  const runner = await gw.run(workerOptions(process.env.BENCH_MODE), {
    bench_latency: async () => {
      const started = process.hrtime.bigint();
      if (waiting) waiting(started);
    },
  });
  const utils = await gw.makeWorkerUtils({
    connectionString: process.env.DATABASE_URL,
    schema: process.env.GRAPHILE_WORKER_SCHEMA,
    logger: silent,
  });
  const measured = [];
  for (let i = 0; i < warmup + samples; i++) {
    const started = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`job ${i} did not start within 10 s`)), 10000);
      waiting = (t) => {
        clearTimeout(timer);
        resolve(t);
      };
    });
    const before = process.hrtime.bigint();
    await utils.addJob("bench_latency", { id: i });
    const at = await started;
    if (i >= warmup) measured.push(Number(at - before) / 1e6);
  }
  waiting = null;
  await utils.release();
  await runner.stop();
  report({ samples_ms: measured });
});
