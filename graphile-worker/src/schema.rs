//! The worker schema name and its quoted SQL form.

use crate::error::Error;

/// The PostgreSQL schema that holds graphile-worker's tables and functions.
///
/// The name is kept verbatim and only ever reaches SQL through
/// [`quote_identifier`], so any name PostgreSQL accepts works, including one
/// with spaces or double quotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Schema {
    name: String,
    quoted: String,
}

impl Schema {
    /// Prepares the quoted form of `name`. Call [`Schema::validate`] before
    /// first use to get a clear error for an unusable name.
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            quoted: quote_identifier(name),
        }
    }

    /// Refuses names PostgreSQL cannot use as they are.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let name = &self.name;
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if name.contains('\0') {
            Some("it contains a NUL character")
        } else if name.len() > 63 {
            Some("it is longer than PostgreSQL's 63-byte identifier limit")
        } else if name.contains("$body$") {
            // Inside a `$body$ … $body$` function body the quoted name would
            // end the body early.
            Some("it contains `$body$`, which the migrations use to quote function bodies")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidSchema {
                name: name.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// The schema name as the user gave it.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The schema name as a quoted SQL identifier, ready to splice into SQL.
    pub(crate) fn quoted(&self) -> &str {
        &self.quoted
    }
}

/// Quotes `name` as a PostgreSQL identifier: wraps it in double quotes and
/// doubles any double quote inside.
///
/// The result is always quoted, even when the name would be valid bare, which
/// matches how graphile-worker substitutes its schema into function bodies.
///
/// ```
/// use graphile_worker::quote_identifier;
/// assert_eq!(quote_identifier("graphile_worker"), r#""graphile_worker""#);
/// assert_eq!(quote_identifier(r#"my "odd" schema"#), r#""my ""odd"" schema""#);
/// ```
pub fn quote_identifier(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_plain_and_odd_names() {
        assert_eq!(quote_identifier("a"), "\"a\"");
        assert_eq!(quote_identifier("a\"b c"), "\"a\"\"b c\"");
    }

    #[test]
    fn rejects_unusable_names() {
        assert!(Schema::new("").validate().is_err());
        assert!(Schema::new("a\0b").validate().is_err());
        assert!(Schema::new(&"x".repeat(64)).validate().is_err());
        assert!(Schema::new(&"x".repeat(63)).validate().is_ok());
        assert!(Schema::new("a$body$b").validate().is_err());
        assert!(Schema::new("a$b").validate().is_ok());
    }
}
