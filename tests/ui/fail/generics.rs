use graphile_worker::task;

#[task]
async fn send_any<T: serde::Serialize>(value: T) {
    let _ = value;
}

#[task]
async fn send_where(value: u32)
where
    u32: Copy,
{
    let _ = value;
}

#[task]
async fn send_impl(value: impl serde::Serialize) {
    let _ = value;
}

fn main() {}
