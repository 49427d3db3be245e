//! The HTTP body type of every layer and route: a leaf, so that every module can name it
//! without importing the dialects.

#![deny(missing_docs)]

/// The request and response body type of every layer (axum's, which hyper serves as is).
pub type Body = axum::body::Body;
