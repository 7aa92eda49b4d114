-- Migration 10: jobs.queue_name has no default (some very old installs
-- defaulted it to a random UUID). A no-op on databases without one.
--
-- Schema facts follow graphile-worker (MIT licence, Copyright (c) Benjie
-- Gillam).

alter table :GRAPHILE_WORKER_SCHEMA.jobs alter column queue_name drop default;
