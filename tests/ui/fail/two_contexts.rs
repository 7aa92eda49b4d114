use graphile_worker::{task, JobContext};

#[task]
async fn twice(ctx: JobContext, id: i64, again: JobContext) {
    let _ = (ctx, id, again);
}

#[task]
async fn borrowed(ctx: &JobContext) {
    let _ = ctx;
}

fn main() {}
