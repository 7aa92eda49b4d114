-- Migration 19: a marker with no schema change. It records the change, in
-- Node graphile-worker 0.17, of locked_by from worker ids to pool ids. Node
-- marks it breaking; this project's ledger does not (see migrate.rs).
--
-- Numbering follows graphile-worker (MIT licence, Copyright (c) Benjie
-- Gillam).

select 1;
