//! Doc comments carry over, and every generated public item is documented:
//! this crate denies missing docs.
#![deny(missing_docs)]

use graphile_worker::task;

/// Charges a customer.
///
/// Idempotent per `invoice_id`.
#[task]
pub async fn charge_customer(
    /// The invoice to charge.
    invoice_id: i64,
    /// Amount in cents.
    amount: u64,
    currency: String,
) {
    let _ = (invoice_id, amount, currency);
}

/// Undocumented parameters and functions get generated docs.
pub mod undocumented {
    #[allow(missing_docs)]
    #[graphile_worker::task]
    pub async fn refund(invoice_id: i64) {
        let _ = invoice_id;
    }
}

fn main() {
    let _ = ChargeCustomer {
        invoice_id: 1,
        amount: 2,
        currency: "EUR".into(),
    };
    let _ = undocumented::Refund { invoice_id: 1 };
}
