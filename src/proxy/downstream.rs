//! The client side of the Pingora glue: the head guard told that a head was read,
//! framing refusals, errors after a response has started, and client disconnects
//! logged as the routine events they are.

use pingora::proxy::{FailToProxy, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::ctx::RequestCtx;
use super::{respond, upstream_error_kind, MargoProxy};
use crate::downstream::framing;
use crate::downstream::guard::GuardedStream;
use crate::oci::{OciError, OciErrorCode};

/// Pingora has parsed a request head: its guard stops timing and sizing it.
pub(super) fn head_read(session: &Session) {
    if let Some(guard) = session
        .stream()
        .and_then(|s| s.as_any().downcast_ref::<GuardedStream>())
    {
        guard.head_read();
    }
}

/// Refuses ambiguous framing (see [`framing`]) and closes the connection: what follows
/// the head cannot be told apart from a second request. `Ok(true)` when refused.
pub(super) async fn refuse_bad_framing(
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let raw = || {
        session
            .as_http1()
            .map(|h| h.get_headers_raw_bytes())
            .unwrap_or_default()
    };
    let Some(err) = framing::check(session.req_header(), raw) else {
        return Ok(false);
    };
    session.set_keepalive(None);
    respond::oci_error(session, ctx, &err).await?;
    Ok(true)
}

/// The request failed. Before any response went out, the client gets an OCI error.
/// After, nothing may be added to a body the client is already reading: the connection
/// is dropped so the client sees a truncated response, and the access log keeps the
/// status that was sent and the error.
pub(super) async fn fail_to_proxy(
    proxy: &MargoProxy,
    session: &mut Session,
    e: &Error,
    ctx: &mut RequestCtx,
) -> FailToProxy {
    if e.esource() == &ErrorSource::Upstream {
        if let Some(u) = proxy.upstream_of(ctx) {
            proxy
                .state
                .metrics
                .upstream_error(&u.name, upstream_error_kind(e));
        }
    }
    if let Some(sent) = session.response_written() {
        let status = sent.status.as_u16();
        session.set_keepalive(None);
        return FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        };
    }
    let deadline = ctx.header_deadline.as_ref().filter(|d| d.fired());
    let (code, message) = match e.etype() {
        _ if deadline.is_some() => (
            504,
            format!(
                "upstream sent no complete response head within {:?}",
                deadline.map(|d| d.limit()).unwrap_or_default()
            ),
        ),
        ErrorType::HTTPStatus(code) => (*code, "request refused".to_owned()),
        _ => match e.esource() {
            ErrorSource::Downstream if is_disconnect(e) => (0, String::new()),
            ErrorSource::Downstream => (400, "bad request".to_owned()),
            _ => (502, "upstream registry unavailable".to_owned()),
        },
    };
    if code > 0 {
        // The connection is not reused (below): say so, or a keep-alive client
        // sends its next request into a closing socket and gets a reset.
        session.set_keepalive(None);
        let err = OciError::new(OciErrorCode::Unavailable, message).with_status(code);
        if let Err(write_err) = respond::oci_error(session, ctx, &err).await {
            tracing::debug!(error = %write_err, "could not send error response");
        }
    }
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}

fn is_disconnect(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
    )
}

/// A client that goes away mid-request is routine (a cancelled pull, a crashed CI job):
/// logged here at info with its cause instead of Pingora's ERROR line. `true` suppresses
/// Pingora's line.
pub(super) fn quiet_disconnect(session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
    if e.esource() != &ErrorSource::Downstream || !is_disconnect(e) {
        return false;
    }
    tracing::info!(
        target: "margo_proxy::downstream",
        request_id = %ctx.request_id,
        request = %session.request_summary(),
        cause = %e,
        "client disconnected before the response was complete"
    );
    true
}
