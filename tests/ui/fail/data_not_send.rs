use std::rc::Rc;

use graphile_worker::{Data, task};

struct Mailer;

async fn tick() {}

#[task]
async fn holds_rc(mailer: Data<Mailer>, id: i64) {
    let shared = Rc::new(id);
    tick().await;
    let _ = (mailer, shared);
}

fn main() {}
