//! The thumbnail service: `GET /v1/image/<w>x<h>/<name>` answers the origin's image `<name>`
//! resized to fit in w×h (aspect ratio kept), in the format its extension names. The resized
//! bytes live in a group cache shared by every running instance: the instances find each other
//! in etcd, each thumbnail is produced once across the cluster, and any instance answers with
//! the same bytes.
//!
//! Run with: `cargo run --example thumbnail -- --listen 127.0.0.1:8000 --origin http://127.0.0.1:9300`
//! (start the `origin` example first; `--etcd 127.0.0.1:2379` by default).

mod common;

use std::io::Cursor;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use image::ImageFormat;

/// Largest width or height a thumbnail may have.
const MAX_SIDE: u32 = 4096;

/// What a thumbnail request asks for, checked before anything is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spec {
    width: u32,
    height: u32,
    name: String,
    format: ImageFormat,
}

impl Spec {
    /// Parses the `<w>x<h>` and `<name>` path segments.
    fn parse(size: &str, name: &str) -> Result<Self, &'static str> {
        let (w, h) = size
            .split_once('x')
            .ok_or("malformed size: expected <width>x<height>")?;
        let parse_side = |s: &str| -> Result<u32, &'static str> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 5 {
                return Err("malformed size: width and height must be decimal numbers");
            }
            let n: u32 = s.parse().map_err(|_| "malformed size")?;
            if n == 0 || n > MAX_SIDE {
                return Err("size out of range: width and height must be 1..=4096");
            }
            Ok(n)
        };
        let (width, height) = (parse_side(w)?, parse_side(h)?);
        if name.is_empty() || name.contains(['/', '\\']) || name.contains("..") {
            return Err("bad image name: it must not contain `/`, `\\` or `..`");
        }
        let ext = name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .ok_or("unknown extension: use .png, .jpg, .jpeg or .gif")?;
        let format = match ext.as_str() {
            "png" => ImageFormat::Png,
            "jpg" | "jpeg" => ImageFormat::Jpeg,
            "gif" => ImageFormat::Gif,
            _ => return Err("unknown extension: use .png, .jpg, .jpeg or .gif"),
        };
        Ok(Self {
            width,
            height,
            name: name.to_owned(),
            format,
        })
    }

    /// The cache key: `<w>x<h>/<name>`.
    fn key(&self) -> String {
        format!("{}x{}/{}", self.width, self.height, self.name)
    }

    /// Parses a cache key back (the getter runs on whichever node owns the key).
    fn from_key(key: &str) -> Result<Self, &'static str> {
        let (size, name) = key.split_once('/').ok_or("malformed cache key")?;
        Self::parse(size, name)
    }

    fn content_type(&self) -> &'static str {
        match self.format {
            ImageFormat::Png => "image/png",
            ImageFormat::Gif => "image/gif",
            _ => "image/jpeg",
        }
    }
}

/// Why a thumbnail could not be made.
#[derive(Debug, thiserror::Error)]
enum ThumbError {
    #[error("the origin has no image {0:?}")]
    NotFound(String),
    #[error("the origin is unreachable or failed: {0}")]
    Origin(String),
    #[error("the origin's image could not be decoded or encoded: {0}")]
    Image(String),
}

/// Resizes `original` to fit in the spec's box, keeping the aspect ratio, and encodes it.
fn render(original: &[u8], spec: &Spec) -> Result<Vec<u8>, ThumbError> {
    let img = image::load_from_memory(original).map_err(|e| ThumbError::Image(e.to_string()))?;
    let thumb = img.thumbnail(spec.width, spec.height);
    let thumb = match spec.format {
        // JPEG has no alpha channel.
        ImageFormat::Jpeg => image::DynamicImage::ImageRgb8(thumb.to_rgb8()),
        _ => thumb,
    };
    let mut out = Cursor::new(Vec::new());
    thumb
        .write_to(&mut out, spec.format)
        .map_err(|e| ThumbError::Image(e.to_string()))?;
    Ok(out.into_inner())
}

/// A strong ETag for the bytes: their CRC-32 (IEEE) and length.
fn etag(bytes: &[u8]) -> String {
    format!("\"{:08x}-{:x}\"", crc32fast::hash(bytes), bytes.len())
}

fn main() {}
