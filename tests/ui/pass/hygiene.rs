//! The expansion names only `::graphile_worker::__private`, `::core` and
//! `::std`: local items named like std's and graphile_worker's do not
//! disturb it.
#![allow(dead_code, non_camel_case_types)]

mod core {}
mod std {}
mod serde {}
mod inventory {}

struct Result;
struct Option;
struct Task;
struct Box;
struct Vec;
struct String;
struct Send;
struct Future;
struct Default;
struct JobSpec;
struct WorkerUtils;
struct Error;
struct Job;
struct E;
struct Data;
struct TaskData;
struct DataRequirement;
trait Clone {}
trait Debug {}
fn file() {}
fn line() {}

#[graphile_worker::task(queue = "q", max_attempts = 2, cron = "* * * * *")]
async fn hygienic(
    ctx: graphile_worker::JobContext,
    name: ::std::string::String,
    shared: graphile_worker::Data<u32>,
    count: ::core::option::Option<u32>,
) -> ::core::result::Result<(), ::std::string::String> {
    let _ = (ctx, name, shared, count);
    ::core::result::Result::Ok(())
}

fn main() {
    let payload = Hygienic {
        name: ::std::string::String::from("x"),
        count: None,
    };
    let _ = ::core::clone::Clone::clone(&payload);
    assert_eq!(<Hygienic as graphile_worker::Task>::IDENTIFIER, "hygienic");
    assert_eq!(
        <Hygienic as graphile_worker::Task>::default_spec()
            .queue_name
            .as_deref(),
        ::core::option::Option::Some("q")
    );
    assert_eq!(
        <Hygienic as graphile_worker::Task>::required_data(),
        [graphile_worker::DataRequirement::of::<u32>()]
    );
}
