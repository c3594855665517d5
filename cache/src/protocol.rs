//! The HTTP peer protocol: golang/groupcache's for gets, mailgun/groupcache's (v2) for
//! writes and expiry; the request path and every message, in this one place.
//!
//! A value is asked for with `GET <base><group>/<key>`, group and key escaped as Go's
//! `url.QueryEscape` does (everything but `A-Za-z0-9-_.~` as `%XX`), except that svckit sends a
//! space as `%20` where Go sends `+`: golang/groupcache's server reads the key from the
//! *decoded path*, where `+` stays `+`, so only `%20` reaches a Go owner as a space. Our server
//! decodes both (`+` is what Go's client means by a space). The answer is
//! `application/x-protobuf` `GetResponse { bytes value = 1; double minute_qps = 2;
//! int64 expire = 3; }`, `expire` in Unix nanoseconds and sent only for a value that expires
//! (golang/groupcache ignores the field; mailgun/groupcache reads it, absent or 0 as never).
//!
//! Writes are mailgun/groupcache's (`http.go`, `groupcachepb/groupcache.proto`):
//!
//! - `PUT <base><group>/<key>` with a `SetRequest { required string group = 1; required
//!   string key = 2; optional bytes value = 3; optional int64 expire = 4; }` body stores the
//!   value in the main cache: 200 and an empty body; 400 for a body that does not decode (or
//!   lacks `group` or `key`). As in mailgun's server, the key is the body's.
//! - `DELETE <base><group>/<key>` removes the key from both tiers: 200 and an empty body.
//! - An unknown group is 404 `no such group: <group>` for every method.
//!
//! svckit adds two headers that other implementations ignore: [`GENERATION_HEADER`] (the
//! sender's flush generation of the group, so an owner that has not yet seen a flush adopts
//! it before answering) and [`HANDOFF_HEADER`] (answer from memory only, 404 on a miss: a new
//! owner asking the key's previous one).

use bytes::Bytes;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// The content type of a `GetResponse` body.
pub(crate) const CONTENT_TYPE: &str = "application/x-protobuf";

/// The header carrying the sender's flush generation of the group (a decimal number), on
/// gets from svckit peers when it is not 0.
pub(crate) const GENERATION_HEADER: &str = "x-svckit-cache-generation";

/// The header asking for a value from memory only (`1`): a miss is 404, the getter is not
/// called. Sent by a key's new owner to its previous one after a ring change.
pub(crate) const HANDOFF_HEADER: &str = "x-svckit-cache-handoff";

/// mailgun/groupcache's `pb.GetResponse` (golang/groupcache's, plus `expire`). Kept out of
/// the public API.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct GetResponse {
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub(crate) value: Option<Bytes>,
    #[prost(double, optional, tag = "2")]
    pub(crate) minute_qps: Option<f64>,
    /// Unix nanoseconds; absent or 0: never expires.
    #[prost(int64, optional, tag = "3")]
    pub(crate) expire: Option<i64>,
}

/// mailgun/groupcache's `pb.SetRequest`, the body of a `PUT`. `group` and `key` are
/// `required` in the `.proto`; they are optional here so that a body lacking them can be
/// told apart and refused, as Go's proto2 decoder refuses it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SetRequest {
    #[prost(string, optional, tag = "1")]
    pub(crate) group: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub(crate) key: Option<String>,
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub(crate) value: Option<Bytes>,
    /// Unix nanoseconds; absent or 0: never expires.
    #[prost(int64, optional, tag = "4")]
    pub(crate) expire: Option<i64>,
}

/// What svckit escapes in a group or a key it sends: every byte but `A-Za-z0-9-_.~`, as Go's
/// `url.QueryEscape` does, including the space, which goes out as `%20` where Go would send
/// `+` (see the module docs: a Go owner reads the decoded path, where `+` stays `+`).
/// Non-ASCII bytes are always escaped.
pub(crate) const GROUPCACHE_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Go's `url.QueryEscape`, but a space as `%20` ([`GROUPCACHE_ESCAPE`]).
pub(crate) fn query_escape(s: &str, out: &mut String) {
    out.extend(utf8_percent_encode(s, GROUPCACHE_ESCAPE));
}

/// Why a path segment could not be unescaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnescapeError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// The unescaped bytes are not UTF-8.
    NotUtf8,
}

/// Go's `url.QueryUnescape`, as golang/groupcache's clients need it read: a `+` is a space
/// (what Go's client sends for one), `%XX` a byte, a `%` without two hex digits an error
/// (where `percent_decode` would pass it through); the result must be UTF-8.
pub(crate) fn query_unescape(s: &str) -> Result<String, UnescapeError> {
    let b = s.as_bytes();
    let bad = b.iter().enumerate().any(|(i, &c)| {
        c == b'%'
            && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if bad {
        return Err(UnescapeError::BadEscape);
    }
    // Only a literal `+` is a space: an escaped one (`%2B`) has none left to replace.
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| UnescapeError::NotUtf8)
}

/// The URL of `key` in `group` on the peer whose base URL is `peer` (`http://host:port`),
/// as golang/groupcache's `httpGetter` builds it.
pub(crate) fn peer_url(peer: &str, base_path: &str, group: &str, key: &str) -> String {
    let mut u =
        String::with_capacity(peer.len() + base_path.len() + group.len() + key.len() * 3 + 1);
    u.push_str(peer.trim_end_matches('/'));
    u.push_str(base_path);
    query_escape(group, &mut u);
    u.push('/');
    query_escape(key, &mut u);
    u
}

/// A request path that is not `<base><group>/<key>` with valid escapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathError {
    /// Not under the base path, or no `/` between group and key.
    Shape,
    /// A bad escape or non-UTF-8 bytes in the group or key.
    Escape(UnescapeError),
}

