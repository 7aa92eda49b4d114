use std::borrow::Cow;

use graphile_worker::task;

#[task]
async fn label(name: Cow<'_, str>) {
    let _ = name;
}

#[task]
async fn tag(tags: Vec<&str>, owner: Option<&'static str>) {
    let _ = (tags, owner);
}

fn main() {}
