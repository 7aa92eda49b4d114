-- Migration 16: the tables get a _private_ prefix (they are not a public
-- interface; migration 17 adds the public jobs view), and every function is
-- dropped and recreated so that it uses the new names and returns
-- _private_jobs.
--
-- Schema facts follow graphile-worker (MIT licence, Copyright (c) Benjie
-- Gillam).

alter table :GRAPHILE_WORKER_SCHEMA.jobs rename to _private_jobs;
alter table :GRAPHILE_WORKER_SCHEMA.job_queues rename to _private_job_queues;
alter table :GRAPHILE_WORKER_SCHEMA.tasks rename to _private_tasks;
alter table :GRAPHILE_WORKER_SCHEMA.known_crontabs rename to _private_known_crontabs;

drop function :GRAPHILE_WORKER_SCHEMA.add_job;
create function :GRAPHILE_WORKER_SCHEMA.add_job(
  identifier text,
  payload json default null,
  queue_name text default null,
  run_at timestamptz default null,
  max_attempts integer default null,
  job_key text default null,
  priority integer default null,
  flags text[] default null,
  job_key_mode text default 'replace'
)
returns :GRAPHILE_WORKER_SCHEMA._private_jobs
language plpgsql
as $body$
declare
  v_job :GRAPHILE_WORKER_SCHEMA._private_jobs;
begin
  if job_key is null or job_key_mode is null or job_key_mode in ('replace', 'preserve_run_at') then
    -- A NULL key ignores the mode (an unknown one included).
    select * into v_job
      from :GRAPHILE_WORKER_SCHEMA.add_jobs(
        array[(
          identifier, payload, queue_name, run_at, max_attempts::smallint, job_key,
          priority::smallint, flags
        ):::GRAPHILE_WORKER_SCHEMA.job_spec],
        job_key_mode = 'preserve_run_at'
      )
     limit 1;
    return v_job;
  elsif job_key_mode = 'unsafe_dedupe' then
    insert into :GRAPHILE_WORKER_SCHEMA._private_tasks (identifier)
    values (add_job.identifier)
    on conflict do nothing;

    if add_job.queue_name is not null then
      insert into :GRAPHILE_WORKER_SCHEMA._private_job_queues (queue_name)
      values (add_job.queue_name)
      on conflict do nothing;
    end if;

    -- Keep whatever job holds the key, even a running or dead one; only its
    -- revision and updated_at move, so that the statement returns it.
    -- Dangerous: a state change after that job started may never be acted
    -- upon.
    insert into :GRAPHILE_WORKER_SCHEMA._private_jobs as j
      (job_queue_id, task_id, payload, run_at, max_attempts, key, priority, flags)
    select
      q.id,
      t.id,
      coalesce(add_job.payload, '{}'::json),
      coalesce(add_job.run_at, now()),
      coalesce(add_job.max_attempts::smallint, 25::smallint),
      add_job.job_key,
      coalesce(add_job.priority::smallint, 0::smallint),
      (select jsonb_object_agg(f.flag, true) from unnest(add_job.flags) as f(flag))
    from :GRAPHILE_WORKER_SCHEMA._private_tasks as t
    left join :GRAPHILE_WORKER_SCHEMA._private_job_queues as q on q.queue_name = add_job.queue_name
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

drop function :GRAPHILE_WORKER_SCHEMA.add_jobs;
create function :GRAPHILE_WORKER_SCHEMA.add_jobs(
  specs :GRAPHILE_WORKER_SCHEMA.job_spec[],
  job_key_preserve_run_at boolean default false
)
returns setof :GRAPHILE_WORKER_SCHEMA._private_jobs
language plpgsql
as $body$
begin
  insert into :GRAPHILE_WORKER_SCHEMA._private_tasks (identifier)
  select distinct s.identifier
    from unnest(specs) as s
  on conflict do nothing;

  insert into :GRAPHILE_WORKER_SCHEMA._private_job_queues (queue_name)
  select distinct s.queue_name
    from unnest(specs) as s
   where s.queue_name is not null
  on conflict do nothing;

  -- A keyed job that is locked (it has started, so it acts on out-of-date
  -- state) or permanently failed gives up its key and any further retries;
  -- the insert below then creates a fresh job for the key.
  update :GRAPHILE_WORKER_SCHEMA._private_jobs as j
     set key = null,
         attempts = j.max_attempts,
         updated_at = now()
    from unnest(specs) as s
   where s.job_key is not null
     and j.key = s.job_key
     and j.is_available is not true;

  return query
  insert into :GRAPHILE_WORKER_SCHEMA._private_jobs as j
    (job_queue_id, task_id, payload, run_at, max_attempts, key, priority, flags)
  select
    q.id,
    t.id,
    coalesce(s.payload, '{}'::json),
    coalesce(s.run_at, now()),
    coalesce(s.max_attempts, 25),
    s.job_key,
    coalesce(s.priority, 0),
    (select jsonb_object_agg(f.flag, true) from unnest(s.flags) as f(flag))
  from unnest(specs) as s
  join :GRAPHILE_WORKER_SCHEMA._private_tasks as t on t.identifier = s.identifier
  left join :GRAPHILE_WORKER_SCHEMA._private_job_queues as q on q.queue_name = s.queue_name
  on conflict (key) do update
    set job_queue_id = excluded.job_queue_id,
        task_id = excluded.task_id,
        payload = case
                    when json_typeof(j.payload) = 'array' and json_typeof(excluded.payload) = 'array'
                      then (j.payload::jsonb || excluded.payload::jsonb)::json
                    else excluded.payload
                  end,
        max_attempts = excluded.max_attempts,
        run_at = case
                   when job_key_preserve_run_at is true and j.attempts = 0 then j.run_at
                   else excluded.run_at
                 end,
        priority = excluded.priority,
        revision = j.revision + 1,
        flags = excluded.flags,
        attempts = 0,
        last_error = null,
        updated_at = now()
    where j.locked_at is null
  returning *;
