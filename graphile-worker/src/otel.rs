//! Trace propagation (feature `opentelemetry`): the W3C trace context of
//! the span a job is added in travels with the job, and the job's span
//! continues it — as a child on the first attempt, with a link on retries
//! (a retry is a new piece of work caused by the same request).
//!
//! The context is stored in the job's `flags`, as one flag named
//! `traceparent=00-<trace id>-<span id>-<flags>`: the payload is
//! untouched, so typed decoding is unaffected, and a Node task sees the
//! flag in `job.flags`. Spans come from `tracing`; the application
//! installs `tracing-opentelemetry`'s layer with its tracer.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::job::Job;
use crate::spec::JobSpec;

/// The prefix of the flag that carries the trace context.
const FLAG_PREFIX: &str = "traceparent=";

/// A before-add hook that stamps the current span's trace context on the
/// job (nothing when there is no valid context). Give it to
/// [`WorkerUtils::before_add`](crate::WorkerUtils::before_add), or use
/// [`WorkerUtils::propagate_trace_context`](crate::WorkerUtils::propagate_trace_context).
///
/// ```
/// let mut spec = graphile_worker::JobSpec::default();
/// graphile_worker::stamp_trace_context("send_email", &mut spec);
/// assert_eq!(spec.flags, None); // no OpenTelemetry span is current here
/// ```
pub fn stamp_trace_context(_task: &str, spec: &mut JobSpec) {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return;
    }
    spec.flags.get_or_insert_with(Vec::new).push(format!(
        "{FLAG_PREFIX}00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    ));
}

/// The trace context stamped on `job`, if any.
fn stamped(job: &Job) -> Option<SpanContext> {
    let flags = job.flags.as_ref()?.as_object()?;
    let value = flags.keys().find_map(|k| k.strip_prefix(FLAG_PREFIX))?;
    let mut parts = value.split('-');
    let (version, trace, span, sampled) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() {
        return None;
    }
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(sampled, 16).ok()?),
        true,
        TraceState::NONE,
    );
    sc.is_valid().then_some(sc)
}

/// Continues the trace stamped on `job` in its span: as the parent on the
/// first attempt, as a link on later ones.
pub(crate) fn continue_trace(span: &tracing::Span, job: &Job) {
    let Some(sc) = stamped(job) else {
        return;
    };
    if job.attempts <= 1 {
        let parent = opentelemetry::Context::new().with_remote_span_context(sc);
        let _ = span.set_parent(parent);
    } else {
        span.add_link(sc);
    }
}