/// Splits a raw (still escaped) request path into group and key, decoding both.
pub(crate) fn parse_path(raw_path: &str, base_path: &str) -> Result<(String, String), PathError> {
    let rest = raw_path.strip_prefix(base_path).ok_or(PathError::Shape)?;
    let (group, key) = rest.split_once('/').ok_or(PathError::Shape)?;
    let group = query_unescape(group).map_err(PathError::Escape)?;
    let key = query_unescape(key).map_err(PathError::Escape)?;
    Ok((group, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn escapes_like_go_query_escape() {
        // Expected strings are what Go's url.QueryEscape returns for these inputs, but for
        // the space, sent as %20 (Go's `+` would reach a Go owner's decoded path as `+`).
        for (input, want) in [
            (
                "/v1/image/gif/001/icon=100x100",
                "%2Fv1%2Fimage%2Fgif%2F001%2Ficon%3D100x100",
            ),
            ("a b+c", "a%20b%2Bc"),
            ("?#%", "%3F%23%25"),
            ("AZaz09-_.~", "AZaz09-_.~"),
            ("é", "%C3%A9"),
            ("..", ".."),
            ("//", "%2F%2F"),
        ] {
            let mut out = String::new();
            query_escape(input, &mut out);
            assert_eq!(out, want, "{input:?}");
            assert_eq!(query_unescape(&out).unwrap(), input);
        }
    }

    #[test]
    fn unescape_refuses_malformed_input() {
        assert_eq!(query_unescape("%"), Err(UnescapeError::BadEscape));
        assert_eq!(query_unescape("%4"), Err(UnescapeError::BadEscape));
        assert_eq!(query_unescape("%zz"), Err(UnescapeError::BadEscape));
        assert_eq!(query_unescape("%FF"), Err(UnescapeError::NotUtf8));
        assert_eq!(query_unescape("a%2fb").unwrap(), "a/b");
        assert_eq!(query_unescape("a+b%2Bc%20d").unwrap(), "a b+c d");
        assert_eq!(query_unescape("%%41"), Err(UnescapeError::BadEscape));
    }

    #[test]
    fn parses_paths() {
        let base = "/_groupcache/";
        assert_eq!(
            parse_path("/_groupcache/g+1/a%2Fb/c", base).unwrap(),
            ("g 1".to_owned(), "a/b/c".to_owned())
        );
        assert_eq!(
            parse_path("/_groupcache/g/", base).unwrap(),
            ("g".to_owned(), String::new())
        );
        assert_eq!(parse_path("/_groupcache/g", base), Err(PathError::Shape));
        assert_eq!(parse_path("/other/g/k", base), Err(PathError::Shape));
        assert_eq!(
            parse_path("/_groupcache/g/%G1", base),
            Err(PathError::Escape(UnescapeError::BadEscape))
        );
        assert_eq!(
            peer_url("http://h:1/", base, "g", "a b"),
            "http://h:1/_groupcache/g/a%20b"
        );
    }

    #[test]
    fn get_response_matches_groupcache_encoding() {
        // protoc's encoding of GetResponse{value: "hi", minute_qps: 1.5}:
        // field 1 (bytes): 0x0a len "hi"; field 2 (double): 0x11 + 8 bytes little endian.
        let msg = GetResponse {
            value: Some(Bytes::from_static(b"hi")),
            minute_qps: Some(1.5),
            expire: None,
        };
        let mut want = vec![0x0a, 0x02, b'h', b'i', 0x11];
        want.extend_from_slice(&1.5f64.to_le_bytes());
        assert_eq!(msg.encode_to_vec(), want);
        assert_eq!(GetResponse::decode(&want[..]).unwrap(), msg);
        // mailgun's field 3 (int64, varint): 0x18 then the varint of the nanoseconds.
        let msg = GetResponse {
            value: Some(Bytes::from_static(b"hi")),
            minute_qps: None,
            expire: Some(300),
        };
        assert_eq!(
            msg.encode_to_vec(),
            [0x0a, 0x02, b'h', b'i', 0x18, 0xac, 0x02]
        );
    }

    #[test]
    fn set_request_matches_mailgun_encoding() {
        // protoc's encoding of SetRequest{group: "g", key: "k", value: "v", expire: 1}:
        // fields 1, 2, 3 length-delimited (0x0a, 0x12, 0x1a), field 4 varint (0x20).
        let msg = SetRequest {
            group: Some("g".into()),
            key: Some("k".into()),
            value: Some(Bytes::from_static(b"v")),
            expire: Some(1),
        };
        let want = [0x0a, 1, b'g', 0x12, 1, b'k', 0x1a, 1, b'v', 0x20, 1];
        assert_eq!(msg.encode_to_vec(), want);
        assert_eq!(SetRequest::decode(&want[..]).unwrap(), msg);
    }
}
