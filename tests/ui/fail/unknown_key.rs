use graphile_worker::task;

#[task(queue = "emails", retries = 3)]
async fn send_email(to: String) {
    let _ = to;
}

fn main() {}
