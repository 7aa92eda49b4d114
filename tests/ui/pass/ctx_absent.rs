//! No context parameter, `()` returned; the function stays callable.

use graphile_worker::{Task, task};

#[task]
async fn add_numbers(a: i64, b: i64) {
    let _ = a + b;
}

/// The context may come after the payload parameters too.
#[task]
async fn log_line(line: String, ctx: graphile_worker::JobContext) -> () {
    let _ = (line, ctx.job_id());
}

fn main() {
    assert_eq!(AddNumbers::IDENTIFIER, "add_numbers");
    assert_eq!(
        serde_json::to_value(AddNumbers { a: 1, b: 2 }).unwrap(),
        serde_json::json!({"a": 1, "b": 2})
    );
    assert_eq!(LogLine::IDENTIFIER, "log_line");
    assert_eq!(
        serde_json::to_value(LogLine { line: "x".into() }).unwrap(),
        serde_json::json!({"line": "x"})
    );
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(add_numbers(1, 2));
}
