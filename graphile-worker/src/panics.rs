//! Catching a task's panic with where it happened: a process-wide panic
//! hook, installed once, records the location and message of panics raised
//! while a task is being polled, instead of printing them (the job's log
//! line carries them). Panics anywhere else go to the hook that was there
//! before.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;

thread_local! {
    /// A task is being polled on this thread.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
    /// What the hook saw of the last task panic on this thread.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

/// Installs the hook (once per process).
pub(crate) fn install_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_TASK.with(Cell::get) {
                let detail = describe(info);
                let backtrace = std::backtrace::Backtrace::capture();
                if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
                    tracing::error!("task panicked at {detail}\n{backtrace}");
                }
                LAST.with(|last| *last.borrow_mut() = Some(detail));
            } else {
                previous(info);
            }
        }));
    });
}

/// `file:line:column: message`, as the default hook prints it.
fn describe(info: &PanicHookInfo<'_>) -> String {
    let message = payload_text(info.payload());
    match info.location() {
        Some(at) => format!("{}:{}:{}: {message}", at.file(), at.line(), at.column()),
        None => message,
    }
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs `f` as task code: a panic becomes `Err` with the text to store,
/// `at file:line:column: message` when the hook saw it, else `: message`.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    let was = IN_TASK.with(|t| t.replace(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    IN_TASK.with(|t| t.set(was));
    result.map_err(|payload| match LAST.with(|last| last.borrow_mut().take()) {
        Some(detail) => format!(" at {detail}"),
        None => format!(": {}", payload_text(&*payload)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_names_its_location() {
        install_hook();
        let line = line!() + 1;
        let err = catch(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(err, format!(" at {}:{line}:28: boom 7", file!()));
        assert_eq!(catch(|| 5).unwrap(), 5);
    }
}
