-- Migration 15: drop the trigger functions left behind when migration 11
-- dropped the legacy tables, and add force_unlock_workers, which releases
-- every job and queue lock held by the given workers (for example after a
-- crash), whatever the age of the lock.
--
-- Schema facts follow graphile-worker (MIT licence, Copyright (c) Benjie
-- Gillam).

drop function :GRAPHILE_WORKER_SCHEMA.jobs__increase_job_queue_count();
drop function :GRAPHILE_WORKER_SCHEMA.jobs__decrease_job_queue_count();
drop function :GRAPHILE_WORKER_SCHEMA.tg__update_timestamp();

create function :GRAPHILE_WORKER_SCHEMA.force_unlock_workers(worker_ids text[])
returns void
language sql
volatile
as $body$
  update :GRAPHILE_WORKER_SCHEMA.jobs as j
     set locked_at = null,
         locked_by = null
   where j.locked_by = any(worker_ids);
  update :GRAPHILE_WORKER_SCHEMA.job_queues as q
     set locked_at = null,
         locked_by = null
   where q.locked_by = any(worker_ids);
$body$;
