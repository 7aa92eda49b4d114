-- Migration 11: the performance rewrite.
--
-- - Refuses to run (division by zero, SQLSTATE 22012, which the migrator
--   turns into a readable error) while any job was locked in the last four
--   hours: running workers would not survive the change.
-- - Moves the old tables aside as *_legacy and creates new job_queues, tasks
--   and jobs tables with identity keys and generated is_available columns.
--   Because the legacy indexes and sequence keep their names, the new ones
--   come out as jobs_pkey1, jobs_key_key1, job_queues_pkey1 and
--   jobs_id_seq1; later migrations and Node's schema depend on those names.
-- - get_job, complete_job and fail_job go (workers do that work in their own
--   SQL); add_job becomes a wrapper around the new bulk add_jobs; the admin
--   functions act on jobs unlocked for 4 hours or more; CHECK constraints
--   replace the GWB* validation errors.
-- - Copies the legacy jobs across (their locks are dropped) and drops the
--   legacy tables with their triggers.
--
-- Schema facts follow graphile-worker (MIT licence, Copyright (c) Benjie
-- Gillam).

lock table :GRAPHILE_WORKER_SCHEMA.jobs;
lock table :GRAPHILE_WORKER_SCHEMA.job_queues;

-- (not exists (...))::int is 0, and the division fails, when a job has been
-- locked within the last 4 hours.
select 1 / (
  not exists (
    select 1
      from :GRAPHILE_WORKER_SCHEMA.jobs as j
     where j.locked_at is not null
       and j.locked_at > now() - interval '4 hours'
  )
)::int;

alter table :GRAPHILE_WORKER_SCHEMA.jobs
  alter column attempts type int2,
  alter column max_attempts type int2,
  alter column priority type int2;

drop function :GRAPHILE_WORKER_SCHEMA.complete_job;
drop function :GRAPHILE_WORKER_SCHEMA.fail_job;
drop function :GRAPHILE_WORKER_SCHEMA.get_job;

drop trigger _900_notify_worker on :GRAPHILE_WORKER_SCHEMA.jobs;
drop function :GRAPHILE_WORKER_SCHEMA.tg_jobs__notify_new_jobs;
drop function :GRAPHILE_WORKER_SCHEMA.add_job;
drop function :GRAPHILE_WORKER_SCHEMA.complete_jobs;
drop function :GRAPHILE_WORKER_SCHEMA.permanently_fail_jobs;
drop function :GRAPHILE_WORKER_SCHEMA.remove_job;
drop function :GRAPHILE_WORKER_SCHEMA.reschedule_jobs;

alter table :GRAPHILE_WORKER_SCHEMA.jobs rename to jobs_legacy;
alter table :GRAPHILE_WORKER_SCHEMA.job_queues rename to job_queues_legacy;

create table :GRAPHILE_WORKER_SCHEMA.job_queues (
  id int generated always as identity primary key,
  queue_name text not null unique check (length(queue_name) <= 128),
  locked_at timestamptz,
  locked_by text,
  is_available boolean not null generated always as ((locked_at is null)) stored
);
alter table :GRAPHILE_WORKER_SCHEMA.job_queues enable row level security;

create table :GRAPHILE_WORKER_SCHEMA.tasks (
  id int generated always as identity primary key,
  identifier text not null unique check (length(identifier) <= 128)
);
alter table :GRAPHILE_WORKER_SCHEMA.tasks enable row level security;

-- job_queue_id and task_id deliberately have no foreign keys (speed).
create table :GRAPHILE_WORKER_SCHEMA.jobs (
  id bigint generated always as identity primary key,
  job_queue_id int,
  task_id int not null,
  payload json not null default '{}'::json,
  priority smallint not null default 0,
  run_at timestamptz not null default now(),
  attempts smallint not null default 0,
  max_attempts smallint not null default 25
    constraint jobs_max_attempts_check check (max_attempts >= 1),
  last_error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  key text unique
    constraint jobs_key_check check (length(key) > 0 and length(key) <= 512),
  locked_at timestamptz,
  locked_by text,
  revision integer not null default 0,
  flags jsonb,
  is_available boolean not null
    generated always as (((locked_at is null) and (attempts < max_attempts))) stored
);
alter table :GRAPHILE_WORKER_SCHEMA.jobs enable row level security;

-- Runnable jobs in claim order, and the same for jobs without a queue.
create index jobs_main_index
  on :GRAPHILE_WORKER_SCHEMA.jobs using btree (priority, run_at)
  include (id, task_id, job_queue_id)
  where (is_available = true);

create index jobs_no_queue_index
  on :GRAPHILE_WORKER_SCHEMA.jobs using btree (priority, run_at)
  include (id, task_id)
  where (is_available = true and job_queue_id is null);

-- One job for add_jobs; JSON field names of Node's addJobs match these.
create type :GRAPHILE_WORKER_SCHEMA.job_spec as (
  identifier text,
  payload json,
  queue_name text,
  run_at timestamptz,
  max_attempts integer,
  job_key text,
  priority integer,
  flags text[]
);

