//! The public handles (`Worker`, `WorkerUtils`, `ShutdownHandle`) and the
//! error type are `Send + Sync + 'static`, so users can share them across
//! tasks and threads. No database needed.

use graphile_worker::{Error, Worker, WorkerUtils};

const _: () = {
    fn shareable<T: Send + Sync + 'static>() {}
    let _ = shareable::<Worker>;
    let _ = shareable::<WorkerUtils>;
    let _ = shareable::<graphile_worker::ShutdownHandle>;
    let _ = shareable::<Error>;
};

#[test]
fn worker_and_utils_are_send_sync_and_static() {
    // The assertion is the `const` above: this file would not compile
    // otherwise. Here it is also used the way users do, across a spawn.
    fn moves_to_a_task<T: Send + Sync + 'static>(value: T) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || drop(value))
    }
    let _ = moves_to_a_task::<Option<Worker>>(None);
    let _ = moves_to_a_task::<Option<WorkerUtils>>(None);
}
