-- Migration 4: add_job gains a priority, treats NULL arguments as "use the
-- default" and validates its input with custom SQLSTATEs; the admin
-- functions complete_jobs, permanently_fail_jobs and reschedule_jobs appear.
--
-- Schema facts (including the SQLSTATEs and messages) follow graphile-worker
-- (MIT licence, Copyright (c) Benjie Gillam).

drop function :GRAPHILE_WORKER_SCHEMA.add_job(text, json, text, timestamptz, int, text);

create function :GRAPHILE_WORKER_SCHEMA.add_job(
  identifier text,
  payload json = null,
  queue_name text = null,
  run_at timestamptz = null,
  max_attempts int = null,
  job_key text = null,
  priority int = null
)
returns :GRAPHILE_WORKER_SCHEMA.jobs
language plpgsql
volatile
as $body$
declare
  v_job :GRAPHILE_WORKER_SCHEMA.jobs;
begin
  if length(identifier) > 128 then
    raise exception 'Task identifier is too long (max length: 128).' using errcode = 'GWBID';
  end if;
  if queue_name is not null and length(queue_name) > 128 then
    raise exception 'Job queue name is too long (max length: 128).' using errcode = 'GWBQN';
  end if;
  if job_key is not null and length(job_key) > 512 then
    raise exception 'Job key is too long (max length: 512).' using errcode = 'GWBJK';
  end if;
  if max_attempts < 1 then
    raise exception 'Job maximum attempts must be at least 1' using errcode = 'GWBMA';
  end if;

  if job_key is not null then
    insert into :GRAPHILE_WORKER_SCHEMA.jobs as j
      (task_identifier, payload, queue_name, run_at, max_attempts, key, priority)
    values (
      identifier,
      coalesce(payload, '{}'::json),
      queue_name,
      coalesce(run_at, now()),
      coalesce(max_attempts, 25),
      job_key,
      coalesce(priority, 0)
    )
    on conflict (key) do update
      set task_identifier = excluded.task_identifier,
          payload = excluded.payload,
          queue_name = excluded.queue_name,
          max_attempts = excluded.max_attempts,
          run_at = excluded.run_at,
          priority = excluded.priority,
          attempts = 0,
          last_error = null
      where j.locked_at is null
    returning * into v_job;

    if not (v_job is null) then
      return v_job;
    end if;

    -- Locked keyed job: retire it (no key, no retries) and insert anew.
    update :GRAPHILE_WORKER_SCHEMA.jobs as j
       set key = null,
           attempts = j.max_attempts
     where j.key = job_key;
  end if;

  insert into :GRAPHILE_WORKER_SCHEMA.jobs
    (task_identifier, payload, queue_name, run_at, max_attempts, key, priority)
  values (
    identifier,
    coalesce(payload, '{}'::json),
    queue_name,
    coalesce(run_at, now()),
    coalesce(max_attempts, 25),
    job_key,
    coalesce(priority, 0)
  )
  returning * into v_job;

  return v_job;
end;
$body$;

-- The admin functions below leave alone jobs a worker holds, unless that
-- lock is older than 4 hours.

create function :GRAPHILE_WORKER_SCHEMA.complete_jobs(job_ids bigint[])
returns setof :GRAPHILE_WORKER_SCHEMA.jobs
language sql
volatile
as $body$
  delete from :GRAPHILE_WORKER_SCHEMA.jobs as j
   where j.id = any(job_ids)
     and (j.locked_by is null or j.locked_at < now() - interval '4 hours')
  returning *;
$body$;

create function :GRAPHILE_WORKER_SCHEMA.permanently_fail_jobs(
  job_ids bigint[],
  error_message text = null
)
returns setof :GRAPHILE_WORKER_SCHEMA.jobs
language sql
volatile
as $body$
  update :GRAPHILE_WORKER_SCHEMA.jobs as j
     set last_error = coalesce(error_message, 'Manually marked as failed'),
         attempts = j.max_attempts
   where j.id = any(job_ids)
     and (j.locked_by is null or j.locked_at < now() - interval '4 hours')
  returning *;
$body$;

create function :GRAPHILE_WORKER_SCHEMA.reschedule_jobs(
  job_ids bigint[],
  run_at timestamptz = null,
  priority int = null,
  attempts int = null,
  max_attempts int = null
)
returns setof :GRAPHILE_WORKER_SCHEMA.jobs
language sql
volatile
as $body$
  update :GRAPHILE_WORKER_SCHEMA.jobs as j
     set run_at = coalesce(reschedule_jobs.run_at, j.run_at),
         priority = coalesce(reschedule_jobs.priority, j.priority),
         attempts = coalesce(reschedule_jobs.attempts, j.attempts),
         max_attempts = coalesce(reschedule_jobs.max_attempts, j.max_attempts)
   where j.id = any(job_ids)
     and (j.locked_by is null or j.locked_at < now() - interval '4 hours')
  returning *;
$body$;
