//! Incremental, bounded decoder (and a small encoder) for the AWS event-stream framing that
//! Kiro's `generateAssistantResponse` answers with.
//!
//! A frame is
//!
//! ```text
//! | total len u32 | headers len u32 | prelude crc u32 | headers ... | payload ... | message crc u32 |
//! ```
//!
//! with both lengths big-endian and both CRCs IEEE CRC-32. Frames are not aligned with reads: feed
//! the decoder whatever bytes arrive and pull complete frames out of it.
//!
//! The decoder checks the prelude CRC as soon as the first 12 bytes of a frame are buffered, so a
//! corrupt length is caught before it makes the decoder wait for (or buffer) a bogus amount of
//! data; lengths above [`Decoder::with_max_frame_len`] are refused outright. Every failure is a
//! typed [`DecodeError`]; after one, the decoder stays failed (a corrupt stream is never
//! resynchronised by scanning).
//!
//! ```
//! use kiro_gateway::kiro::eventstream::{encode_frame, Decoder, Header, HeaderValue};
//!
//! let frame = encode_frame(
//!     &[Header::new(":event-type", HeaderValue::String("assistantResponseEvent".into()))],
//!     br#"{"content":"Hi"}"#,
//! );
//! let mut decoder = Decoder::new();
//! // feed it one byte at a time: frames come out only when complete
//! let mut frames = Vec::new();
//! for b in frame.iter() {
//!     decoder.push(&[*b]);
//!     while let Some(f) = decoder.next_frame().unwrap() {
//!         frames.push(f);
//!     }
//! }
//! assert_eq!(frames.len(), 1);
//! assert_eq!(frames[0].header_str(":event-type"), Some("assistantResponseEvent"));
//! assert_eq!(&frames[0].payload[..], br#"{"content":"Hi"}"#);
//! decoder.finish().unwrap();
//! ```

use std::borrow::Cow;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of the prelude (two lengths and the prelude CRC).
const PRELUDE_LEN: usize = 12;
/// Smallest possible frame: prelude plus message CRC.
const MIN_FRAME_LEN: usize = PRELUDE_LEN + 4;
/// Default cap on one frame: 16 MiB of payload plus headers (and the fixed overhead).
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024 + MIN_FRAME_LEN;

/// Why a byte stream is not a valid event stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("event-stream prelude CRC mismatch (frame says {expected:#010x}, bytes give {actual:#010x})")]
    PreludeCrc { expected: u32, actual: u32 },
    #[error("event-stream message CRC mismatch (frame says {expected:#010x}, bytes give {actual:#010x})")]
    MessageCrc { expected: u32, actual: u32 },
    #[error("event-stream frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge { len: usize, max: usize },
    #[error("event-stream frame length {len} is shorter than the 16-byte minimum")]
    FrameTooSmall { len: usize },
    #[error(
        "event-stream headers length {headers_len} does not fit in a frame of {total_len} bytes"
    )]
    HeadersTooLong {
        headers_len: usize,
        total_len: usize,
    },
    #[error("event-stream header has unknown value type {0}")]
    UnknownHeaderType(u8),
    #[error("event-stream header block is malformed: {0}")]
    BadHeader(&'static str),
    #[error("event stream ended inside a frame ({buffered} bytes of an incomplete frame)")]
    Truncated { buffered: usize },
    #[error("event-stream decoder already failed on an earlier error")]
    Failed,
}

/// A typed header value; the numbers are the wire's type tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// types 0 (true) and 1 (false)
    Bool(bool),
    /// type 2
    Byte(i8),
    /// type 3
    Int16(i16),
    /// type 4
    Int32(i32),
    /// type 5
    Int64(i64),
    /// type 6
    ByteArray(Bytes),
    /// type 7 (the names and values Kiro always sends are interned, not allocated)
    String(Cow<'static, str>),
    /// type 8, milliseconds since the epoch
    Timestamp(i64),
    /// type 9
    Uuid([u8; 16]),
}

