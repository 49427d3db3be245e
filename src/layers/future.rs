//! The response future of layers that either answer themselves (a rejection rendered in the
//! request's dialect) or call the inner service: no allocation either way.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project::pin_project;

use crate::api::Body;

/// Either the inner service's future or a ready response.
#[pin_project(project = Proj)]
pub enum ResponseFuture<F> {
    Inner {
        #[pin]
        fut: F,
    },
    Rejected {
        resp: Option<Response<Body>>,
    },
}

impl<F> ResponseFuture<F> {
    pub fn inner(fut: F) -> Self {
        ResponseFuture::Inner { fut }
    }

    pub fn rejected(resp: Response<Body>) -> Self {
        ResponseFuture::Rejected { resp: Some(resp) }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Inner { fut } => fut.poll(cx),
            // polled again after completion: stay pending, as futures may
            Proj::Rejected { resp } => match resp.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => Poll::Pending,
            },
        }
    }
}
