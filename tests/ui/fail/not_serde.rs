use graphile_worker::task;

#[derive(Debug, Clone)]
struct Connection;

#[task]
async fn use_connection(id: i64, conn: Connection) {
    let _ = (id, conn);
}

fn main() {}
