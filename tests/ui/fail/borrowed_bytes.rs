use graphile_worker::task;

#[task]
async fn store(key: String, bytes: &[u8]) {
    let _ = (key, bytes);
}

fn main() {}
