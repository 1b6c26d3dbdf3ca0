//! An incremental parser for the server-sent events of an upstream stream.
//!
//! Upstream bytes arrive in arbitrary pieces; the router forwards whole events only, so that an
//! error event it appends after a failure never lands in the middle of a half-written one. Each
//! event keeps its original lines (comments included) and is re-terminated with a blank line.
//! Events and lines are bounded in size, so a hostile upstream cannot make it buffer without end.

use bytes::{Bytes, BytesMut};

/// Largest event accepted from an upstream (bytes).
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event as forwarded: its lines joined by `\n`, ending in `\n\n`.
    pub raw: Bytes,
    /// The `data:` lines joined by `\n`, or `None` for an event with no data (e.g. a keep-alive).
    pub data: Option<String>,
}

impl SseEvent {
    pub fn is_done(&self) -> bool {
        self.data.as_deref().map(str::trim) == Some("[DONE]")
    }

    /// An in-band error object (`data: {"error": …}`), which some providers send mid-stream.
    pub fn error_message(&self) -> Option<String> {
        let d = self.data.as_deref()?.trim_start();
        if !d.starts_with("{\"error\"") && !d.starts_with("{ \"error\"") {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(d).ok()?;
        let e = v.get("error")?;
        Some(
            e.get("message")
                .and_then(|m| m.as_str())
                .map_or_else(|| e.to_string(), str::to_string),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("stream event larger than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
    #[error("stream is not UTF-8")]
    NotUtf8,
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, unfinished line.
    partial: BytesMut,
    /// Complete lines of the current, unfinished event.
    lines: Vec<String>,
    event_bytes: usize,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..pos]);
            rest = &rest[pos + 1..];
            let mut line = std::mem::take(&mut self.partial);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            let line = String::from_utf8(line.to_vec()).map_err(|_| SseError::NotUtf8)?;
            if line.is_empty() {
                if let Some(ev) = self.finish_event() {
                    out.push(ev);
                }
            } else {
                self.event_bytes += line.len() + 1;
                if self.event_bytes > MAX_EVENT_BYTES {
                    return Err(SseError::TooLarge);
                }
                self.lines.push(line);
            }
        }
        self.partial.extend_from_slice(rest);
        if self.event_bytes + self.partial.len() > MAX_EVENT_BYTES {
            return Err(SseError::TooLarge);
        }
        Ok(out)
    }

    /// Whether bytes of an unfinished event are buffered.
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty() || !self.lines.is_empty()
    }

    fn finish_event(&mut self) -> Option<SseEvent> {
        if self.lines.is_empty() {
            return None;
        }
        let lines = std::mem::take(&mut self.lines);
        self.event_bytes = 0;
        let mut raw = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum::<usize>() + 1);
        let mut data: Option<String> = None;
        for l in &lines {
            raw.push_str(l);
            raw.push('\n');
            if let Some(v) = l.strip_prefix("data:") {
                let v = v.strip_prefix(' ').unwrap_or(v);
                match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(v);
                    }
                    None => data = Some(v.to_string()),
                }
            } else if l == "data" {
                data.get_or_insert_with(String::new);
            }
        }
        raw.push('\n');
        Some(SseEvent {
            raw: Bytes::from(raw),
            data,
        })
    }
}

/// An SSE event carrying an OpenAI-shaped error, for a stream that fails after it has started.
pub fn error_event(message: &str, code: &str) -> Bytes {
    let body = serde_json::json!({"error": {"message": message, "type": "upstream_error", "param": null, "code": code}});
    Bytes::from(format!("data: {body}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(chunks: &[Vec<u8>]) -> Result<Vec<SseEvent>, SseError> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.push(c)?);
        }
        Ok(out)
    }

    proptest! {
        #![proptest_config(crate::proptest_cases())]

        #[test]
        fn never_panics_on_arbitrary_chunks(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let _ = parse_all(&chunks);
        }

        #[test]
        fn splitting_a_stream_anywhere_gives_the_same_events(
            datas in prop::collection::vec("[a-z0-9 {}\":,]{0,24}", 1..8),
            crlf in any::<bool>(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let text: String = datas.iter().map(|d| format!("data: {d}{nl}{nl}")).collect();
            let bytes = text.as_bytes();
            let whole = parse_all(&[bytes.to_vec()]).unwrap();
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(bytes[last..p].to_vec());
                last = p;
            }
            chunks.push(bytes[last..].to_vec());
            let split = parse_all(&chunks).unwrap();
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(whole.len(), datas.len());
            for (ev, d) in whole.iter().zip(&datas) {
                prop_assert_eq!(ev.data.as_deref(), Some(d.as_str()));
            }
        }
    }

    #[test]
    fn events_split_across_chunks_and_line_endings() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: {\"a\"").unwrap().is_empty());
        let evs = p.push(b":1}\r\n\r\n: ping\n\ndata: [DONE]\n").unwrap();
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].data.as_deref(), Some("{\"a\":1}"));
        assert_eq!(&evs[0].raw[..], b"data: {\"a\":1}\n\n");
        assert_eq!(evs[1].data, None);
        assert!(p.has_partial());
        let evs = p.push(b"\n").unwrap();
        assert!(evs[0].is_done());
        assert!(!p.has_partial());
    }

    #[test]
    fn multi_line_data_and_error_events() {
        let mut p = SseParser::new();
        let evs = p
            .push(b"event: x\ndata: a\ndata: b\n\ndata: {\"error\":{\"message\":\"boom\"}}\n\n")
            .unwrap();
        assert_eq!(evs[0].data.as_deref(), Some("a\nb"));
        assert_eq!(evs[1].error_message().as_deref(), Some("boom"));
        assert_eq!(evs[0].error_message(), None);
    }

    #[test]
    fn oversized_event_is_an_error() {
        let mut p = SseParser::new();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert_eq!(p.push(&big), Err(SseError::TooLarge));
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut p = SseParser::new();
        assert_eq!(p.push(b"data: \xff\xfe\n\n"), Err(SseError::NotUtf8));
    }
}
