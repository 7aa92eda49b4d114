// Bulk enqueue: one addJobs call for BENCH_JOBS jobs, timed around the call
// (the specs are built and the pool connected beforehand).
main(async () => {
  const jobs = envInt("BENCH_JOBS");
  const utils = await gw.makeWorkerUtils({
    connectionString: process.env.DATABASE_URL,
    schema: process.env.GRAPHILE_WORKER_SCHEMA,
    logger: silent,
  });
  const specs = [];
  for (let id = 0; id < jobs; id++) specs.push({ identifier: "bench_noop", payload: { id } });
  const start = process.hrtime.bigint();
  const added = await utils.addJobs(specs);
  const ms = msSince(start);
  await utils.release();
  if (added.length !== jobs) throw new Error(`addJobs returned ${added.length} jobs`);
  report({ ms });
});
