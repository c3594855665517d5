//! The thumbnail service's image work: what a request asks for ([`Spec`]), and decoding and
//! resizing within limits ([`DecodeLimits`]): the pixels an original's header declares are
//! checked before anything is decoded, and decodes in flight share a memory budget.

use std::io::Cursor;
use std::sync::Arc;

use axum::http::StatusCode;
use bytes::Bytes;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader};
use tokio::sync::Semaphore;

/// Largest width or height a thumbnail may have.
pub(crate) const MAX_SIDE: u32 = 4096;

/// What a thumbnail request asks for, checked before anything is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spec {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) name: String,
    pub(crate) format: ImageFormat,
}

impl Spec {
    /// Parses the `<w>x<h>` and `<name>` path segments.
    pub(crate) fn parse(size: &str, name: &str) -> Result<Self, &'static str> {
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
    pub(crate) fn key(&self) -> String {
        format!("{}x{}/{}", self.width, self.height, self.name)
    }

    /// Parses a cache key back (the getter runs on whichever node owns the key).
    pub(crate) fn from_key(key: &str) -> Result<Self, &'static str> {
        let (size, name) = key.split_once('/').ok_or("malformed cache key")?;
        Self::parse(size, name)
    }

    pub(crate) fn content_type(&self) -> &'static str {
        match self.format {
            ImageFormat::Png => "image/png",
            ImageFormat::Gif => "image/gif",
            _ => "image/jpeg",
        }
    }
}

/// Why a thumbnail could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ThumbError {
    #[error("the origin has no image {0:?}")]
    NotFound(String),
    #[error("the origin is unreachable or failed: {0}")]
    Origin(String),
    #[error("the origin's image could not be decoded or encoded: {0}")]
    Image(String),
    /// A cache key that is no thumbnail request (a peer asked for it).
    #[error("key refused: {0}")]
    BadKey(&'static str),
    #[error(
        "image is {width}x{height} = {:.1} megapixels, over the limit of {limit} megapixels",
        f64::from(*width) * f64::from(*height) / 1e6
    )]
    TooManyPixels { width: u32, height: u32, limit: u32 },
    #[error(
        "image is {width}x{height}: decoding it for a {thumb_width}x{thumb_height} thumbnail \
         needs {needed_mib} MiB, over the limit of {limit_mib} MiB"
    )]
    TooMuchMemory {
        width: u32,
        height: u32,
        thumb_width: u32,
        thumb_height: u32,
        needed_mib: u64,
        limit_mib: u64,
    },
    #[error("the image needs more decoder memory than the limit of {limit_mib} MiB: {reason}")]
    DecoderLimit { limit_mib: u64, reason: String },
}

impl ThumbError {
    /// The answer to a request that failed so.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadKey(_) => StatusCode::BAD_REQUEST,
            // The request is fine and small; what it names is too large to process.
            Self::TooManyPixels { .. } | Self::TooMuchMemory { .. } | Self::DecoderLimit { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::Origin(_) | Self::Image(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// An `image` error, with its limit when a decoder hit one.
    pub(crate) fn from_image(e: ImageError, max_alloc: u64) -> Self {
        match e {
            ImageError::Limits(e) => Self::DecoderLimit {
                limit_mib: max_alloc.div_ceil(MIB),
                reason: e.to_string(),
            },
            e => Self::Image(e.to_string()),
        }
    }
}

pub(crate) const MIB: u64 = 1 << 20;

/// What a decoder may allocate beside the pixels while reading a header or an image: PNG text
/// and ICC profiles, the zune-jpeg and GIF decoders' own buffers.
pub(crate) const DECODER_BUFFERS: u64 = 4 * MIB;

/// Bounds on decoding: the pixels of one original, and the memory of all decodes in flight,
/// so that a small file of many pixels (a decompression bomb) costs a header read, not RAM.
#[derive(Debug, Clone)]
pub(crate) struct DecodeLimits {
    max_megapixels: u32,
    /// One permit per MiB that decodes may hold together.
    budget: Arc<Semaphore>,
    budget_mib: u32,
}

impl DecodeLimits {
    pub(crate) fn new(max_megapixels: u32, budget_mib: u32) -> Self {
        Self {
            max_megapixels,
            budget: Arc::new(Semaphore::new(budget_mib as usize)),
            budget_mib,
        }
    }

    /// Renders `spec` from `original` once its header shows it within the limits and the
    /// budget has room for what decoding it takes.
    pub(crate) async fn render(&self, original: Bytes, spec: Spec) -> Result<Vec<u8>, ThumbError> {
        let limits = self.clone();
        let (original, spec, cost_mib) = blocking(move || {
            let cost = limits.cost_mib(&original, &spec)?;
            Ok((original, spec, cost))
        })
        .await?;
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(cost_mib)
            .await
            .map_err(|_| ThumbError::Image("the decode budget is closed".to_owned()))?;
        blocking(move || {
            // The permit goes with the decode, not with the caller: when the caller goes away
            // the blocking task still runs to its end, and the budget counts it until then.
            let _permit = permit;
            render(&original, &spec, u64::from(cost_mib) * MIB)
        })
        .await
    }

    /// What decoding `original` for `spec` holds at its peak, in MiB, estimated from its header
    /// alone: the pixels; the thumbnail twice (resized, then converted or encoded); the
    /// decoder's buffers; for a GIF the frame it composes the image from; for a JPEG its copy
    /// of the input and, unless it is sequential, the coefficients zune-jpeg keeps until the
    /// last scan (2 bytes per sample, up to 3 samples per pixel).
    pub(crate) fn cost_mib(&self, original: &[u8], spec: &Spec) -> Result<u32, ThumbError> {
        let reader = reader(original, DECODER_BUFFERS)?;
        let format = reader.format();
        let decoder = reader
            .into_decoder()
            .map_err(|e| ThumbError::from_image(e, DECODER_BUFFERS))?;
        let (width, height) = decoder.dimensions();
        let pixels = u64::from(width) * u64::from(height);
        if pixels > u64::from(self.max_megapixels) * 1_000_000 {
            return Err(ThumbError::TooManyPixels {
                width,
                height,
                limit: self.max_megapixels,
            });
        }
        let decoded = decoder.total_bytes();
        let (thumb_width, thumb_height) = fit(width, height, spec.width, spec.height);
        let thumb_pixel = u64::from(decoder.color_type().bytes_per_pixel()).max(4);
        let thumb = 2 * u64::from(thumb_width) * u64::from(thumb_height) * thumb_pixel;
        let format_extra = match format {
            Some(ImageFormat::Gif) => decoded,
            Some(ImageFormat::Jpeg) if sequential_jpeg(original) => original.len() as u64,
            Some(ImageFormat::Jpeg) => original.len() as u64 + 6 * pixels,
            _ => 0,
        };
        let needed_mib = (decoded + thumb + DECODER_BUFFERS + format_extra).div_ceil(MIB);
        match u32::try_from(needed_mib) {
            Ok(n) if n <= self.budget_mib => Ok(n),
            _ => Err(ThumbError::TooMuchMemory {
                width,
                height,
                thumb_width,
                thumb_height,
                needed_mib,
                limit_mib: self.budget_mib.into(),
            }),
        }
    }
}

/// Runs `f` on the blocking pool: decoding is CPU work.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ThumbError> + Send + 'static,
) -> Result<T, ThumbError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ThumbError::Image(format!("the decode task failed: {e}")))?
}

