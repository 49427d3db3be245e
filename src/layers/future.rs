//! The response future of layers that either refuse a request themselves (an error for the
//! [`DialectLayer`](super::DialectLayer) above to render) or call the inner service: no
//! allocation either way.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project::pin_project;

use crate::body::Body;
use crate::error::GatewayError;

/// Either the inner service's future or a refusal.
#[pin_project(project = Proj)]
#[derive(Debug)]
pub enum ResponseFuture<F> {
    /// The request went on to the inner service.
    Inner {
        /// The inner service's future.
        #[pin]
        fut: F,
    },
    /// The layer refused the request.
    Rejected {
        /// The refusal, until the future has answered with it.
        error: Option<GatewayError>,
    },
}

impl<F> ResponseFuture<F> {
    /// The inner service's answer.
    pub fn inner(fut: F) -> Self {
        ResponseFuture::Inner { fut }
    }

    /// A refusal.
    pub fn rejected(error: GatewayError) -> Self {
        ResponseFuture::Rejected { error: Some(error) }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<GatewayError>,
{
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Inner { fut } => fut.poll(cx).map_err(Into::into),
            // polled again after completion: stay pending, as futures may
            Proj::Rejected { error } => match error.take() {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}
