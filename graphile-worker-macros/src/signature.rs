//! Reading the annotated function: which parameters become payload fields,
//! where the context and the worker's shared values go, and every shape
//! `#[task]` refuses.

use proc_macro2::Span;
use quote::ToTokens;
use syn::{Attribute, FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, Signature, Type};

/// The name of the context type, recognised by its last path segment.
const CONTEXT_TYPE: &str = "JobContext";

/// The name of the shared-value type, recognised by its last path segment.
const DATA_TYPE: &str = "Data";

/// The start of every refusal of a borrowed payload parameter.
const MUST_OWN: &str =
    "task parameters are deserialised from the job's JSON payload and must own their data";

/// One parameter of the task function, in declaration order.
pub(crate) enum Param {
    /// The `JobContext` parameter.
    Context,
    /// A `Data<T>` parameter: a value registered on the worker, not part of
    /// the payload. Holds the parameter's type as written.
    Data(Box<Type>),
    /// A payload field.
    Field(Box<Field>),
}

/// A parameter that becomes a field of the payload struct.
pub(crate) struct Field {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
    /// `///` comments on the parameter.
    pub(crate) docs: Vec<Attribute>,
    /// `#[serde(...)]` attributes on the parameter.
    pub(crate) serde: Vec<Attribute>,
}

/// The validated task function.
pub(crate) struct TaskFn {
    /// The function as it will be emitted: the user's, minus the parameter
    /// attributes that belong to the payload struct.
    pub(crate) func: ItemFn,
    /// The parameters, in order.
    pub(crate) params: Vec<Param>,
    /// The payload struct's name: the function name in UpperCamelCase.
    pub(crate) struct_ident: Ident,
    /// The function's `#[doc]` attributes.
    pub(crate) docs: Vec<Attribute>,
    /// `#[serde(...)]` attributes on the function, for the struct.
    pub(crate) serde: Vec<Attribute>,
    /// `#[cfg(...)]` attributes on the function, repeated on every
    /// generated item.
    pub(crate) cfgs: Vec<Attribute>,
    /// Where errors about the returned future point: the function's name.
    pub(crate) future_span: Span,
}

/// Removes the attributes that belong to the payload struct, so the emitted
/// function compiles even when the rest of the expansion is refused.
pub(crate) fn clean(
    func: &mut ItemFn,
) -> (Vec<Attribute>, Vec<Vec<Attribute>>, Vec<Vec<Attribute>>) {
    let fn_serde = take_attrs(&mut func.attrs, "serde");
    let mut docs = Vec::new();
    let mut serde = Vec::new();
    for input in &mut func.sig.inputs {
        let attrs = match input {
            FnArg::Typed(pat_type) => &mut pat_type.attrs,
            FnArg::Receiver(receiver) => &mut receiver.attrs,
        };
        docs.push(take_attrs(attrs, "doc"));
        serde.push(take_attrs(attrs, "serde"));
    }
    (fn_serde, docs, serde)
}

fn take_attrs(attrs: &mut Vec<Attribute>, name: &str) -> Vec<Attribute> {
    let (taken, kept) = std::mem::take(attrs)
        .into_iter()
        .partition(|a| a.path().is_ident(name));
    *attrs = kept;
    taken
}

fn attrs_named(attrs: &[Attribute], name: &str) -> Vec<Attribute> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident(name))
        .cloned()
        .collect()
}

