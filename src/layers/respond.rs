//! `DialectLayer`: marks a request with its [`Dialect`] and renders every error from the layers
//! below it as that dialect's error answer: the one place a chat stack turns a
//! [`GatewayError`] into a response.
//!
//! The layers under it return their failures as `Err(GatewayError)` (or an error that converts
//! into one); they never build error bodies themselves. Above it the service is infallible,
//! which is what axum's routers and hyper's servers want. A failure of the inner service's
//! `poll_ready` is not lost either: it is kept and becomes the answer of the next call.
//!
//! ```
//! use kiro_gateway::body::Body;
//! use kiro_gateway::dialect::Dialect;
//! use kiro_gateway::error::GatewayError;
//! use kiro_gateway::layers::DialectLayer;
//! use tower::{Layer, ServiceExt};
//!
//! use futures_util::FutureExt;
//!
//! let inner = tower::service_fn(|_req: http::Request<Body>| async {
//!     Err::<http::Response<Body>, _>(GatewayError::not_found("no such thing"))
//! });
//! let svc = DialectLayer::new(Dialect::Anthropic).layer(inner);
//! // the inner service answers at once: no runtime needed to see the rendered error
//! let resp = svc.oneshot(http::Request::new(Body::empty())).now_or_never();
//! assert_eq!(resp.unwrap().unwrap().status(), 404);
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::Body;
use crate::dialect::Dialect;
use crate::error::GatewayError;

/// How the layer knows the dialect: fixed for a route of one dialect, or guessed for a route
/// both dialects share (`/v1/models`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Fixed(Dialect),
    Guess,
}

/// See the module docs.
#[derive(Debug, Clone, Copy)]
pub struct DialectLayer {
    mark: Mark,
}

impl DialectLayer {
    /// For a route of `dialect`: every request is marked with it, every error is rendered in
    /// it.
    pub fn new(dialect: Dialect) -> Self {
        DialectLayer {
            mark: Mark::Fixed(dialect),
        }
    }

    /// For a route both dialects share: the dialect is the one [`Dialect::guess`] reads from
    /// the request (`anthropic-version` makes it Anthropic).
    pub fn guess() -> Self {
        DialectLayer { mark: Mark::Guess }
    }
}

impl<S> Layer<S> for DialectLayer {
    type Service = DialectService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DialectService {
            inner,
            mark: self.mark,
            not_ready: None,
        }
    }
}

/// See [`DialectLayer`].
#[derive(Debug, Clone)]
pub struct DialectService<S> {
    inner: S,
    mark: Mark,
    /// The inner service's `poll_ready` failed: the next call answers with this.
    not_ready: Option<GatewayError>,
}

impl<S> DialectService<S> {
    inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for DialectService<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Error: Into<GatewayError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = RespondFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.not_ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                self.not_ready = Some(e.into());
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let dialect = match self.mark {
            Mark::Fixed(d) => d,
            Mark::Guess => Dialect::guess(&req),
        };
        req.extensions_mut().insert(dialect);
        match self.not_ready.take() {
            Some(e) => RespondFuture::Failed {
                dialect,
                error: Some(e),
            },
            None => RespondFuture::Inner {
                dialect,
                fut: self.inner.call(req),
            },
        }
    }
}

/// The response future of [`DialectService`].
#[pin_project(project = RespondProj)]
#[derive(Debug)]
pub enum RespondFuture<F> {
    /// Waiting for the inner service.
    Inner {
        /// The dialect an error is rendered in.
        dialect: Dialect,
        /// The inner service's future.
        #[pin]
        fut: F,
    },
    /// The inner service was not ready; answered with its failure.
    Failed {
        /// The dialect the failure is rendered in.
        dialect: Dialect,
        /// The failure, until the future has answered with it.
        error: Option<GatewayError>,
    },
}

impl<F, E> Future for RespondFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<GatewayError>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RespondProj::Inner { dialect, fut } => match fut.poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(r)) => Poll::Ready(Ok(r)),
                Poll::Ready(Err(e)) => Poll::Ready(Ok(render(*dialect, e.into()))),
            },
            RespondProj::Failed { dialect, error } => match error.take() {
                Some(e) => Poll::Ready(Ok(render(*dialect, e))),
                // polled again after completion
                None => Poll::Pending,
            },
        }
    }
}

fn render(dialect: Dialect, e: GatewayError) -> Response<Body> {
    if e.status().is_server_error() {
        tracing::warn!(status = e.status().as_u16(), error = %e.message(), "request failed");
    } else {
        tracing::debug!(status = e.status().as_u16(), error = %e.message(), "request refused");
    }
    dialect.error_response(&e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn json(resp: Response<Body>) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn errors_below_are_rendered_in_the_routes_dialect() {
        let failing = || {
            tower::service_fn(|_r: Request<Body>| async {
                Err::<Response<Body>, _>(
                    GatewayError::invalid_request("bad field").with_param("messages"),
                )
            })
        };
        let resp = DialectLayer::new(Dialect::Anthropic)
            .layer(failing())
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.headers()["x-should-retry"], "false");
        let v = json(resp).await;
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], "bad field");

        let resp = DialectLayer::new(Dialect::OpenAi)
            .layer(failing())
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        let v = json(resp).await;
        assert_eq!(v["error"]["param"], "messages");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }

    #[tokio::test]
    async fn the_request_below_carries_its_dialect() {
        let seen = tower::service_fn(|r: Request<Body>| async move {
            let d = r.extensions().get::<Dialect>().copied();
            Ok::<_, GatewayError>(Response::new(Body::from(format!("{d:?}"))))
        });
        let svc = DialectLayer::guess().layer(seen);
        let req = Request::get("/v1/models")
            .header("anthropic-version", "2023-06-01")
            .body(Body::empty())
            .unwrap();
        let resp = svc.clone().oneshot(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"Some(Anthropic)");
        let req = Request::get("/v1/models").body(Body::empty()).unwrap();
        let body = svc.oneshot(req).await.unwrap().into_body();
        assert_eq!(
            &body.collect().await.unwrap().to_bytes()[..],
            b"Some(OpenAi)"
        );
    }

    /// A service whose `poll_ready` fails once.
    #[derive(Clone)]
    struct NotReady(bool);

    impl Service<Request<Body>> for NotReady {
        type Response = Response<Body>;
        type Error = GatewayError;
        type Future = std::future::Ready<Result<Response<Body>, GatewayError>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
            if std::mem::replace(&mut self.0, false) {
                Poll::Ready(Err(GatewayError::new(
                    crate::error::ErrorKind::Overloaded,
                    "no capacity",
                )))
            } else {
                Poll::Ready(Ok(()))
            }
        }

        fn call(&mut self, _req: Request<Body>) -> Self::Future {
            std::future::ready(Ok(Response::new(Body::from("served"))))
        }
    }

    #[tokio::test]
    async fn a_poll_ready_failure_becomes_the_next_answer() {
        let mut svc = DialectLayer::new(Dialect::OpenAi).layer(NotReady(true));
        let resp = svc
            .ready()
            .await
            .unwrap()
            .call(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(json(resp).await["error"]["message"], "no capacity");
        let resp = svc
            .ready()
            .await
            .unwrap()
            .call(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
}