/// A reader of `original` in the format its bytes show, whose decoder allocates at most
/// `max_alloc` bytes.
pub(crate) fn reader(
    original: &[u8],
    max_alloc: u64,
) -> Result<ImageReader<Cursor<&[u8]>>, ThumbError> {
    let mut reader = ImageReader::new(Cursor::new(original))
        .with_guessed_format()
        .map_err(|e| ThumbError::Image(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_alloc);
    reader.limits(limits);
    Ok(reader)
}

/// The size `image`'s `thumbnail` gives a `width`x`height` image to fit in the box.
pub(crate) fn fit(width: u32, height: u32, box_width: u32, box_height: u32) -> (u32, u32) {
    let ratio = f64::min(
        f64::from(box_width) / f64::from(width),
        f64::from(box_height) / f64::from(height),
    );
    let side = |n: u32| ((f64::from(n) * ratio).round() as u32).max(1);
    (side(width), side(height))
}

/// Whether a JPEG's frame is sequential (SOF0, SOF1), which zune-jpeg decodes row by row.
/// Walks the header's segments up to the first frame; anything else counts as progressive.
pub(crate) fn sequential_jpeg(bytes: &[u8]) -> bool {
    let mut at = 2; // after SOI
    while let Some(&[0xFF, marker, hi, lo]) = bytes.get(at..at + 4) {
        match marker {
            0xFF => {
                at += 1; // fill byte
                continue;
            }
            0xC0 | 0xC1 => return true,
            0xC4 | 0xC8 | 0xCC => {}            // DHT, JPG, DAC: not frames
            0xC2..=0xCF | 0xDA => return false, // another frame, or a scan before any frame
            _ => {}
        }
        at += 2 + usize::from(u16::from_be_bytes([hi, lo]));
    }
    false
}

/// Resizes `original` to fit in the spec's box, keeping the aspect ratio, and encodes it; the
/// decoder allocates at most `max_alloc` bytes, pixels included.
pub(crate) fn render(original: &[u8], spec: &Spec, max_alloc: u64) -> Result<Vec<u8>, ThumbError> {
    let img = reader(original, max_alloc)?
        .decode()
        .map_err(|e| ThumbError::from_image(e, max_alloc))?;
    let thumb = img.thumbnail(spec.width, spec.height);
    drop(img);
    let thumb = match spec.format {
        // JPEG has no alpha channel.
        ImageFormat::Jpeg => DynamicImage::ImageRgb8(thumb.into_rgb8()),
        _ => thumb,
    };
    let mut out = Cursor::new(Vec::new());
    thumb
        .write_to(&mut out, spec.format)
        .map_err(|e| ThumbError::Image(e.to_string()))?;
    Ok(out.into_inner())
}

/// A strong ETag for the bytes: their CRC-32 (IEEE) and length.
pub(crate) fn etag(bytes: &[u8]) -> String {
    format!("\"{:08x}-{:x}\"", crc32fast::hash(bytes), bytes.len())
}
