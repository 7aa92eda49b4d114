use std::rc::Rc;

use graphile_worker::task;

async fn tick() {}

#[task]
async fn holds_rc(id: i64) {
    let shared = Rc::new(id);
    tick().await;
    let _ = shared;
}

fn main() {}
