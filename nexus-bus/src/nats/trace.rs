//! The `tracing` context of a published event, carried in its message's headers (feature
//! `otel`).
//!
//! At publish, the OpenTelemetry context of the current `tracing` span is written into the
//! headers by the propagator installed with
//! [`opentelemetry::global::set_text_map_propagator`] (W3C `traceparent` with
//! `TraceContextPropagator`). On the far side, a message that carries one is dispatched inside
//! a `nexus.receive` span whose parent is that context: the far side's handlers, and what they
//! publish in turn, belong to the same trace.
//!
//! Without the feature, both ends do nothing and cost nothing.

use async_nats::HeaderMap;
use nexus_core::Event;

#[cfg(feature = "otel")]
mod carried {
    use async_nats::{HeaderMap, HeaderName, HeaderValue};
    use opentelemetry::propagation::{Extractor, Injector};
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    /// Writes what the propagator gives into headers; a name or value NATS cannot carry (a line
    /// break) is left out rather than sent broken.
    struct Writer<'a>(&'a mut HeaderMap);

    impl Injector for Writer<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) = (key.parse::<HeaderName>(), value.parse::<HeaderValue>())
            {
                self.0.insert(name, value);
            }
        }
    }

    struct Reader<'a>(&'a HeaderMap);

    impl Extractor for Reader<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(HeaderValue::as_str)
        }

        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(name, _)| name.as_ref()).collect()
        }
    }

    pub(super) fn current() -> Option<opentelemetry::Context> {
        let span = tracing::Span::current();
        if span.is_none() {
            return None;
        }
        let context = span.context();
        context.span().span_context().is_valid().then_some(context)
    }

    pub(super) fn write(headers: &mut HeaderMap, context: &opentelemetry::Context) {
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(context, &mut Writer(headers));
        });
    }

    pub(super) fn parent(headers: &HeaderMap) -> Option<opentelemetry::Context> {
        let context = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&Reader(headers))
        });
        context.span().span_context().is_valid().then_some(context)
    }

    pub(super) fn adopt(span: &tracing::Span, parent: opentelemetry::Context) {
        // Fails only when no OpenTelemetry layer is installed: then there is no trace to join.
        let _ = span.set_parent(parent);
    }
}

/// A trace context to carry: OpenTelemetry's with the feature `otel`; without it there is
/// none, ever.
#[cfg(feature = "otel")]
pub(super) type Context = opentelemetry::Context;
/// A trace context to carry: OpenTelemetry's with the feature `otel`; without it there is
/// none, ever.
#[cfg(not(feature = "otel"))]
pub(super) type Context = std::convert::Infallible;

/// The trace context of the current span, when it has one to carry.
#[inline]
pub(super) fn current() -> Option<Context> {
    #[cfg(feature = "otel")]
    return carried::current();
    #[cfg(not(feature = "otel"))]
    None
}

/// Writes `context` into `headers`, as the installed propagator says.
#[inline]
pub(super) fn write(headers: &mut HeaderMap, context: &Context) {
    #[cfg(feature = "otel")]
    carried::write(headers, context);
    #[cfg(not(feature = "otel"))]
    {
        let _ = headers;
        match *context {}
    }
}

/// The span to dispatch a received event in: a child of the trace context its message
/// carries, or none when it carries none.
#[inline]
pub(super) fn receive_span(
    headers: Option<&HeaderMap>,
    subject: &str,
    event: &Event,
) -> Option<tracing::Span> {
    #[cfg(feature = "otel")]
    {
        let parent = carried::parent(headers?)?;
        let span = tracing::info_span!(
            "nexus.receive",
            subject,
            id = event.id,
            event_type = %event.event_type
        );
        carried::adopt(&span, parent);
        Some(span)
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = (headers, subject, event);
        None
    }
}
