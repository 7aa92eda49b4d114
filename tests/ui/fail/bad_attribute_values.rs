use graphile_worker::task;

#[task(max_attempts = 0)]
async fn zero_attempts() {}

#[task(priority = 40000)]
async fn huge_priority() {}

#[task(rename_all = "camelcase")]
async fn misspelt_rule() {}

#[task(queue = "a", queue = "b")]
async fn two_queues() {}

#[task(identifier = "")]
async fn empty_identifier() {}

#[task(identifier = emails)]
async fn unquoted_identifier() {}

fn main() {}
