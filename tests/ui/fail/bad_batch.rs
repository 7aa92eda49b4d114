use graphile_worker::{TaskError, task};

#[task(batch)]
async fn not_a_vec(items: String) -> Vec<Result<(), TaskError>> {
    let _ = items;
    Vec::new()
}

#[task(batch)]
async fn two_params(a: Vec<i64>, b: Vec<i64>) -> Vec<Result<(), TaskError>> {
    let _ = (a, b);
    Vec::new()
}

#[task(batch, rename_all = "camelCase")]
async fn renamed(items: Vec<i64>) -> Vec<Result<(), TaskError>> {
    let _ = items;
    Vec::new()
}

#[task(batch = true)]
async fn valued(items: Vec<i64>) -> Vec<Result<(), TaskError>> {
    let _ = items;
    Vec::new()
}

#[task(batch)]
async fn one_result(items: Vec<i64>) -> Result<(), TaskError> {
    let _ = items;
    Ok(())
}

fn main() {}
