//! Reading the annotated function: which parameters become payload fields,
//! where the context goes, and every shape `#[task]` refuses.

use proc_macro2::Span;
use syn::{Attribute, FnArg, Ident, ItemFn, Pat, Signature, Type};

/// The name of the context type, recognised by its last path segment.
const CONTEXT_TYPE: &str = "JobContext";

/// One parameter of the task function, in declaration order.
pub(crate) enum Param {
    /// The `JobContext` parameter.
    Context,
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
}
