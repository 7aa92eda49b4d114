//! The arguments of `#[task(...)]`: parsed, checked, and kept with their
//! spans so errors point at the user's tokens.

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned as _;
use syn::{Lit, LitInt, LitStr, Token};

use crate::duration::parse_duration;

/// The keys `#[task(...)]` accepts, for the "unknown key" message.
const KEYS: &str = "identifier, queue, max_attempts, priority, rename_all, cron, tz, timeout, concurrency, backoff, batch";

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
    /// The IANA time zone of the cron schedules.
    pub(crate) tz: Option<LitStr>,
    /// The time limit, in milliseconds.
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) concurrency: Option<u32>,
    pub(crate) backoff: Option<Backoff>,
    /// A batch task: one `Vec<Item>` parameter, a result per item.
    pub(crate) batch: Option<Span>,
    /// Keys seen so far, to refuse a key given twice.
    seen: Vec<String>,
    /// Where `tz` was given, to refuse it without `cron`.
    tz_span: Option<Span>,
}

/// `backoff(kind, ...)`: a retry policy.
pub(crate) struct Backoff {
    pub(crate) kind: BackoffKind,
    /// `delay` (constant) or `base` (linear, exponential), in milliseconds.
    pub(crate) base_ms: u64,
    pub(crate) factor: Option<f64>,
    pub(crate) cap_ms: Option<u64>,
    pub(crate) jitter: Option<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackoffKind {
    Constant,
    Linear,
    Exponential,
}

impl TaskArgs {
    /// Parses and checks the attribute's arguments.
    pub(crate) fn parse(attr: TokenStream) -> syn::Result<Self> {
        let mut args = TaskArgs::default();
        let parser = syn::meta::parser(|meta| args.parse_one(&meta));
        parser.parse2(attr)?;
        if let Some(span) = args.tz_span
            && args.cron.is_empty()
        {
            return Err(syn::Error::new(
                span,
                "`tz` is the time zone of the task's cron schedules; add a `cron = \"...\"` too",
            ));
        }
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
            "tz" => {
                let lit: LitStr = meta.value()?.parse()?;
                check_time_zone(&lit)?;
                self.tz_span = Some(lit.span());
                self.tz = Some(lit);
            }
            "timeout" => {
                let lit: LitStr = meta.value()?.parse()?;
                let ms = duration_ms(&lit)?;
                if ms == 0 {
                    return Err(syn::Error::new_spanned(
                        &lit,
                        "timeout must be above zero; leave it out for no time limit",
                    ));
                }
                self.timeout_ms = Some(ms);
            }
            "concurrency" => {
                let lit: LitInt = meta.value()?.parse()?;
                let value: u64 = lit.base10_parse()?;
                let value = u32::try_from(value).ok().filter(|v| *v >= 1).ok_or_else(|| {
                    syn::Error::new_spanned(
                        &lit,
                        "concurrency must be at least 1 (jobs of this task at once on one worker)",
                    )
                })?;
                self.concurrency = Some(value);
            }
            "backoff" => {
                self.backoff = Some(parse_backoff(meta)?);
            }
            "batch" => {
                if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                    return Err(meta.error("`batch` takes no value: write #[task(batch)]"));
                }
                self.batch = Some(meta.path.span());
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

/// What `backoff(...)` accepts, for its messages.
const BACKOFF_FORMS: &str = "backoff(constant, delay = \"30s\"), backoff(linear, base = \"10s\"), or backoff(exponential, base = \"1s\", factor = 2, cap = \"1h\"), each with an optional jitter = 0.1";

/// `backoff(kind, key = value, ...)`.
fn parse_backoff(meta: &ParseNestedMeta<'_>) -> syn::Result<Backoff> {
    let mut kind: Option<BackoffKind> = None;
    let mut base_ms: Option<(u64, Span)> = None;
    let mut factor: Option<(f64, Span)> = None;
    let mut cap_ms: Option<u64> = None;
    let mut jitter: Option<f64> = None;
    meta.parse_nested_meta(|inner| {
        let Some(key) = inner.path.get_ident().map(ToString::to_string) else {
            return Err(inner.error(format!("unknown backoff setting; write {BACKOFF_FORMS}")));
        };
        match key.as_str() {
            "constant" | "linear" | "exponential" => {
                if kind.is_some() {
                    return Err(inner.error("give one kind of backoff: constant, linear or exponential"));
                }
                kind = Some(match key.as_str() {
                    "constant" => BackoffKind::Constant,
                    "linear" => BackoffKind::Linear,
                    _ => BackoffKind::Exponential,
                });
            }
            "delay" | "base" => {
                let lit: LitStr = inner.value()?.parse()?;
                base_ms = Some((duration_ms(&lit)?, lit.span()));
            }
            "cap" => {
                let lit: LitStr = inner.value()?.parse()?;
                cap_ms = Some(duration_ms(&lit)?);
            }
            "factor" => {
                let lit: Lit = inner.value()?.parse()?;
                let value = number(&lit)?;
                if !(value >= 1.0 && value.is_finite()) {
                    return Err(syn::Error::new_spanned(&lit, "factor must be at least 1"));
                }
                factor = Some((value, lit.span()));
            }
            "jitter" => {
                let lit: Lit = inner.value()?.parse()?;
                let value = number(&lit)?;
                if !(0.0..=1.0).contains(&value) {
                    return Err(syn::Error::new_spanned(
                        &lit,
                        "jitter is a fraction from 0 to 1 (0.1 spreads each delay by up to 10% either way)",
                    ));
                }
                jitter = Some(value);
            }
            _ => {
                return Err(inner.error(format!(
                    "unknown backoff setting `{key}`; write {BACKOFF_FORMS}"
                )));
            }
        }
        Ok(())
    })?;
    let Some(kind) = kind else {
        return Err(meta.error(format!("say which backoff: {BACKOFF_FORMS}")));
    };
    if let Some((_, span)) = factor
        && kind != BackoffKind::Exponential
    {
        return Err(syn::Error::new(
            span,
            "factor applies to exponential backoff only",
        ));
    }
    let Some((base_ms, _)) = base_ms else {
        let key = if kind == BackoffKind::Constant {
            "delay"
        } else {
            "base"
        };
        return Err(meta.error(format!(
            "this backoff needs `{key} = \"...\"`; write {BACKOFF_FORMS}"
        )));
    };
    Ok(Backoff {
        kind,
        base_ms,
        factor: factor.map(|(f, _)| f),
        cap_ms,
        jitter,
    })
}

/// A float or integer literal.
fn number(lit: &Lit) -> syn::Result<f64> {
    match lit {
        Lit::Float(f) => f.base10_parse(),
        Lit::Int(i) => i.base10_parse::<u64>().map(|v| v as f64),
        other => Err(syn::Error::new_spanned(other, "expected a number")),
    }
}

/// A duration string (`"30s"`, `"1h30m"`, `"500ms"`), in milliseconds.
fn duration_ms(lit: &LitStr) -> syn::Result<u64> {
    parse_duration(&lit.value()).map_err(|reason| syn::Error::new_spanned(lit, reason))
}

/// An IANA zone name's shape (`Europe/Paris`, `UTC`); whether the zone
/// exists is checked when the worker starts.
fn check_time_zone(lit: &LitStr) -> syn::Result<()> {
    let value = lit.value();
    let fine = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
    if fine {
        Ok(())
    } else {
        Err(syn::Error::new_spanned(
            lit,
            format!("{value:?} is not a time zone name; use an IANA name such as \"Europe/Paris\""),
        ))
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