/// One header of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: Cow<'static, str>,
    pub value: HeaderValue,
}

impl Header {
    pub fn new(name: impl Into<Cow<'static, str>>, value: HeaderValue) -> Self {
        Header {
            name: name.into(),
            value,
        }
    }
}

/// One decoded, CRC-checked frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub headers: Vec<Header>,
    pub payload: Bytes,
}

impl Frame {
    /// The value of a string header, if present and of string type.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| match &h.value {
            HeaderValue::String(s) if h.name == name => Some(s.as_ref()),
            _ => None,
        })
    }
}

/// Incremental event-stream decoder. See the module docs.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_frame_len: usize,
    /// Total length of the frame at the front of `buf`, once its prelude was checked.
    pending_len: Option<usize>,
    failed: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            buf: BytesMut::new(),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            pending_len: None,
            failed: false,
        }
    }

    /// Cap on a whole frame (prelude, headers, payload and CRC). Lengths above it are an error.
    pub fn with_max_frame_len(mut self, max: usize) -> Self {
        self.max_frame_len = max.max(MIN_FRAME_LEN);
        self
    }

    /// Append bytes read from the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// Bytes buffered that do not yet form a complete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if self.failed {
            return Err(DecodeError::Failed);
        }
        match self.decode_one() {
            Ok(frame) => Ok(frame),
            Err(e) => {
                self.failed = true;
                self.buf.clear();
                Err(e)
            }
        }
    }

    /// Declare the end of input: an error if a frame was left incomplete.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.failed {
            Err(DecodeError::Failed)
        } else if !self.buf.is_empty() {
            Err(DecodeError::Truncated {
                buffered: self.buf.len(),
            })
        } else {
            Ok(())
        }
    }

    fn decode_one(&mut self) -> Result<Option<Frame>, DecodeError> {
        let total_len = match self.pending_len {
            Some(len) => len,
            None => {
                if self.buf.len() < PRELUDE_LEN {
                    return Ok(None);
                }
                let len = check_prelude(&self.buf[..PRELUDE_LEN], self.max_frame_len)?;
                self.pending_len = Some(len);
                len
            }
        };
        if self.buf.len() < total_len {
            // Reserve once so that a large frame arriving in small reads is not reallocated
            // again and again; bounded by the checked length.
            self.buf.reserve(total_len - self.buf.len());
            return Ok(None);
        }
        self.pending_len = None;
        let raw = self.buf.split_to(total_len).freeze();
        parse_checked_frame(raw).map(Some)
    }
}

/// Validate a 12-byte prelude and return the frame's total length.
fn check_prelude(prelude: &[u8], max_frame_len: usize) -> Result<usize, DecodeError> {
    let mut p = prelude;
    let total_len = p.get_u32() as usize;
    let headers_len = p.get_u32() as usize;
    let expected = p.get_u32();
    let actual = crc32fast::hash(&prelude[..8]);
    if expected != actual {
        return Err(DecodeError::PreludeCrc { expected, actual });
    }
    if total_len < MIN_FRAME_LEN {
        return Err(DecodeError::FrameTooSmall { len: total_len });
    }
    if total_len > max_frame_len {
        return Err(DecodeError::FrameTooLarge {
            len: total_len,
            max: max_frame_len,
        });
    }
    if headers_len > total_len - MIN_FRAME_LEN {
        return Err(DecodeError::HeadersTooLong {
            headers_len,
            total_len,
        });
    }
    Ok(total_len)
}

