-- Migration 12: batch jobs. When add_jobs updates a keyed job and both the
-- old and the new payload are JSON arrays, the arrays are concatenated
-- (through jsonb) instead of the new payload replacing the old.
--
-- Schema facts follow graphile-worker (MIT licence, Copyright (c) Benjie
-- Gillam).

create or replace function :GRAPHILE_WORKER_SCHEMA.add_jobs(
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
