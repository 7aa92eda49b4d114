-- Migration 17: the public, read-only jobs view: the stable interface for
-- looking at jobs (columns are only ever added). payload, is_available and
-- the internal ids are left out on purpose.
--
-- Schema facts follow graphile-worker (MIT licence, Copyright (c) Benjie
-- Gillam).

create view :GRAPHILE_WORKER_SCHEMA.jobs as
  select
    j.id,
    q.queue_name,
    t.identifier as task_identifier,
    j.priority,
    j.run_at,
    j.attempts,
    j.max_attempts,
    j.last_error,
    j.created_at,
    j.updated_at,
    j.key,
    j.locked_at,
    j.locked_by,
    j.revision,
    j.flags
  from :GRAPHILE_WORKER_SCHEMA._private_jobs as j
  join :GRAPHILE_WORKER_SCHEMA._private_tasks as t on t.id = j.task_id
  left join :GRAPHILE_WORKER_SCHEMA._private_job_queues as q on q.id = j.job_queue_id;
