use graphile_worker::task;

#[task]
async fn greet(name: &str, times: u32) {
    let _ = (name, times);
}

fn main() {}