/// Check the message CRC of a complete frame and split it into headers and payload.
fn parse_checked_frame(raw: Bytes) -> Result<Frame, DecodeError> {
    let total_len = raw.len();
    let body_end = total_len - 4;
    let expected = (&raw[body_end..]).get_u32();
    let actual = crc32fast::hash(&raw[..body_end]);
    if expected != actual {
        return Err(DecodeError::MessageCrc { expected, actual });
    }
    let headers_len = (&raw[4..8]).get_u32() as usize;
    let headers_end = PRELUDE_LEN + headers_len;
    // Headers are parsed from a plain slice (no reference-counted sub-slices); only the
    // payload shares the frame's buffer.
    let headers = parse_headers(&raw[PRELUDE_LEN..headers_end])?;
    Ok(Frame {
        headers,
        payload: raw.slice(headers_end..body_end),
    })
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if buf.len() < n {
        return Err(DecodeError::BadHeader("value runs past the header block"));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn take_array<const N: usize>(buf: &mut &[u8]) -> Result<[u8; N], DecodeError> {
    let b = take(buf, N)?;
    let mut out = [0u8; N];
    out.copy_from_slice(b);
    Ok(out)
}

/// Header names and values every Kiro frame carries: returned without allocating.
const INTERNED: &[&str] = &[
    ":event-type",
    ":content-type",
    ":message-type",
    ":exception-type",
    ":error-code",
    ":error-message",
    "application/json",
    "event",
    "exception",
    "error",
    "assistantResponseEvent",
    "toolUseEvent",
    "meteringEvent",
    "contextUsageEvent",
    "messageMetadataEvent",
    "metadataEvent",
    "reasoningContentEvent",
];

fn utf8(b: &[u8], what: &'static str) -> Result<Cow<'static, str>, DecodeError> {
    if let Some(known) = INTERNED.iter().find(|k| k.as_bytes() == b) {
        return Ok(Cow::Borrowed(known));
    }
    std::str::from_utf8(b)
        .map(|s| Cow::Owned(s.to_owned()))
        .map_err(|_| DecodeError::BadHeader(what))
}

fn parse_headers(mut buf: &[u8]) -> Result<Vec<Header>, DecodeError> {
    let mut headers = Vec::with_capacity(3);
    while !buf.is_empty() {
        let [name_len] = take_array::<1>(&mut buf)?;
        if name_len == 0 {
            return Err(DecodeError::BadHeader("empty header name"));
        }
        let name = utf8(
            take(&mut buf, name_len as usize)?,
            "header name is not UTF-8",
        )?;
        let [tag] = take_array::<1>(&mut buf)?;
        let value = match tag {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(take_array(&mut buf)?)),
            3 => HeaderValue::Int16(i16::from_be_bytes(take_array(&mut buf)?)),
            4 => HeaderValue::Int32(i32::from_be_bytes(take_array(&mut buf)?)),
            5 => HeaderValue::Int64(i64::from_be_bytes(take_array(&mut buf)?)),
            6 | 7 => {
                let len = u16::from_be_bytes(take_array(&mut buf)?) as usize;
                let bytes = take(&mut buf, len)?;
                if tag == 6 {
                    HeaderValue::ByteArray(Bytes::copy_from_slice(bytes))
                } else {
                    HeaderValue::String(utf8(bytes, "string header is not UTF-8")?)
                }
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(take_array(&mut buf)?)),
            9 => HeaderValue::Uuid(take_array(&mut buf)?),
            other => return Err(DecodeError::UnknownHeaderType(other)),
        };
        headers.push(Header { name, value });
    }
    Ok(headers)
}

/// Encode one frame (used by the mock upstream, the benches and the tests).
///
/// Header names longer than 255 bytes and string or byte-array values longer than 65 535 bytes
/// are truncated to fit the format; nothing in this crate produces them.
pub fn encode_frame(headers: &[Header], payload: &[u8]) -> Bytes {
    let mut hbuf = BytesMut::new();
    for h in headers {
        let name = &h.name.as_bytes()[..h.name.len().min(255)];
        hbuf.put_u8(name.len() as u8);
        hbuf.put_slice(name);
        match &h.value {
            HeaderValue::Bool(true) => hbuf.put_u8(0),
            HeaderValue::Bool(false) => hbuf.put_u8(1),
            HeaderValue::Byte(v) => {
                hbuf.put_u8(2);
                hbuf.put_i8(*v);
            }
            HeaderValue::Int16(v) => {
                hbuf.put_u8(3);
                hbuf.put_i16(*v);
            }
            HeaderValue::Int32(v) => {
                hbuf.put_u8(4);
                hbuf.put_i32(*v);
            }
            HeaderValue::Int64(v) => {
                hbuf.put_u8(5);
                hbuf.put_i64(*v);
            }
            HeaderValue::ByteArray(b) => {
                hbuf.put_u8(6);
                put_short_bytes(&mut hbuf, b);
            }
            HeaderValue::String(s) => {
                hbuf.put_u8(7);
                put_short_bytes(&mut hbuf, s.as_bytes());
            }
            HeaderValue::Timestamp(v) => {
                hbuf.put_u8(8);
                hbuf.put_i64(*v);
            }
            HeaderValue::Uuid(u) => {
                hbuf.put_u8(9);
                hbuf.put_slice(u);
            }
        }
    }
    let total = MIN_FRAME_LEN + hbuf.len() + payload.len();
    let mut out = BytesMut::with_capacity(total);
    out.put_u32(total as u32);
    out.put_u32(hbuf.len() as u32);
    let prelude_crc = crc32fast::hash(&out[..8]);
    out.put_u32(prelude_crc);
    out.put_slice(&hbuf);
    out.put_slice(payload);
    let crc = crc32fast::hash(&out);
    out.put_u32(crc);
    out.freeze()
}

fn put_short_bytes(buf: &mut BytesMut, b: &[u8]) {
    let b = &b[..b.len().min(u16::MAX as usize)];
    buf.put_u16(b.len() as u16);
    buf.put_slice(b);
}

/// The three string headers Kiro puts on an ordinary event frame.
pub fn event_headers(event_type: &str) -> [Header; 3] {
    [
        Header::new(
            ":event-type",
            HeaderValue::String(Cow::Owned(event_type.to_owned())),
        ),
        Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ),
        Header::new(":message-type", HeaderValue::String("event".into())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hi_frame() -> Bytes {
        encode_frame(
            &event_headers("assistantResponseEvent"),
            br#"{"content":"Hi"}"#,
        )
    }

    fn decode_all(chunks: &[&[u8]]) -> Result<Vec<Frame>, DecodeError> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c);
            while let Some(f) = d.next_frame()? {
                out.push(f);
            }
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn matches_the_annotated_frame_of_the_spec() {
        // Appendix B of the protocol notes: 124 bytes, headers 92, prelude CRC 0x3bddcf78,
        // message CRC b0 2b ab dc.
        let f = hi_frame();
        assert_eq!(f.len(), 124);
        assert_eq!(
            &f[..12],
            &[0, 0, 0, 0x7c, 0, 0, 0, 0x5c, 0x3b, 0xdd, 0xcf, 0x78]
        );
        assert_eq!(&f[120..], &[0xb0, 0x2b, 0xab, 0xdc]);
    }

    #[test]
    fn decodes_at_every_split_point_of_two_frames() {
        let mut both = BytesMut::new();
        both.extend_from_slice(&hi_frame());
        both.extend_from_slice(&encode_frame(
            &event_headers("contextUsageEvent"),
            br#"{"contextUsagePercentage":1.5}"#,
        ));
        for split in 0..=both.len() {
            let frames = decode_all(&[&both[..split], &both[split..]]).unwrap();
            assert_eq!(frames.len(), 2, "split at {split}");
            assert_eq!(&frames[0].payload[..], br#"{"content":"Hi"}"#);
            assert_eq!(
                frames[1].header_str(":event-type"),
                Some("contextUsageEvent")
            );
        }
    }

    #[test]
    fn bad_prelude_crc_is_reported_before_the_body_arrives() {
        let mut f = hi_frame().to_vec();
        f[9] ^= 0xff;
        let mut d = Decoder::new();
        d.push(&f[..12]);
        assert!(matches!(
            d.next_frame(),
            Err(DecodeError::PreludeCrc { .. })
        ));
        // stays failed
        assert_eq!(d.next_frame(), Err(DecodeError::Failed));
    }

    #[test]
    fn bad_message_crc_is_an_error() {
        let mut f = hi_frame().to_vec();
        f[100] ^= 0x01; // inside the payload
        assert!(matches!(
            decode_all(&[&f]),
            Err(DecodeError::MessageCrc { .. })
        ));
    }

    #[test]
    fn truncated_input_is_an_error() {
        let f = hi_frame();
        assert_eq!(
            decode_all(&[&f[..50]]),
            Err(DecodeError::Truncated { buffered: 50 })
        );
    }

    #[test]
    fn oversized_length_is_refused_without_buffering() {
        let mut prelude = BytesMut::new();
        prelude.put_u32(0x7fff_0000);
        prelude.put_u32(0);
        let crc = crc32fast::hash(&prelude);
        prelude.put_u32(crc);
        let mut d = Decoder::new().with_max_frame_len(1024);
        d.push(&prelude);
        assert_eq!(
            d.next_frame(),
            Err(DecodeError::FrameTooLarge {
                len: 0x7fff_0000,
                max: 1024
            })
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn too_small_and_overlong_headers_are_errors() {
        let mk = |total: u32, headers: u32| {
            let mut p = BytesMut::new();
            p.put_u32(total);
            p.put_u32(headers);
            let crc = crc32fast::hash(&p);
            p.put_u32(crc);
            p
        };
        let mut d = Decoder::new();
        d.push(&mk(8, 0));
        assert_eq!(d.next_frame(), Err(DecodeError::FrameTooSmall { len: 8 }));
        let mut d = Decoder::new();
        d.push(&mk(20, 10));
        assert!(matches!(
            d.next_frame(),
            Err(DecodeError::HeadersTooLong { .. })
        ));
    }

    #[test]
    fn unknown_header_type_is_an_error() {
        // a valid frame whose single header has type tag 42
        let mut headers = BytesMut::new();
        headers.put_u8(1);
        headers.put_u8(b'x');
        headers.put_u8(42);
        let total = MIN_FRAME_LEN + headers.len();
        let mut f = BytesMut::new();
        f.put_u32(total as u32);
        f.put_u32(headers.len() as u32);
        let c = crc32fast::hash(&f);
        f.put_u32(c);
        f.put_slice(&headers);
        let c = crc32fast::hash(&f);
        f.put_u32(c);
        assert_eq!(decode_all(&[&f]), Err(DecodeError::UnknownHeaderType(42)));
    }

    #[test]
    fn every_header_type_round_trips() {
        let headers = vec![
            Header::new("t", HeaderValue::Bool(true)),
            Header::new("f", HeaderValue::Bool(false)),
            Header::new("b", HeaderValue::Byte(-3)),
            Header::new("s", HeaderValue::Int16(-300)),
            Header::new("i", HeaderValue::Int32(70_000)),
            Header::new("l", HeaderValue::Int64(-5_000_000_000)),
            Header::new("a", HeaderValue::ByteArray(Bytes::from_static(b"\x00\x01"))),
            Header::new("str", HeaderValue::String("héllo".into())),
            Header::new("ts", HeaderValue::Timestamp(1_700_000_000_000)),
            Header::new("u", HeaderValue::Uuid([7; 16])),
        ];
        let f = encode_frame(&headers, b"{}");
        let frames = decode_all(&[&f]).unwrap();
        assert_eq!(frames[0].headers, headers);
        assert_eq!(&frames[0].payload[..], b"{}");
    }
}
