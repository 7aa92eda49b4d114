-- Migration 5: job revisions and flags. add_job stores flags as a jsonb
-- object ({"flag": true}) and bumps the revision on every key update;
-- get_job can skip jobs carrying any of a list of forbidden flags.
--
-- Schema facts follow graphile-worker (MIT licence, Copyright (c) Benjie
-- Gillam).

alter table :GRAPHILE_WORKER_SCHEMA.jobs add column revision int not null default 0;
alter table :GRAPHILE_WORKER_SCHEMA.jobs add column flags jsonb;

drop function :GRAPHILE_WORKER_SCHEMA.add_job(text, json, text, timestamptz, int, text, int);

create function :GRAPHILE_WORKER_SCHEMA.add_job(
  identifier text,
  payload json = null,
  queue_name text = null,
  run_at timestamptz = null,
  max_attempts int = null,
  job_key text = null,
  priority int = null,
  flags text[] = null
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
    raise exception 'Job maximum attempts must be at least 1' using errcode = 'GWBMA';
  end if;

  -- ['a', 'b'] becomes {"a": true, "b": true}; no flags give NULL.
  v_flags := (select jsonb_object_agg(f.flag, true) from unnest(flags) as f(flag));

  if job_key is not null then
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
          run_at = excluded.run_at,
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

    -- Locked keyed job: retire it (no key, no retries) and insert anew.
    update :GRAPHILE_WORKER_SCHEMA.jobs as j
       set key = null,
           attempts = j.max_attempts
     where j.key = job_key;
  end if;

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

drop function :GRAPHILE_WORKER_SCHEMA.get_job(text, text[], interval);

create function :GRAPHILE_WORKER_SCHEMA.get_job(
  worker_id text,
  task_identifiers text[] = null,
  job_expiry interval = interval '4 hours',
  forbidden_flags text[] = null
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

  select j.queue_name, j.id
    into v_queue_name, v_job_id
    from :GRAPHILE_WORKER_SCHEMA.jobs as j
   where (j.locked_at is null or j.locked_at < v_now - job_expiry)
     and (
       j.queue_name is null
       or exists (
         select 1
           from :GRAPHILE_WORKER_SCHEMA.job_queues as q
          where q.queue_name = j.queue_name
            and (q.locked_at is null or q.locked_at < v_now - job_expiry)
            for update skip locked
       )
     )
     and j.run_at <= v_now
     and j.attempts < j.max_attempts
     and (task_identifiers is null or j.task_identifier = any(task_identifiers))
     and (forbidden_flags is null or (j.flags ?| forbidden_flags) is not true)
   order by j.priority, j.run_at, j.id
   limit 1
     for update skip locked;

  if v_job_id is null then
    return null;
  end if;

  if v_queue_name is not null then
    update :GRAPHILE_WORKER_SCHEMA.job_queues as q
       set locked_by = worker_id,
           locked_at = v_now
     where q.queue_name = v_queue_name;
  end if;

  update :GRAPHILE_WORKER_SCHEMA.jobs as j
     set attempts = j.attempts + 1,
         locked_by = worker_id,
         locked_at = v_now
   where j.id = v_job_id
  returning * into v_job;

  return v_job;
end;
$body$;
