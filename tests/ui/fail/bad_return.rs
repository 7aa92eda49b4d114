use graphile_worker::task;

#[task]
async fn returns_number(id: i64) -> i64 {
    id
}

fn main() {}
