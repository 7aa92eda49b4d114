-- Migration 13: job_spec.max_attempts and job_spec.priority become
-- smallint, like the jobs columns, and add_job and reschedule_jobs take
-- smallint arguments (migration 14 goes back to integer arguments).
--
-- Schema facts follow graphile-worker (MIT licence, Copyright (c) Benjie
-- Gillam).

alter type :GRAPHILE_WORKER_SCHEMA.job_spec alter attribute max_attempts type smallint;
alter type :GRAPHILE_WORKER_SCHEMA.job_spec alter attribute priority type smallint;

drop function :GRAPHILE_WORKER_SCHEMA.add_job;

create function :GRAPHILE_WORKER_SCHEMA.add_job(
  identifier text,
  payload json default null,
  queue_name text default null,
  run_at timestamptz default null,
  max_attempts smallint default null,
  job_key text default null,
  priority smallint default null,
  flags text[] default null,
  job_key_mode text default 'replace'
)
returns :GRAPHILE_WORKER_SCHEMA.jobs
language plpgsql
as $body$
declare
  v_job :GRAPHILE_WORKER_SCHEMA.jobs;
begin
  if job_key is null or job_key_mode is null or job_key_mode in ('replace', 'preserve_run_at') then
    -- A NULL key ignores the mode (an unknown one included).
    select * into v_job
      from :GRAPHILE_WORKER_SCHEMA.add_jobs(
        array[(
          identifier, payload, queue_name, run_at, max_attempts, job_key, priority, flags
        ):::GRAPHILE_WORKER_SCHEMA.job_spec],
        job_key_mode = 'preserve_run_at'
      )
     limit 1;
    return v_job;
  elsif job_key_mode = 'unsafe_dedupe' then
    insert into :GRAPHILE_WORKER_SCHEMA.tasks (identifier)
    values (add_job.identifier)
    on conflict do nothing;

    if add_job.queue_name is not null then
      insert into :GRAPHILE_WORKER_SCHEMA.job_queues (queue_name)
      values (add_job.queue_name)
      on conflict do nothing;
    end if;

    -- Keep whatever job holds the key, even a running or dead one; only its
    -- revision and updated_at move, so that the statement returns it.
    -- Dangerous: a state change after that job started may never be acted
    -- upon.
    insert into :GRAPHILE_WORKER_SCHEMA.jobs as j
      (job_queue_id, task_id, payload, run_at, max_attempts, key, priority, flags)
    select
      q.id,
      t.id,
      coalesce(add_job.payload, '{}'::json),
      coalesce(add_job.run_at, now()),
      coalesce(add_job.max_attempts, 25),
      add_job.job_key,
      coalesce(add_job.priority, 0),
      (select jsonb_object_agg(f.flag, true) from unnest(add_job.flags) as f(flag))
    from :GRAPHILE_WORKER_SCHEMA.tasks as t
    left join :GRAPHILE_WORKER_SCHEMA.job_queues as q on q.queue_name = add_job.queue_name
    where t.identifier = add_job.identifier
    on conflict (key) do update
      set revision = j.revision + 1,
          updated_at = now()
    returning * into v_job;
    return v_job;
  else
    raise exception 'Invalid job_key_mode value, expected ''replace'', ''preserve_run_at'' or ''unsafe_dedupe''.'
      using errcode = 'GWBKM';
  end if;
end;
$body$;

drop function :GRAPHILE_WORKER_SCHEMA.reschedule_jobs;

create function :GRAPHILE_WORKER_SCHEMA.reschedule_jobs(
  job_ids bigint[],
  run_at timestamptz default null,
  priority smallint default null,
  attempts smallint default null,
  max_attempts smallint default null
)
returns setof :GRAPHILE_WORKER_SCHEMA.jobs
language sql
as $body$
  update :GRAPHILE_WORKER_SCHEMA.jobs as j
     set run_at = coalesce(reschedule_jobs.run_at, j.run_at),
         priority = coalesce(reschedule_jobs.priority, j.priority),
         attempts = coalesce(reschedule_jobs.attempts, j.attempts),
         max_attempts = coalesce(reschedule_jobs.max_attempts, j.max_attempts),
         updated_at = now()
   where j.id = any(job_ids)
     and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
  returning *;
$body$;