/// Checks the function and splits its parameters. Every refusal is
/// collected, so one build shows all of them.
pub(crate) fn validate(mut func: ItemFn) -> syn::Result<TaskFn> {
    let (fn_serde, param_docs, param_serde) = clean(&mut func);
    let mut errors = Errors::default();
    check_signature(&func.sig, &mut errors);

    let mut params = Vec::new();
    let mut context: Option<&Type> = None;
    for ((input, docs), serde) in func.sig.inputs.iter().zip(param_docs).zip(param_serde) {
        let pat_type = match input {
            FnArg::Receiver(receiver) => {
                errors.push(syn::Error::new_spanned(
                    receiver,
                    "#[task] functions cannot take `self`; write a free function whose parameters are the job's payload",
                ));
                continue;
            }
            FnArg::Typed(pat_type) => pat_type,
        };
        if let Some(cfg) = pat_type.attrs.iter().find(|a| a.path().is_ident("cfg")) {
            errors.push(syn::Error::new_spanned(
                cfg,
                "#[cfg] on a task parameter is not supported: the payload struct must have the same fields in every build",
            ));
        }
        match context_kind(&pat_type.ty) {
            ContextKind::ByValue => {
                if let Some(first) = context {
                    let mut error = syn::Error::new_spanned(
                        &pat_type.ty,
                        "a task takes at most one JobContext parameter; remove this one",
                    );
                    error.combine(syn::Error::new_spanned(
                        first,
                        "the first JobContext parameter is here",
                    ));
                    errors.push(error);
                } else {
                    context = Some(&pat_type.ty);
                }
                params.push(Param::Context);
                continue;
            }
            ContextKind::Borrowed => {
                errors.push(syn::Error::new_spanned(
                    &pat_type.ty,
                    "take the JobContext by value (`ctx: JobContext`): the task's future must not borrow from the worker",
                ));
                continue;
            }
            ContextKind::No => {}
        }
        match data_kind(&pat_type.ty) {
            DataKind::ByValue => {
                if let Some(attr) = serde.first() {
                    errors.push(syn::Error::new_spanned(
                        attr,
                        "#[serde] does not apply to a `Data` parameter: its value comes from the worker, not from the job's payload",
                    ));
                }
                params.push(Param::Data(pat_type.ty.clone()));
                continue;
            }
            DataKind::Borrowed => {
                errors.push(syn::Error::new_spanned(
                    &pat_type.ty,
                    "take `Data<T>` by value, without `&`: it is cheap to clone (an `Arc`), and the task's future must not borrow from the worker",
                ));
                continue;
            }
            DataKind::BadArguments(last) => {
                errors.push(syn::Error::new_spanned(
                    last,
                    "`Data` needs the type of the shared value as its one argument, as in `Data<Mailer>`; `#[task]` reserves the name, so rename a payload type called `Data`",
                ));
                continue;
            }
            DataKind::No => {}
        }
        let ident = match &*pat_type.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => pat.ident.clone(),
            other => {
                errors.push(syn::Error::new_spanned(
                    other,
                    "use a plain parameter name here: each task parameter becomes a named field of the payload struct",
                ));
                continue;
            }
        };
        if let Some(impl_trait) = find_impl_trait(&pat_type.ty) {
            errors.push(syn::Error::new_spanned(
                impl_trait,
                "`impl Trait` makes the task generic; a task parameter needs a concrete type that serde can decode",
            ));
            continue;
        }
        if let Some(error) = find_borrow(&pat_type.ty) {
            errors.push(error);
            continue;
        }
        params.push(Param::Field(Box::new(Field {
            ident,
            ty: (*pat_type.ty).clone(),
            docs,
            serde,
        })));
    }
    errors.finish()?;

    let struct_ident = struct_name(&func.sig.ident)?;
    Ok(TaskFn {
        docs: attrs_named(&func.attrs, "doc"),
        cfgs: attrs_named(&func.attrs, "cfg"),
        serde: fn_serde,
        future_span: func.sig.ident.span(),
        struct_ident,
        params,
        func,
    })
}

fn check_signature(sig: &Signature, errors: &mut Errors) {
    if let Some(constness) = &sig.constness {
        errors.push(syn::Error::new_spanned(
            constness,
            "#[task] functions cannot be `const`",
        ));
    }
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            format!(
                "#[task] functions must be async; write `async fn {}`",
                sig.ident
            ),
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(syn::Error::new_spanned(
            unsafety,
            "#[task] functions cannot be `unsafe`: the worker calls them with data from the database",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "#[task] functions cannot have an `extern` ABI",
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics.params,
            "#[task] functions cannot be generic: the worker decodes each payload into one concrete type",
        ));
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            where_clause,
            "#[task] functions cannot have a `where` clause: the worker decodes each payload into one concrete type",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            "#[task] functions cannot be variadic",
        ));
    }
}

