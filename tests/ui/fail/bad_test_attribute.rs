use graphile_worker::testing::TestDb;

#[graphile_worker::test]
fn not_async(db: TestDb) {
    let _ = db;
}

#[graphile_worker::test(schema = "shop")]
async fn with_arguments(db: TestDb) {
    let _ = db;
}

#[graphile_worker::test]
async fn two_parameters(db: TestDb, retries: u32) {
    let _ = (db, retries);
}

fn main() {}
