use graphile_worker::task;

struct Data;

#[task]
async fn send_email(mailer: Data, to: String) {
    let _ = (mailer, to);
}

fn main() {}
