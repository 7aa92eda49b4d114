use graphile_worker::{Data, task};

struct Mailer;

#[task]
async fn send_email(#[serde(default)] mailer: Data<Mailer>, to: String) {
    let _ = (mailer, to);
}

fn main() {}