enum ContextKind {
    ByValue,
    Borrowed,
    No,
}

fn context_kind(ty: &Type) -> ContextKind {
    match ty {
        Type::Path(path) if path.qself.is_none() => match path.path.segments.last() {
            Some(last) if last.ident == CONTEXT_TYPE && last.arguments.is_none() => {
                ContextKind::ByValue
            }
            _ => ContextKind::No,
        },
        Type::Reference(reference) => match context_kind(&reference.elem) {
            ContextKind::No => ContextKind::No,
            _ => ContextKind::Borrowed,
        },
        Type::Paren(inner) => context_kind(&inner.elem),
        Type::Group(inner) => context_kind(&inner.elem),
        _ => ContextKind::No,
    }
}

enum DataKind<'a> {
    /// `Data<T>`.
    ByValue,
    /// `&Data<T>`, `&mut Data<T>`.
    Borrowed,
    /// `Data`, `Data<A, B>`, `Data<'a>`: the last path segment, to point at.
    BadArguments(&'a syn::PathSegment),
    No,
}

fn data_kind(ty: &Type) -> DataKind<'_> {
    match ty {
        Type::Path(path) if path.qself.is_none() => match path.path.segments.last() {
            Some(last) if last.ident == DATA_TYPE => match &last.arguments {
                PathArguments::AngleBracketed(args)
                    if args.args.len() == 1
                        && matches!(args.args.first(), Some(GenericArgument::Type(_))) =>
                {
                    DataKind::ByValue
                }
                _ => DataKind::BadArguments(last),
            },
            _ => DataKind::No,
        },
        Type::Reference(reference) => match data_kind(&reference.elem) {
            DataKind::No => DataKind::No,
            _ => DataKind::Borrowed,
        },
        Type::Paren(inner) => data_kind(&inner.elem),
        Type::Group(inner) => data_kind(&inner.elem),
        _ => DataKind::No,
    }
}

/// The refusal of a payload type that borrows: a reference or a lifetime
/// other than `'static` anywhere in it (such a field cannot be decoded into
/// a payload that outlives the job's JSON). Points at the borrowing part.
fn find_borrow(ty: &Type) -> Option<syn::Error> {
    match ty {
        Type::Reference(reference) => Some(must_own(ty, owned_for(&reference.elem))),
        Type::Array(t) => find_borrow(&t.elem),
        Type::Slice(t) => find_borrow(&t.elem),
        Type::Group(t) => find_borrow(&t.elem),
        Type::Paren(t) => find_borrow(&t.elem),
        Type::Tuple(t) => t.elems.iter().find_map(find_borrow),
        Type::Path(t) => {
            let in_qself = t.qself.as_ref().and_then(|q| find_borrow(&q.ty));
            in_qself.or_else(|| {
                t.path.segments.iter().find_map(|segment| {
                    let PathArguments::AngleBracketed(args) = &segment.arguments else {
                        return None;
                    };
                    args.args.iter().find_map(|arg| match arg {
                        GenericArgument::Lifetime(lifetime) if lifetime.ident != "static" => {
                            Some(must_own(ty, cow_owned(segment)))
                        }
                        GenericArgument::Type(t) => find_borrow(t),
                        GenericArgument::AssocType(assoc) => find_borrow(&assoc.ty),
                        _ => None,
                    })
                })
            })
        }
        Type::TraitObject(t) => t.bounds.iter().find_map(|bound| match bound {
            syn::TypeParamBound::Lifetime(lifetime) if lifetime.ident != "static" => {
                Some(must_own(ty, None))
            }
            _ => None,
        }),
        _ => None,
    }
}

