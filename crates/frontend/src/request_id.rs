//! The request id of the HTTP request being served: the front-end enters it around the
//! request's handling ([`serve`]: a log span `request{request_id=…}` and a task-local the
//! coordinator calls read), and [`crate::Pool::call`] sends it to the coordinator in the
//! [`hyok_proto::request_id::HEADER`] metadata entry. See [`hyok_proto::request_id`] for the
//! whole path.

use std::future::Future;
use std::sync::Arc;
use tracing::Instrument as _;

tokio::task_local! {
    static CURRENT: Arc<str>;
}

/// Runs `handling` as the request `id`: inside a span `request{request_id=id}` (so every log
/// line of the request carries it) and with [`current`] answering `id`.
pub async fn serve<F: Future>(id: &str, handling: F) -> F::Output {
    let id: Arc<str> = Arc::from(hyok_proto::request_id::clip(id));
    let span = tracing::info_span!("request", request_id = &*id);
    CURRENT.scope(id, handling.instrument(span)).await
}

/// The id of the request being served by this task, if any.
pub fn current() -> Option<Arc<str>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// `what`, prefixed with the id of the request being served (`dke-5f0c… what`), for a
/// coordinator call whose `request_id` field is a description the front-end makes up: the
/// coordinator, the nodes and their audit entries then carry the id too.
pub fn tagged(what: &str) -> String {
    match current() {
        Some(id) if !what.starts_with(&*id) => format!("{id} {what}"),
        _ => what.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_id_is_current_inside_the_request_only() {
        assert_eq!(current(), None);
        assert_eq!(tagged("dke k/1"), "dke k/1");
        let inside = serve("dke-1", async { (current(), tagged("dke k/1"), tagged("dke-1 again")) }).await;
        assert_eq!(inside, (Some(Arc::from("dke-1")), "dke-1 dke k/1".to_owned(), "dke-1 again".to_owned()));
        assert_eq!(current(), None);
    }
}
