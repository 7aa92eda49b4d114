use axum::body::Body;
use axum::http::Request;
use graphile_worker::testing::TestDb;
use graphile_worker_ui::AdminUi;
use http_body_util::BodyExt;
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe() {
    let db = TestDb::new().await;
    let ui = AdminUi::new(db.utils().clone()).router();
    let app = axum::Router::new().nest("/admin", ui.clone());
    for (r, p) in [
        (&app, "/admin"),
        (&app, "/admin/"),
        (&app, "/admin/jobs"),
        (&ui, "/jobs?page=9223372036854775807"),
        (&ui, "/jobs?page="),
    ] {
        let res = r
            .clone()
            .oneshot(Request::get(p).body(Body::empty()).unwrap())
            .await;
        match res {
            Ok(res) => {
                let status = res.status();
                let body = res.into_body().collect().await.unwrap().to_bytes();
                println!(
                    "{p} -> {status}\n{}\n",
                    String::from_utf8_lossy(&body)
                        .chars()
                        .take(3000)
                        .collect::<String>()
                );
            }
            Err(e) => println!("{p} err {e:?}"),
        }
    }
}