/// "Must own their data: use `owned` instead of `ty`", at `ty`.
fn must_own(ty: &Type, owned: Option<String>) -> syn::Error {
    let found = type_text(ty);
    let use_instead = match owned {
        Some(owned) => format!("use an owned type such as `{owned}` instead of `{found}`"),
        None => format!("use an owned type instead of `{found}`"),
    };
    syn::Error::new_spanned(ty, format!("{MUST_OWN}: {use_instead}"))
}

/// The owned counterpart of a borrowed `&elem`, when there is an obvious
/// one: `String` for `str`, `Vec<T>` for `[T]`, `PathBuf` for `Path`, and
/// the type itself for a sized path type without lifetimes.
fn owned_for(elem: &Type) -> Option<String> {
    match elem {
        Type::Slice(slice) if find_borrow(&slice.elem).is_none() => {
            Some(format!("Vec<{}>", type_text(&slice.elem)))
        }
        Type::Paren(t) => owned_for(&t.elem),
        Type::Group(t) => owned_for(&t.elem),
        Type::Path(path) if path.qself.is_none() && find_borrow(elem).is_none() => {
            let last = path.path.segments.last()?;
            if !last.arguments.is_none() {
                return Some(type_text(elem));
            }
            Some(match last.ident.to_string().as_str() {
                "str" => "String".to_owned(),
                "Path" => "PathBuf".to_owned(),
                "OsStr" => "OsString".to_owned(),
                "CStr" => "CString".to_owned(),
                _ => type_text(elem),
            })
        }
        Type::Array(_) | Type::Tuple(_) if find_borrow(elem).is_none() => Some(type_text(elem)),
        _ => None,
    }
}

/// `String` for `Cow<'a, str>`, `Vec<T>` for `Cow<'a, [T]>`.
fn cow_owned(segment: &syn::PathSegment) -> Option<String> {
    if segment.ident != "Cow" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &segment.arguments else {
        return None;
    };
    args.args.iter().find_map(|arg| match arg {
        GenericArgument::Type(Type::Path(path))
            if path.qself.is_none() && path.path.is_ident("str") =>
        {
            Some("String".to_owned())
        }
        GenericArgument::Type(Type::Slice(slice)) if find_borrow(&slice.elem).is_none() => {
            Some(format!("Vec<{}>", type_text(&slice.elem)))
        }
        _ => None,
    })
}

/// A type as the user would write it, for messages: `Vec<u8>`, not the
/// token stream's `Vec < u8 >`.
fn type_text(ty: &Type) -> String {
    let mut text = ty.to_token_stream().to_string();
    for (from, to) in [
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        (" ;", ";"),
        (" ::", "::"),
        (":: ", "::"),
        ("& ", "&"),
        ("[ ", "["),
        (" ]", "]"),
        ("( ", "("),
        (" )", ")"),
    ] {
        text = text.replace(from, to);
    }
    text
}

/// The first `impl Trait` inside a type, if any.
fn find_impl_trait(ty: &Type) -> Option<&Type> {
    match ty {
        Type::ImplTrait(_) => Some(ty),
        Type::Array(t) => find_impl_trait(&t.elem),
        Type::Slice(t) => find_impl_trait(&t.elem),
        Type::Group(t) => find_impl_trait(&t.elem),
        Type::Paren(t) => find_impl_trait(&t.elem),
        Type::Ptr(t) => find_impl_trait(&t.elem),
        Type::Reference(t) => find_impl_trait(&t.elem),
        Type::Tuple(t) => t.elems.iter().find_map(find_impl_trait),
        Type::Path(t) => t
            .path
            .segments
            .iter()
            .find_map(|segment| match &segment.arguments {
                syn::PathArguments::AngleBracketed(args) => {
                    args.args.iter().find_map(|arg| match arg {
                        syn::GenericArgument::Type(t) => find_impl_trait(t),
                        _ => None,
                    })
                }
                _ => None,
            }),
        _ => None,
    }
}

