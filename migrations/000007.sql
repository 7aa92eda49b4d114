-- Migration 7: job key modes. add_job gains job_key_mode ('replace',
-- 'preserve_run_at' or 'unsafe_dedupe'; anything else with a key is
-- SQLSTATE GWBKM). remove_job on a locked job now clears its key and uses up
-- its attempts instead of doing nothing.
--
-- Schema facts (including the SQLSTATEs and messages) follow graphile-worker
-- (MIT licence, Copyright (c) Benjie Gillam).

drop function :GRAPHILE_WORKER_SCHEMA.add_job(text, json, text, timestamptz, int, text, int, text[]);

create function :GRAPHILE_WORKER_SCHEMA.add_job(
  identifier text,
  payload json = null,
  queue_name text = null,
  run_at timestamptz = null,
  max_attempts integer = null,
  job_key text = null,
  priority integer = null,
  flags text[] = null,
  job_key_mode text = 'replace'
)
returns :GRAPHILE_WORKER_SCHEMA.jobs
language plpgsql
volatile
as $body$
declare
  v_job :GRAPHILE_WORKER_SCHEMA.jobs;
  v_flags jsonb;
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
    raise exception 'Job maximum attempts must be at least 1.' using errcode = 'GWBMA';
  end if;

  if job_key is not null and (job_key_mode is null or job_key_mode in ('replace', 'preserve_run_at')) then
    v_flags := (select jsonb_object_agg(f.flag, true) from unnest(flags) as f(flag));

    -- Update the keyed job in place unless a worker holds it. With
    -- preserve_run_at a job that has not been attempted keeps its run_at.
    insert into :GRAPHILE_WORKER_SCHEMA.jobs as j
      (task_identifier, payload, queue_name, run_at, max_attempts, key, priority, flags)
    values (
      identifier,
      coalesce(payload, '{}'::json),
      queue_name,
      coalesce(run_at, now()),
      coalesce(max_attempts, 25),
      job_key,
      coalesce(priority, 0),
      v_flags
    )
    on conflict (key) do update
      set task_identifier = excluded.task_identifier,
          payload = excluded.payload,
          queue_name = excluded.queue_name,
          max_attempts = excluded.max_attempts,
          run_at = case
                     when job_key_mode = 'preserve_run_at' and j.attempts = 0 then j.run_at
                     else excluded.run_at
                   end,
          priority = excluded.priority,
          revision = j.revision + 1,
          flags = excluded.flags,
          attempts = 0,
          last_error = null
      where j.locked_at is null
    returning * into v_job;

    if not (v_job is null) then
      return v_job;
    end if;

    -- The keyed job is running, so whatever prompted this call happened
    -- after it started: retire it (no key, no retries) and insert anew below.
    update :GRAPHILE_WORKER_SCHEMA.jobs as j
       set key = null,
           attempts = j.max_attempts
     where j.key = job_key;
  elsif job_key is not null and job_key_mode = 'unsafe_dedupe' then
    v_flags := (select jsonb_object_agg(f.flag, true) from unnest(flags) as f(flag));

    -- Keep whatever job holds the key, even a running or dead one; only its
    -- revision moves, so that the statement returns it. Dangerous: a state
    -- change after that job started may never be acted upon.
    insert into :GRAPHILE_WORKER_SCHEMA.jobs as j
      (task_identifier, payload, queue_name, run_at, max_attempts, key, priority, flags)
    values (
      identifier,
      coalesce(payload, '{}'::json),
      queue_name,
      coalesce(run_at, now()),
      coalesce(max_attempts, 25),
      job_key,
      coalesce(priority, 0),
      v_flags
    )
    on conflict (key) do update
      set revision = j.revision + 1
    returning * into v_job;

    return v_job;
  elsif job_key is not null then
    raise exception 'Invalid job_key_mode value, expected ''replace'', ''preserve_run_at'' or ''unsafe_dedupe''.'
      using errcode = 'GWBKM';
  end if;

  v_flags := (select jsonb_object_agg(f.flag, true) from unnest(flags) as f(flag));

  insert into :GRAPHILE_WORKER_SCHEMA.jobs
    (task_identifier, payload, queue_name, run_at, max_attempts, key, priority, flags)
  values (
    identifier,
    coalesce(payload, '{}'::json),
    queue_name,
    coalesce(run_at, now()),
    coalesce(max_attempts, 25),
    job_key,
    coalesce(priority, 0),
    v_flags
  )
  returning * into v_job;

  return v_job;
end;
$body$;

create or replace function :GRAPHILE_WORKER_SCHEMA.remove_job(job_key text)
returns :GRAPHILE_WORKER_SCHEMA.jobs
language plpgsql
strict
as $body$
declare
  v_job :GRAPHILE_WORKER_SCHEMA.jobs;
begin
  delete from :GRAPHILE_WORKER_SCHEMA.jobs as j
   where j.key = job_key
     and j.locked_at is null
  returning * into v_job;

  if not (v_job is null) then
    return v_job;
  end if;

  -- A worker holds it: let it finish, but never retry, and free the key.
  update :GRAPHILE_WORKER_SCHEMA.jobs as j
     set attempts = j.max_attempts,
         key = null
   where j.key = job_key
  returning * into v_job;

  return v_job;
end;
$body$;
