use graphile_worker::task;

#[task]
fn send_email(to: String) {
    let _ = to;
}

fn main() {
    // The function is still emitted, so callers keep compiling.
    send_email(String::new());
}