/// `send_email` → `SendEmail`; `r#type` → `Type`.
fn struct_name(fn_ident: &Ident) -> syn::Result<Ident> {
    let name = fn_ident.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);
    let mut out = String::with_capacity(name.len());
    for word in name.split('_') {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(syn::Error::new_spanned(
            fn_ident,
            "cannot derive a payload struct name from this function name; rename the function",
        ));
    }
    Ok(Ident::new(&out, fn_ident.span()))
}

/// Errors gathered during validation, reported together.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(existing) => existing.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_names_are_upper_camel_case() {
        let name = |s: &str| {
            struct_name(&syn::parse_str::<Ident>(s).unwrap())
                .unwrap()
                .to_string()
        };
        assert_eq!(name("send_email"), "SendEmail");
        assert_eq!(name("ping"), "Ping");
        assert_eq!(name("_private_task"), "PrivateTask");
        assert_eq!(name("r#type"), "Type");
        assert_eq!(name("resize_v2_image"), "ResizeV2Image");
        assert_eq!(name("alreadyCamel"), "AlreadyCamel");
    }

    fn ty(s: &str) -> Type {
        syn::parse_str(s).unwrap()
    }

    #[test]
    fn data_parameters_are_recognised_by_name() {
        let kind = |s: &str| match data_kind(&ty(s)) {
            DataKind::ByValue => "value",
            DataKind::Borrowed => "borrowed",
            DataKind::BadArguments(_) => "bad",
            DataKind::No => "no",
        };
        assert_eq!(kind("Data<Mailer>"), "value");
        assert_eq!(kind("graphile_worker::Data<Arc<Mailer>>"), "value");
        assert_eq!(kind("&Data<Mailer>"), "borrowed");
        assert_eq!(kind("&mut graphile_worker::Data<Mailer>"), "borrowed");
        assert_eq!(kind("Data"), "bad");
        assert_eq!(kind("Data<A, B>"), "bad");
        assert_eq!(kind("Data<'a>"), "bad");
        assert_eq!(kind("Vec<Data<Mailer>>"), "no");
        assert_eq!(kind("DataSet<u8>"), "no");
    }

    #[test]
    fn borrowed_payload_types_name_the_owned_type() {
        let message = |s: &str| find_borrow(&ty(s)).map(|e| e.to_string());
        let suggests = |s: &str, owned: &str, found: &str| {
            assert_eq!(
                message(s).as_deref(),
                Some(
                    format!("{MUST_OWN}: use an owned type such as `{owned}` instead of `{found}`")
                        .as_str()
                ),
                "{s}"
            );
        };
        suggests("&str", "String", "&str");
        suggests("&'static str", "String", "&'static str");
        suggests("&mut str", "String", "&mut str");
        suggests("&[u8]", "Vec<u8>", "&[u8]");
        suggests("&[Vec<u8>]", "Vec<Vec<u8>>", "&[Vec<u8>]");
        suggests("&std::path::Path", "PathBuf", "&std::path::Path");
        suggests("&Option<String>", "Option<String>", "&Option<String>");
        suggests("Vec<&str>", "String", "&str");
        suggests("HashMap<String, &[u8]>", "Vec<u8>", "&[u8]");
        suggests("(i64, &str)", "String", "&str");
        suggests("Cow<'a, str>", "String", "Cow<'a, str>");
        suggests("Cow<'_, [u8]>", "Vec<u8>", "Cow<'_, [u8]>");
        assert_eq!(
            message("&dyn Display").as_deref(),
            Some(format!("{MUST_OWN}: use an owned type instead of `&dyn Display`").as_str())
        );
        assert!(
            message("Record<'a>")
                .unwrap()
                .contains("instead of `Record<'a>`")
        );
        for owned in [
            "String",
            "Vec<u8>",
            "Cow<'static, str>",
            "Option<Box<str>>",
            "[u8; 4]",
            "fn(&str)",
        ] {
            assert_eq!(message(owned), None, "{owned}");
        }
    }
}