create function :GRAPHILE_WORKER_SCHEMA.add_jobs(
  specs :GRAPHILE_WORKER_SCHEMA.job_spec[],
  job_key_preserve_run_at boolean default false
)
returns setof :GRAPHILE_WORKER_SCHEMA.jobs
language plpgsql
as $body$
begin
  insert into :GRAPHILE_WORKER_SCHEMA.tasks (identifier)
  select distinct s.identifier
    from unnest(specs) as s
  on conflict do nothing;

  insert into :GRAPHILE_WORKER_SCHEMA.job_queues (queue_name)
  select distinct s.queue_name
    from unnest(specs) as s
   where s.queue_name is not null
  on conflict do nothing;

  -- A keyed job that is locked (it has started, so it acts on out-of-date
  -- state) or permanently failed gives up its key and any further retries;
  -- the insert below then creates a fresh job for the key.
  update :GRAPHILE_WORKER_SCHEMA.jobs as j
     set key = null,
         attempts = j.max_attempts,
         updated_at = now()
    from unnest(specs) as s
   where s.job_key is not null
     and j.key = s.job_key
     and j.is_available is not true;

  return query
  insert into :GRAPHILE_WORKER_SCHEMA.jobs as j
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
  join :GRAPHILE_WORKER_SCHEMA.tasks as t on t.identifier = s.identifier
  left join :GRAPHILE_WORKER_SCHEMA.job_queues as q on q.queue_name = s.queue_name
  on conflict (key) do update
    set job_queue_id = excluded.job_queue_id,
        task_id = excluded.task_id,
        payload = excluded.payload,
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

-- The admin functions leave alone jobs a worker holds, unless that lock is
-- older than 4 hours.

create function :GRAPHILE_WORKER_SCHEMA.complete_jobs(job_ids bigint[])
returns setof :GRAPHILE_WORKER_SCHEMA.jobs
language sql
as $body$
  delete from :GRAPHILE_WORKER_SCHEMA.jobs as j
   where j.id = any(job_ids)
     and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
  returning *;
$body$;

create function :GRAPHILE_WORKER_SCHEMA.permanently_fail_jobs(
  job_ids bigint[],
  error_message text default null
)
returns setof :GRAPHILE_WORKER_SCHEMA.jobs
language sql
as $body$
  update :GRAPHILE_WORKER_SCHEMA.jobs as j
     set last_error = coalesce(error_message, 'Manually marked as failed'),
         attempts = j.max_attempts,
         updated_at = now()
   where j.id = any(job_ids)
     and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
  returning *;
$body$;

create function :GRAPHILE_WORKER_SCHEMA.remove_job(job_key text)
returns :GRAPHILE_WORKER_SCHEMA.jobs
language plpgsql
strict
as $body$
declare
  v_job :GRAPHILE_WORKER_SCHEMA.jobs;
begin
  delete from :GRAPHILE_WORKER_SCHEMA.jobs as j
   where j.key = job_key
     and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
  returning * into v_job;

  if not (v_job is null) then
    return v_job;
  end if;

  -- A worker holds it: let it finish, but never retry, and free the key.
  update :GRAPHILE_WORKER_SCHEMA.jobs as j
     set key = null,
         attempts = j.max_attempts,
         updated_at = now()
   where j.key = job_key
  returning * into v_job;

  return v_job;
end;
$body$;

create function :GRAPHILE_WORKER_SCHEMA.reschedule_jobs(
  job_ids bigint[],
  run_at timestamptz default null,
  priority integer default null,
  attempts integer default null,
  max_attempts integer default null
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

-- Wake workers once per inserting statement.
create function :GRAPHILE_WORKER_SCHEMA.tg_jobs__after_insert()
returns trigger
language plpgsql
as $body$
begin
  perform pg_notify('jobs:insert', '');
  return new;
end;
$body$;

create trigger _900_after_insert
  after insert on :GRAPHILE_WORKER_SCHEMA.jobs
  for each statement
  execute function :GRAPHILE_WORKER_SCHEMA.tg_jobs__after_insert();

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

-- Carry the legacy jobs across.
insert into :GRAPHILE_WORKER_SCHEMA.job_queues (queue_name)
select distinct l.queue_name
  from :GRAPHILE_WORKER_SCHEMA.jobs_legacy as l
 where l.queue_name is not null
on conflict do nothing;

insert into :GRAPHILE_WORKER_SCHEMA.tasks (identifier)
select distinct l.task_identifier
  from :GRAPHILE_WORKER_SCHEMA.jobs_legacy as l
on conflict do nothing;

insert into :GRAPHILE_WORKER_SCHEMA.jobs (
  job_queue_id, task_id, payload, priority, run_at, attempts, max_attempts,
  last_error, created_at, updated_at, key, revision, flags
)
select
  q.id, t.id, l.payload, l.priority, l.run_at, l.attempts, l.max_attempts,
  l.last_error, l.created_at, l.updated_at, l.key, l.revision, l.flags
from :GRAPHILE_WORKER_SCHEMA.jobs_legacy as l
join :GRAPHILE_WORKER_SCHEMA.tasks as t on t.identifier = l.task_identifier
left join :GRAPHILE_WORKER_SCHEMA.job_queues as q on q.queue_name = l.queue_name;

drop table :GRAPHILE_WORKER_SCHEMA.jobs_legacy;
drop table :GRAPHILE_WORKER_SCHEMA.job_queues_legacy;
