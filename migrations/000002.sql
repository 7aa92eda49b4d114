-- Migration 2: job keys and job-level locks. add_job upserts on a key
-- (retiring a locked job that holds it), remove_job appears, and get_job /
-- fail_job lock and unlock the job itself as well as its queue.
--
-- Schema facts follow graphile-worker (MIT licence, Copyright (c) Benjie
-- Gillam).

alter table :GRAPHILE_WORKER_SCHEMA.jobs
  add column key text
    constraint jobs_key_key unique
    constraint jobs_key_check check (length(key) > 0);

alter table :GRAPHILE_WORKER_SCHEMA.jobs add column locked_at timestamptz;
alter table :GRAPHILE_WORKER_SCHEMA.jobs add column locked_by text;

-- Jobs running right now inherit their queue's lock.
update :GRAPHILE_WORKER_SCHEMA.jobs as j
   set locked_at = q.locked_at,
       locked_by = q.locked_by
  from :GRAPHILE_WORKER_SCHEMA.job_queues as q
 where q.queue_name = j.queue_name
   and q.locked_at is not null;

drop function if exists :GRAPHILE_WORKER_SCHEMA.add_job(text, json, text, timestamptz, int);

create function :GRAPHILE_WORKER_SCHEMA.add_job(
  identifier text,
  payload json = '{}',
  queue_name text = null,
  run_at timestamptz = now(),
  max_attempts int = 25,
  job_key text = null
)
returns :GRAPHILE_WORKER_SCHEMA.jobs
language plpgsql
volatile
as $body$
declare
  v_job :GRAPHILE_WORKER_SCHEMA.jobs;
begin
  if job_key is not null then
    -- Update the keyed job in place while nobody is running it; the queue
    -- only changes when a new one is given.
    insert into :GRAPHILE_WORKER_SCHEMA.jobs as j
      (task_identifier, payload, queue_name, run_at, max_attempts, key)
    values
      (identifier, payload, queue_name, run_at, max_attempts, job_key)
    on conflict (key) do update
      set task_identifier = excluded.task_identifier,
          payload = excluded.payload,
          queue_name = coalesce(add_job.queue_name, j.queue_name),
          max_attempts = excluded.max_attempts,
          run_at = excluded.run_at,
          attempts = 0,
          last_error = null
      where j.locked_at is null
    returning * into v_job;

    -- (a row value is "not null" only when every column is; test "is null")
    if not (v_job is null) then
      return v_job;
    end if;

    -- The keyed job is locked (running): it keeps running but gives up its
    -- key and its remaining retries, and a fresh job takes the key.
    update :GRAPHILE_WORKER_SCHEMA.jobs as j
       set key = null,
           attempts = j.max_attempts
     where j.key = job_key;
  end if;

  insert into :GRAPHILE_WORKER_SCHEMA.jobs
    (task_identifier, payload, queue_name, run_at, max_attempts, key)
  values
    (identifier, payload, queue_name, run_at, max_attempts, job_key)
  returning * into v_job;

  return v_job;
end;
$body$;

-- Deletes the keyed job unless it is locked.
create function :GRAPHILE_WORKER_SCHEMA.remove_job(job_key text)
returns :GRAPHILE_WORKER_SCHEMA.jobs
language sql
strict
volatile
as $body$
  delete from :GRAPHILE_WORKER_SCHEMA.jobs as j
   where j.key = job_key
     and j.locked_at is null
  returning *;
$body$;

create or replace function :GRAPHILE_WORKER_SCHEMA.get_job(
  worker_id text,
  task_identifiers text[] = null,
  job_expiry interval = interval '4 hours'
)
returns :GRAPHILE_WORKER_SCHEMA.jobs
language plpgsql
volatile
as $body$
declare
  v_job_id bigint;
  v_queue_name text;
  v_job :GRAPHILE_WORKER_SCHEMA.jobs;
  v_now timestamptz := now();
begin
  if worker_id is null or length(worker_id) < 10 then
    raise exception 'invalid worker id';
  end if;

  select q.queue_name, j.id
    into v_queue_name, v_job_id
    from :GRAPHILE_WORKER_SCHEMA.jobs as j
    join :GRAPHILE_WORKER_SCHEMA.job_queues as q on q.queue_name = j.queue_name
   where (q.locked_at is null or q.locked_at < v_now - job_expiry)
     and j.run_at <= v_now
     and j.attempts < j.max_attempts
     and (task_identifiers is null or j.task_identifier = any(task_identifiers))
   order by j.priority, j.run_at, j.id
   limit 1
     for update of q skip locked;

  if v_queue_name is null then
    return null;
  end if;

  update :GRAPHILE_WORKER_SCHEMA.job_queues as q
     set locked_by = worker_id,
         locked_at = v_now
   where q.queue_name = v_queue_name;

  update :GRAPHILE_WORKER_SCHEMA.jobs as j
     set attempts = j.attempts + 1,
         locked_by = worker_id,
         locked_at = v_now
   where j.id = v_job_id
  returning * into v_job;

  return v_job;
end;
$body$;

create or replace function :GRAPHILE_WORKER_SCHEMA.fail_job(worker_id text, job_id bigint, error_message text)
returns :GRAPHILE_WORKER_SCHEMA.jobs
language plpgsql
volatile
strict
as $body$
declare
  v_job :GRAPHILE_WORKER_SCHEMA.jobs;
begin
  update :GRAPHILE_WORKER_SCHEMA.jobs as j
     set last_error = error_message,
         run_at = greatest(now(), j.run_at)
                  + (exp(least(j.attempts, 10))::text || ' seconds')::interval,
         locked_by = null,
         locked_at = null
   where j.id = job_id
     and j.locked_by = worker_id
  returning * into v_job;

  update :GRAPHILE_WORKER_SCHEMA.job_queues as q
     set locked_by = null,
         locked_at = null
   where q.queue_name = v_job.queue_name
     and q.locked_by = worker_id;

  return v_job;
end;
$body$;
