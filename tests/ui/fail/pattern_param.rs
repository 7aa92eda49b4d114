use graphile_worker::task;

#[task]
async fn add_pair((a, b): (i32, i32), _: String, ref name: String) {
    let _ = (a, b, name);
}

fn main() {}
