//! `GET /metrics`: the process's [`Metrics`] and the queue depth (read from
//! the database at each scrape, so it is all workers'), in the format the
//! scraper's `Accept` header prefers: OpenMetrics 1.0.0 when it ranks
//! `application/openmetrics-text` first, else the Prometheus text format
//! 0.0.4. The encoding is `prometheus-client`'s ([`Metrics::encode`]).

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use crate::metrics::{Format, Metrics, Scraped};
use crate::store::Store;

/// What a scrape reads.
#[derive(Clone)]
pub(super) struct Scrape {
    metrics: Metrics,
    store: Store,
}

impl FromRef<AppState> for Scrape {
    fn from_ref(app: &AppState) -> Scrape {
        Scrape {
            metrics: app.metrics.clone(),
            store: app.store.clone(),
        }
    }
}

pub(super) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Scrape: FromRef<S>,
{
    Router::new().route("/metrics", get(scrape))
}

/// `GET /metrics` alone, with its own state; [`super::serve`] serves the
/// same route beside the other families.
pub fn router(metrics: Metrics, store: Store) -> Router {
    routes().with_state(Scrape { metrics, store })
}

async fn scrape(State(s): State<Scrape>, headers: HeaderMap) -> Response {
    let format = negotiate(headers.get_all(ACCEPT));
    let queue_depth = match s.store.queue_depth().await {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the queue depth");
            None
        }
    };
    match s.metrics.encode(format, Scraped { queue_depth }) {
        Ok(body) => ([(CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics: encoding failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n").into_response()
        }
    }
}

/// The format the `Accept` header ranks highest among those Herald writes:
/// `application/openmetrics-text` (version 1.0.0, or none given) for
/// OpenMetrics; `text/plain`, `text/*` or `*/*` for the Prometheus text
/// format. A tie goes to the range listed first; without any of them (no
/// header, or only formats Herald does not write, such as OpenMetrics 0.0.1
/// or protobuf) the answer is the Prometheus text format, as client_golang's.
fn negotiate<'a>(accept: impl IntoIterator<Item = &'a HeaderValue>) -> Format {
    let mut best: Option<(f32, Format)> = None;
    let ranges = accept
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for range in ranges {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let (mut q, mut version) = (1.0_f32, None);
        for param in parts {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "q" => q = value.parse().unwrap_or(0.0),
                "version" => version = Some(value),
                _ => {}
            }
        }
        let format = match media.as_str() {
            "application/openmetrics-text" if version.is_none_or(|v| v == "1.0.0") => {
                Format::OpenMetrics
            }
            "text/plain" | "text/*" | "*/*" => Format::Prometheus,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, format));
        }
    }
    best.map_or(Format::Prometheus, |(_, f)| f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(accept: &[&str]) -> Format {
        let values: Vec<HeaderValue> = accept
            .iter()
            .map(|a| HeaderValue::from_str(a).unwrap())
            .collect();
        negotiate(&values)
    }

    #[test]
    fn openmetrics_only_when_ranked_first() {
        assert_eq!(format(&[]), Format::Prometheus);
        assert_eq!(format(&["*/*"]), Format::Prometheus);
        assert_eq!(
            format(&["application/openmetrics-text"]),
            Format::OpenMetrics
        );
        assert_eq!(
            format(&["Application/OpenMetrics-Text; Version=1.0.0; charset=utf-8"]),
            Format::OpenMetrics
        );
        // Prometheus 2's default scrape header.
        assert_eq!(
            format(&[
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            ]),
            Format::OpenMetrics
        );
        assert_eq!(
            format(&["text/plain;version=0.0.4;q=0.9, application/openmetrics-text;q=0.5"]),
            Format::Prometheus
        );
        assert_eq!(
            format(&["text/plain;q=0.2", "application/openmetrics-text;q=0.3"]),
            Format::OpenMetrics
        );
        assert_eq!(
            format(&["application/openmetrics-text;version=0.0.1"]),
            Format::Prometheus
        );
        assert_eq!(
            format(&["application/openmetrics-text;q=0, text/plain"]),
            Format::Prometheus
        );
        assert_eq!(
            format(&["application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily"]),
            Format::Prometheus
        );
    }
}
