-- Migration 20 (this project's; Node graphile-worker 0.18 has a migration 20
-- with only the first of these changes).
--
-- 1. add_job (unsafe_dedupe) and add_jobs insert only the task and queue
--    rows that are missing, so identity values are not used up on every
--    call (Node 0.18's migration 20).
-- 2. add_jobs returns one row for every spec (or raises), and add_job never
--    returns an all-NULL row. Node's versions lose a spec when a worker
--    locks its keyed job between the "retire unavailable keyed jobs" step and
--    the upsert (upstream issue #580). Here the specs that got no row are
--    retried: the now-locked job is retired and a fresh job inserted, a
--    bounded number of times.
-- 3. The worker registry: _private_workers and the functions that record
--    heartbeats, find stale workers and recover the jobs of dead ones.
--
-- This file must stay re-runnable as a whole (create or replace, if not
-- exists): the migrator applies it again over a migration 20 that Node
-- installed, which lacks (2) and (3).
--
-- Schema facts for add_job / add_jobs follow graphile-worker (MIT licence,
-- Copyright (c) Benjie Gillam); the registry's names follow
-- graphile_worker_rs.

create or replace function :GRAPHILE_WORKER_SCHEMA.add_jobs(
  specs :GRAPHILE_WORKER_SCHEMA.job_spec[],
  job_key_preserve_run_at boolean default false
)
returns setof :GRAPHILE_WORKER_SCHEMA._private_jobs
language plpgsql
as $body$
declare
  -- specs still to be written
  v_pending :GRAPHILE_WORKER_SCHEMA.job_spec[] := coalesce(specs, '{}');
  v_written bigint;
  v_retry :GRAPHILE_WORKER_SCHEMA.job_spec[];
  v_round integer := 0;
begin
  loop
    v_round := v_round + 1;

    -- Task and queue rows: insert only the missing ones (a conflicting insert
    -- would still use up an identity value); "on conflict" covers a
    -- concurrent insert of the same name.
    insert into :GRAPHILE_WORKER_SCHEMA._private_tasks (identifier)
    select distinct s.identifier
      from unnest(v_pending) as s
     where not exists (
       select 1 from :GRAPHILE_WORKER_SCHEMA._private_tasks as t where t.identifier = s.identifier
     )
    on conflict do nothing;

    insert into :GRAPHILE_WORKER_SCHEMA._private_job_queues (queue_name)
    select distinct s.queue_name
      from unnest(v_pending) as s
     where s.queue_name is not null
       and not exists (
         select 1 from :GRAPHILE_WORKER_SCHEMA._private_job_queues as q where q.queue_name = s.queue_name
       )
    on conflict do nothing;

    -- A keyed job that is locked (it has started, so it acts on out-of-date
    -- state) or permanently failed gives up its key and any further retries;
    -- the upsert below then creates a fresh job for the key.
    update :GRAPHILE_WORKER_SCHEMA._private_jobs as j
       set key = null,
           attempts = j.max_attempts,
           updated_at = now()
      from unnest(v_pending) as s
     where s.job_key is not null
       and j.key = s.job_key
       and j.is_available is not true;

    if v_round = 1 then
      -- Wake the workers (delivered at commit). The count is an upper bound:
      -- a key update may stand in for an insert. The random r keeps
      -- PostgreSQL from folding identical notifications together.
      perform pg_notify(
        'jobs:insert',
        format('{"r":%s,"count":%s}', random(), coalesce(cardinality(specs), 0))
      );
    end if;

    -- Insert, or update the unlocked job holding the key. Unlike Node's
    -- version, a spec whose queue row has vanished is not silently written
    -- without its queue: it is left out, and the count below catches it.
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
    from unnest(v_pending) as s
    join :GRAPHILE_WORKER_SCHEMA._private_tasks as t on t.identifier = s.identifier
    left join :GRAPHILE_WORKER_SCHEMA._private_job_queues as q on q.queue_name = s.queue_name
    where s.queue_name is null or q.id is not null
    on conflict (key) do update
      set job_queue_id = excluded.job_queue_id,
          task_id = excluded.task_id,
          -- two JSON arrays are concatenated (batch jobs)
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

    -- Each spec writes at most one row, so a full count means done.
    get diagnostics v_written = row_count;
    exit when v_written = cardinality(v_pending);

    -- A spec got no row when a worker locked its keyed job after the update
    -- above (upstream issue #580). The failed "on conflict" still locked that
    -- job for this transaction, so it is still locked now, whereas every job
    -- written above is unlocked: that tells the two apart. Those specs go
    -- round again: the locked job is retired and a fresh one inserted.
    select array_agg(s)
      into v_retry
      from unnest(v_pending) as s
     where s.job_key is not null
       and exists (
         select 1
           from :GRAPHILE_WORKER_SCHEMA._private_jobs as j
          where j.key = s.job_key
            and j.locked_at is not null
       );

    -- Anything else missing lost its task or queue row to a concurrent
    -- delete; rather than leave it out silently, fail (nothing is written).
    if coalesce(cardinality(v_retry), 0) <> cardinality(v_pending) - v_written or v_round >= 10 then
      raise exception 'add_jobs could not write % of its % jobs: their keyed jobs kept being locked by workers, or their task or queue rows were deleted, at the same time',
          cardinality(v_pending) - v_written, coalesce(cardinality(specs), 0)
        using errcode = '40001',
              hint = 'Nothing was written; retry the transaction.';
    end if;
    v_pending := v_retry;
  end loop;
end;
$body$;

create or replace function :GRAPHILE_WORKER_SCHEMA.add_job(
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
  v_round integer := 0;
begin
  if job_key is null or job_key_mode is null or job_key_mode in ('replace', 'preserve_run_at') then
    -- A NULL key ignores the mode (an unknown one included). add_jobs
    -- returns a row for its one spec, or raises.
    select * into v_job
      from :GRAPHILE_WORKER_SCHEMA.add_jobs(
        array[(
          identifier, payload, queue_name, run_at, max_attempts::smallint, job_key,
          priority::smallint, flags
        ):::GRAPHILE_WORKER_SCHEMA.job_spec],
        job_key_mode = 'preserve_run_at'
      )
     limit 1;
  elsif job_key_mode = 'unsafe_dedupe' then
    loop
      v_round := v_round + 1;

      insert into :GRAPHILE_WORKER_SCHEMA._private_tasks (identifier)
      select add_job.identifier
       where not exists (
         select 1 from :GRAPHILE_WORKER_SCHEMA._private_tasks as t where t.identifier = add_job.identifier
       )
      on conflict do nothing;

      if add_job.queue_name is not null then
        insert into :GRAPHILE_WORKER_SCHEMA._private_job_queues (queue_name)
        select add_job.queue_name
         where not exists (
           select 1 from :GRAPHILE_WORKER_SCHEMA._private_job_queues as q where q.queue_name = add_job.queue_name
         )
        on conflict do nothing;
      end if;

      -- Keep whatever job holds the key, even a running or dead one; only
      -- its revision and updated_at move, so that the statement returns it.
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
        and (add_job.queue_name is null or q.id is not null)
      on conflict (key) do update
        set revision = j.revision + 1,
            updated_at = now()
      returning * into v_job;

      -- No row only when the task or queue row was deleted meanwhile.
      exit when not (v_job is null) or v_round >= 10;
    end loop;

    -- Only a freshly inserted job (revision 0) is news for the workers.
    if v_job.revision = 0 then
      perform pg_notify('jobs:insert', format('{"r":%s,"count":1}', random()));
    end if;
  else
    raise exception 'Invalid job_key_mode value, expected ''replace'', ''preserve_run_at'' or ''unsafe_dedupe''.'
      using errcode = 'GWBKM';
  end if;

  if v_job is null then
    raise exception 'add_job could not write the job for task %: its task or queue row kept being deleted at the same time',
        identifier
      using errcode = '40001',
            hint = 'Nothing was written; retry the transaction.';
  end if;
  return v_job;
end;
$body$;

-- The worker registry. A running worker upserts its row every few seconds;
-- a row whose heartbeat is older than a threshold (database clock only)
-- belongs to a dead worker, whose locked jobs can then be recovered.

create table if not exists :GRAPHILE_WORKER_SCHEMA._private_workers (
  id text primary key,
  last_heartbeat_at timestamptz not null,
  started_at timestamptz not null default now(),
  metadata jsonb
);

create index if not exists _private_workers_last_heartbeat_at_idx
  on :GRAPHILE_WORKER_SCHEMA._private_workers (last_heartbeat_at);

-- Records that worker_id is alive. A NULL metadata keeps the stored one.
create or replace function :GRAPHILE_WORKER_SCHEMA.worker_heartbeat(
  worker_id text,
  metadata json default null
)
returns void
language sql
as $body$
  insert into :GRAPHILE_WORKER_SCHEMA._private_workers as w (id, last_heartbeat_at, metadata)
  values (worker_heartbeat.worker_id, now(), worker_heartbeat.metadata::jsonb)
  on conflict (id) do update
    set last_heartbeat_at = excluded.last_heartbeat_at,
        metadata = coalesce(excluded.metadata, w.metadata);
$body$;

-- A worker shutting down cleanly removes its row.
create or replace function :GRAPHILE_WORKER_SCHEMA.worker_deregister(worker_id text)
returns void
language sql
as $body$
  delete from :GRAPHILE_WORKER_SCHEMA._private_workers as w
   where w.id = worker_deregister.worker_id;
$body$;

-- Registered workers whose last heartbeat is older than now() - threshold.
create or replace function :GRAPHILE_WORKER_SCHEMA.list_stale_workers(stale_threshold interval)
returns table (worker_id text)
language sql
stable
as $body$
  select w.id
    from :GRAPHILE_WORKER_SCHEMA._private_workers as w
   where w.last_heartbeat_at < now() - stale_threshold
   order by w.id;
$body$;

-- Lock holders that never registered (Node workers, run-once callers,
-- workers without heartbeats) with a job or queue lock older than the
-- threshold. Informational: such locks are left to the 4-hour rule.
create or replace function :GRAPHILE_WORKER_SCHEMA.list_orphan_locked_workers(stale_threshold interval)
returns table (worker_id text)
language sql
stable
as $body$
  select l.locked_by
    from (
      select j.locked_by
        from :GRAPHILE_WORKER_SCHEMA._private_jobs as j
       where j.locked_by is not null
         and j.locked_at < now() - stale_threshold
      union
      select q.locked_by
        from :GRAPHILE_WORKER_SCHEMA._private_job_queues as q
       where q.locked_by is not null
         and q.locked_at < now() - stale_threshold
    ) as l
   where not exists (
     select 1 from :GRAPHILE_WORKER_SCHEMA._private_workers as w where w.id = l.locked_by
   )
   order by l.locked_by;
$body$;

-- Releases every job and queue locked by the given (dead) workers, whatever
-- the age of the lock, and returns how many jobs were released. The attempt
-- the dead worker made still counts, so a job that kills its worker every
-- time ends up permanently failed instead of looping forever. Each job's
-- last_error names the worker, and it runs again no sooner than
-- recovery_delay from now.
create or replace function :GRAPHILE_WORKER_SCHEMA.recover_dead_worker_jobs(
  worker_ids text[],
  recovery_delay interval default '0 seconds'
)
returns integer
language plpgsql
as $body$
declare
  v_count integer;
begin
  update :GRAPHILE_WORKER_SCHEMA._private_jobs as j
     set locked_at = null,
         locked_by = null,
         run_at = greatest(j.run_at, now() + recovery_delay),
         last_error = format(
           'worker %s stopped heartbeating while running this job; %s',
           j.locked_by,
           case when j.attempts >= j.max_attempts then 'no attempts left' else 'retrying' end
         ),
         updated_at = now()
   where j.locked_by = any(worker_ids);
  get diagnostics v_count = row_count;

  update :GRAPHILE_WORKER_SCHEMA._private_job_queues as q
     set locked_at = null,
         locked_by = null
   where q.locked_by = any(worker_ids);

  return v_count;
end;
$body$;

-- Forgets the given workers (after their jobs were recovered).
create or replace function :GRAPHILE_WORKER_SCHEMA.delete_stale_workers(worker_ids text[])
returns void
language sql
as $body$
  delete from :GRAPHILE_WORKER_SCHEMA._private_workers as w
   where w.id = any(worker_ids);
$body$;
