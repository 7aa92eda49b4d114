//! The arguments of `#[task(...)]`: parsed, checked, and kept with their
//! spans so errors point at the user's tokens.

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser};
use syn::{LitInt, LitStr, Token};

/// The keys `#[task(...)]` accepts, for the "unknown key" message.
const KEYS: &str = "identifier, queue, max_attempts, priority, rename_all, cron";

/// The spellings serde's `rename_all` accepts.
const RENAME_RULES: &[&str] = &[
    "lowercase",
    "UPPERCASE",
    "PascalCase",
    "camelCase",
    "snake_case",
    "SCREAMING_SNAKE_CASE",
    "kebab-case",
    "SCREAMING-KEBAB-CASE",
];

/// Longest task identifier and queue name the database accepts (characters).
const MAX_NAME_CHARS: usize = 128;

/// What `#[task(...)]` said. Every field is optional; `cron` may repeat.
#[derive(Default)]
pub(crate) struct TaskArgs {
    pub(crate) identifier: Option<LitStr>,
    pub(crate) queue: Option<LitStr>,
    pub(crate) max_attempts: Option<i16>,
    pub(crate) priority: Option<i16>,
    pub(crate) rename_all: Option<LitStr>,
    pub(crate) cron: Vec<LitStr>,
    /// Keys seen so far, to refuse a key given twice.
    seen: Vec<String>,
}

impl TaskArgs {
    /// Parses and checks the attribute's arguments.
    pub(crate) fn parse(attr: TokenStream) -> syn::Result<Self> {
        let mut args = TaskArgs::default();
        let parser = syn::meta::parser(|meta| args.parse_one(&meta));
        parser.parse2(attr)?;
        Ok(args)
    }

    fn parse_one(&mut self, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
        let Some(key) = meta.path.get_ident().map(ToString::to_string) else {
            return Err(meta.error(format!(
                "unknown #[task] attribute key; expected one of: {KEYS}"
            )));
        };
        if key != "cron" {
            self.refuse_repeat(&key, meta)?;
        }
        match key.as_str() {
            "identifier" => {
                let lit: LitStr = meta.value()?.parse()?;
                check_name(&lit, "task identifier")?;
                self.identifier = Some(lit);
            }
            "queue" => {
                let lit: LitStr = meta.value()?.parse()?;
                check_name(&lit, "queue name")?;
                self.queue = Some(lit);
            }
            "max_attempts" => {
                let (value, span) = parse_i16(meta.value()?)?;
                if value < 1 {
                    return Err(syn::Error::new(
                        span,
                        "max_attempts must be at least 1; use 1 for a job that is never retried",
                    ));
                }
                self.max_attempts = Some(value);
            }
            "priority" => {
                let (value, _) = parse_i16(meta.value()?)?;
                self.priority = Some(value);
            }
            "rename_all" => {
                let lit: LitStr = meta.value()?.parse()?;
                if !RENAME_RULES.contains(&lit.value().as_str()) {
                    return Err(syn::Error::new_spanned(
                        &lit,
                        format!(
                            "unknown rename_all rule {:?}; expected one of: {}",
                            lit.value(),
                            RENAME_RULES.join(", ")
                        ),
                    ));
                }
                self.rename_all = Some(lit);
            }
            "cron" => {
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().trim().is_empty() {
                    return Err(syn::Error::new_spanned(
                        &lit,
                        "a cron schedule cannot be empty; write five fields, e.g. \"0 4 * * *\"",
                    ));
                }
                self.cron.push(lit);
            }
            _ => {
                return Err(meta.error(format!(
                    "unknown #[task] attribute key `{key}`; expected one of: {KEYS}"
                )));
            }
        }
        Ok(())
    }

    fn refuse_repeat(&mut self, key: &str, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
        if self.seen.iter().any(|k| k == key) {
            return Err(meta.error(format!("`{key}` is given more than once")));
        }
        self.seen.push(key.to_owned());
        Ok(())
    }
}

/// A task identifier or queue name: not empty, at most 128 characters.
fn check_name(lit: &LitStr, what: &str) -> syn::Result<()> {
    let value = lit.value();
    if value.is_empty() {
        return Err(syn::Error::new_spanned(
            lit,
            format!("the {what} cannot be empty"),
        ));
    }
    let chars = value.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(syn::Error::new_spanned(
            lit,
            format!(
                "the {what} is {chars} characters long; the database allows at most {MAX_NAME_CHARS}"
            ),
        ));
    }
    Ok(())
}

/// An integer literal, optionally negative, that fits in a smallint.
fn parse_i16(input: ParseStream<'_>) -> syn::Result<(i16, Span)> {
    let negative = input.peek(Token![-]);
    if negative {
        input.parse::<Token![-]>()?;
    }
    let lit: LitInt = input.parse()?;
    let magnitude: i64 = lit.base10_parse()?;
    let value = if negative { -magnitude } else { magnitude };
    let value = i16::try_from(value).map_err(|_| {
        syn::Error::new_spanned(
            &lit,
            format!(
                "{value} does not fit in the database's smallint column ({} to {})",
                i16::MIN,
                i16::MAX
            ),
        )
    })?;
    Ok((value, lit.span()))
}