end;
$body$;

drop function :GRAPHILE_WORKER_SCHEMA.complete_jobs;
create function :GRAPHILE_WORKER_SCHEMA.complete_jobs(job_ids bigint[])
returns setof :GRAPHILE_WORKER_SCHEMA._private_jobs
language sql
as $body$
  delete from :GRAPHILE_WORKER_SCHEMA._private_jobs as j
   where j.id = any(job_ids)
     and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
  returning *;
$body$;

drop function :GRAPHILE_WORKER_SCHEMA.force_unlock_workers;
create function :GRAPHILE_WORKER_SCHEMA.force_unlock_workers(worker_ids text[])
returns void
language sql
as $body$
  update :GRAPHILE_WORKER_SCHEMA._private_jobs as j
     set locked_at = null,
         locked_by = null
   where j.locked_by = any(worker_ids);
  update :GRAPHILE_WORKER_SCHEMA._private_job_queues as q
     set locked_at = null,
         locked_by = null
   where q.locked_by = any(worker_ids);
$body$;

drop function :GRAPHILE_WORKER_SCHEMA.permanently_fail_jobs;
create function :GRAPHILE_WORKER_SCHEMA.permanently_fail_jobs(
  job_ids bigint[],
  error_message text default null
)
returns setof :GRAPHILE_WORKER_SCHEMA._private_jobs
language sql
as $body$
  update :GRAPHILE_WORKER_SCHEMA._private_jobs as j
     set last_error = coalesce(error_message, 'Manually marked as failed'),
         attempts = j.max_attempts,
         updated_at = now()
   where j.id = any(job_ids)
     and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
  returning *;
$body$;

drop function :GRAPHILE_WORKER_SCHEMA.remove_job;
create function :GRAPHILE_WORKER_SCHEMA.remove_job(job_key text)
returns :GRAPHILE_WORKER_SCHEMA._private_jobs
language plpgsql
strict
as $body$
declare
  v_job :GRAPHILE_WORKER_SCHEMA._private_jobs;
begin
  delete from :GRAPHILE_WORKER_SCHEMA._private_jobs as j
   where j.key = job_key
     and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
  returning * into v_job;

  if not (v_job is null) then
    return v_job;
  end if;

  -- A worker holds it: let it finish, but never retry, and free the key.
  update :GRAPHILE_WORKER_SCHEMA._private_jobs as j
     set key = null,
         attempts = j.max_attempts,
         updated_at = now()
   where j.key = job_key
  returning * into v_job;

  return v_job;
end;
$body$;

drop function :GRAPHILE_WORKER_SCHEMA.reschedule_jobs;
create function :GRAPHILE_WORKER_SCHEMA.reschedule_jobs(
  job_ids bigint[],
  run_at timestamptz default null,
  priority integer default null,
  attempts integer default null,
  max_attempts integer default null
)
returns setof :GRAPHILE_WORKER_SCHEMA._private_jobs
language sql
as $body$
  update :GRAPHILE_WORKER_SCHEMA._private_jobs as j
     set run_at = coalesce(reschedule_jobs.run_at, j.run_at),
         priority = coalesce(reschedule_jobs.priority::smallint, j.priority),
         attempts = coalesce(reschedule_jobs.attempts::smallint, j.attempts),
         max_attempts = coalesce(reschedule_jobs.max_attempts::smallint, j.max_attempts),
         updated_at = now()
   where j.id = any(job_ids)
     and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
  returning *;
$body$;
