use graphile_worker::task;

#[task]
struct SendEmail {
    to: String,
}

fn main() {}
