//! The struct, its fields and its enqueue helpers take the function's
//! visibility; `#[cfg]` on the function applies to everything generated.

mod tasks {
    use graphile_worker::task;

    #[task]
    pub(crate) async fn crate_visible(id: i64) {
        let _ = id;
    }

    #[task]
    pub async fn public(id: i64) {
        let _ = id;
    }

    #[task]
    #[cfg(any())]
    pub async fn compiled_out(id: i64) {
        let _ = id;
    }

    #[task]
    #[cfg(all())]
    pub async fn compiled_in(r#type: String) {
        let _ = r#type;
    }
}

fn main() {
    let _ = tasks::CrateVisible { id: 1 };
    let _ = tasks::Public { id: 2 };
    let _ = tasks::CompiledIn { r#type: "a".into() };
    let _enqueue = tasks::Public::enqueue;
    assert_eq!(
        serde_json::to_value(tasks::CompiledIn { r#type: "a".into() }).unwrap(),
        serde_json::json!({"type": "a"})
    );
    let mut ids: Vec<_> = graphile_worker::registered_tasks()
        .map(|t| t.identifier())
        .collect();
    ids.sort();
    assert_eq!(ids, ["compiled_in", "crate_visible", "public"]);
}
