//! Decompression of record-batch bodies, bounded.
//!
//! Batches are stored as producers compressed them, and only their
//! compressed size is limited (`max.message.bytes`); a small gzip or zstd
//! batch of zeros can expand a thousandfold. Every decompressor here stops
//! and fails once its output would pass a caller-given bound
//! (`--max-decompressed-batch-bytes`), and grows its output at most to that
//! bound, so no batch makes the broker allocate more.
//!
//! Codecs as Kafka writes them: gzip (RFC 1952), snappy in the xerial
//! framing Kafka's Java client uses or raw, lz4 in the LZ4 frame format, and
//! zstd frames. The produce path decompresses into a per-thread scratch
//! buffer ([`with_scratch`]) that is reused and never kept with the batch.

use std::cell::RefCell;
use std::io::Read;

/// Compression codec ids of the batch attributes.
pub const NONE: i16 = 0;
pub const GZIP: i16 = 1;
pub const SNAPPY: i16 = 2;
pub const LZ4: i16 = 3;
pub const ZSTD: i16 = 4;

/// Default bound on one batch's decompressed size
/// (`--max-decompressed-batch-bytes`): 64 times the default
/// `max.message.bytes`.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 64 << 20;

/// Output grows by at least this much at a time.
const MIN_CHUNK: usize = 32 * 1024;
/// A thread's scratch buffer keeps at most this much capacity between
/// batches; a larger one is freed after use.
const SCRATCH_KEEP: usize = 4 << 20;

/// Why a batch body did not decompress.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecompressError {
    /// The output would pass the bound.
    #[error("decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    /// The compressed data is malformed, truncated or fails its checksum.
    #[error("{codec} data does not decompress: {reason}")]
    Corrupt { codec: &'static str, reason: String },
    /// An attribute value that names no codec.
    #[error("unknown compression codec {0}")]
    UnknownCodec(i16),
}

/// Kafka's name of a codec id.
pub fn codec_name(codec: i16) -> &'static str {
    match codec {
        NONE => "none",
        GZIP => "gzip",
        SNAPPY => "snappy",
        LZ4 => "lz4",
        ZSTD => "zstd",
        _ => "unknown",
    }
}

fn corrupt(codec: &'static str, reason: impl ToString) -> DecompressError {
    DecompressError::Corrupt {
        codec,
        reason: reason.to_string(),
    }
}

/// Decompresses `src`, a batch body compressed with `codec`, into `out`
/// (replacing what it held).
///
/// # Errors
/// Output over `limit` bytes, malformed data, an unknown codec.
pub fn decompress_into(
    codec: i16,
    src: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), DecompressError> {
    out.clear();
    let n = decompress_reusing(codec, src, limit, out)?.len();
    out.truncate(n);
    Ok(())
}

/// Decompresses `src` into `scratch` and returns the decompressed bytes, a
/// prefix of `scratch`. What `scratch` held is overwritten; its length on
/// return may exceed the output's, so that bytes already written once are
/// not zeroed again by the next call (the lz4 decoder needs an initialised
/// window of a block's maximum size, which is often four times the block).
///
/// # Errors
/// Output over `limit` bytes, malformed data, an unknown codec.
pub fn decompress_reusing<'a>(
    codec: i16,
    src: &[u8],
    limit: usize,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], DecompressError> {
    if codec == LZ4 {
        let n = lz4(src, limit, scratch)?;
        return Ok(&scratch[..n]);
    }
    scratch.clear();
    match codec {
        NONE => {
            if src.len() > limit {
                return Err(DecompressError::TooLarge { limit });
            }
            scratch.extend_from_slice(src);
        }
        GZIP => read_capped(flate2::bufread::GzDecoder::new(src), "gzip", limit, scratch)?,
        SNAPPY => snappy(src, limit, scratch)?,
        ZSTD => zstd(src, limit, scratch)?,
        c => return Err(DecompressError::UnknownCodec(c)),
    }
    Ok(scratch)
}

/// Runs `f` with this thread's scratch buffer, for [`decompress_reusing`]:
/// its contents are whatever the last use left. The buffer is reused by the
/// next call on the thread; beyond a few MiB it is freed.
pub fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let r = f(&mut buf);
            if buf.capacity() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
            r
        }
        // Only reachable by a nested call: use a buffer of its own.
        Err(_) => f(&mut Vec::new()),
    })
}

/// Makes room for at least one more byte of output: the capacity doubles,
/// but never past `limit + 1` (one byte over the bound is how an overflow
/// is seen).
fn grow(out: &mut Vec<u8>, limit: usize) -> Result<(), DecompressError> {
    if out.len() > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    if out.len() < out.capacity() {
        return Ok(());
    }
    let target = out
        .capacity()
        .saturating_mul(2)
        .max(MIN_CHUNK)
        .min(limit.saturating_add(1));
    out.reserve_exact(target.saturating_sub(out.len()).max(1));
    Ok(())
}

/// Reads a decompressing reader to its end into `out`, at most `limit` bytes.
fn read_capped(
    mut r: impl Read,
    codec: &'static str,
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), DecompressError> {
    // Reads need initialised bytes: `out` is zero-filled ahead of `filled`
    // in doubling steps, so each byte is zeroed once whatever the size of
    // the reader's reads.
    let mut filled = 0usize;
    loop {
        if filled > limit {
            out.truncate(filled);
            return Err(DecompressError::TooLarge { limit });
        }
        if filled == out.len() {
            let target = filled
                .saturating_mul(2)
                .max(MIN_CHUNK)
                .min(limit.saturating_add(1));
            out.reserve_exact(target.saturating_sub(out.len()));
            out.resize(target, 0);
        }
        match r.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                out.truncate(filled);
                return Err(corrupt(codec, e));
            }
        }
    }
    out.truncate(filled);
    Ok(())
}

/// Kafka's snappy: the xerial framing (magic, version, compatible version,
/// then blocks each prefixed by a big-endian u32 length), or one raw snappy
/// block when the magic is absent.
fn snappy(src: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), DecompressError> {
    const MAGIC: &[u8] = &[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
    let mut decoder = snap::raw::Decoder::new();
    let mut block = |b: &[u8], out: &mut Vec<u8>| -> Result<(), DecompressError> {
        let n = snap::raw::decompress_len(b).map_err(|e| corrupt("snappy", e))?;
        let start = out.len();
        if start.saturating_add(n) > limit {
            return Err(DecompressError::TooLarge { limit });
        }
        if start + n > out.capacity() {
            let target = out
                .capacity()
                .saturating_mul(2)
                .max(start + n)
                .min(limit.saturating_add(1));
            out.reserve_exact(target - start);
        }
        out.resize(start + n, 0);
        match decoder.decompress(b, &mut out[start..]) {
            Ok(written) if written == n => Ok(()),
            Ok(_) => Err(corrupt("snappy", "block shorter than its stated length")),
            Err(e) => Err(corrupt("snappy", e)),
        }
    };
    if src.len() < 16 || &src[..8] != MAGIC {
        return block(src, out);
    }
    let mut rest = &src[16..];
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(corrupt("snappy", "truncated xerial block length"));
        };
        let n = u32::from_be_bytes(*len) as usize;
        let Some(b) = tail.get(..n) else {
            return Err(corrupt("snappy", "truncated xerial block"));
        };
        block(b, out)?;
        rest = &tail[n..];
    }
    Ok(())
}

/// One LZ4 frame (Kafka's lz4), parsed here and decoded block by block
/// straight into `out`: no decoder state is built per batch. Every check a
/// consumer's LZ4F reader makes is made here (frame version and reserved
/// bits, header checksum, block sizes, block and content checksums, content
/// size), so a frame this accepts is one consumers can read. Linked blocks
/// (python-lz4's default) refer back into the output already written, which
/// is contiguous in `out`. Bytes after the frame's end mark are ignored, as
/// Kafka's reader does.
fn lz4(src: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<usize, DecompressError> {
    const MAGIC: u32 = 0x184D_2204;
    const WINDOW: usize = 64 * 1024;
    let bad = |reason: &str| corrupt("lz4", reason);
    let mut r = Cursor(src);
    if r.u32_le().ok_or_else(|| bad("truncated frame header"))? != MAGIC {
        return Err(bad("not an LZ4 frame"));
    }
    let descriptor = r.0;
    let (flg, bd) = match (r.u8(), r.u8()) {
        (Some(f), Some(b)) => (f, b),
        _ => return Err(bad("truncated frame header")),
    };
    if flg >> 6 != 0b01 || flg & 0b10 != 0 || bd & 0x8F != 0 {
        return Err(bad("unsupported frame version or reserved bits set"));
    }
    let independent = flg & 0x20 != 0;
    let block_checksums = flg & 0x10 != 0;
    let content_checksum = flg & 0x04 != 0;
    let content_size = if flg & 0x08 != 0 {
        Some(r.u64_le().ok_or_else(|| bad("truncated frame header"))?)
    } else {
        None
    };
    if flg & 0x01 != 0 {
        return Err(bad("frames that need a dictionary are not supported"));
    }
    let block_max: usize = match (bd >> 4) & 0x7 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        _ => return Err(bad("invalid block maximum size")),
    };
    let header_len = descriptor.len() - r.0.len();
    let hc = r.u8().ok_or_else(|| bad("truncated frame header"))?;
    let expected = (twox_hash::XxHash32::oneshot(0, &descriptor[..header_len]) >> 8) as u8;
    if hc != expected {
        return Err(bad("frame header checksum mismatch"));
    }
    // `out[..pos]` is the output so far; `out[pos..]` is initialised space
    // left by earlier use, written over before it is read.
    let mut pos = 0usize;
    loop {
        let word = r.u32_le().ok_or_else(|| bad("truncated frame"))?;
        if word == 0 {
            break;
        }
        let stored = word & 0x8000_0000 != 0;
        let len = (word & 0x7FFF_FFFF) as usize;
        if len > block_max {
            return Err(bad("block larger than the frame's maximum"));
        }
        let data = r.take(len).ok_or_else(|| bad("truncated block"))?;
        if block_checksums {
            let sum = r.u32_le().ok_or_else(|| bad("truncated block checksum"))?;
            if sum != twox_hash::XxHash32::oneshot(0, data) {
                return Err(bad("block checksum mismatch"));
            }
        }
        // A block decodes to at most `block_max` bytes; the room given is
        // cut at one byte past the limit, so an over-limit block fails to
        // fit and is reported as too large.
        let room =
            if stored { len } else { block_max }.min(limit.saturating_add(1).saturating_sub(pos));
        let end = pos + room;
        if end > out.len() {
            if end > out.capacity() {
                let target = out
                    .capacity()
                    .saturating_mul(2)
                    .max(MIN_CHUNK)
                    .min(limit.saturating_add(1))
                    .max(end);
                out.reserve_exact(target - out.len());
            }
            out.resize(end, 0);
        }
        if !stored {
            lz4_block_shape(data, block_max).map_err(|e| corrupt("lz4", e))?;
        }
        let (before, after) = out.split_at_mut(pos);
        let window = &mut after[..room];
        let decoded = if stored {
            match window.get_mut(..len) {
                Some(w) => {
                    w.copy_from_slice(data);
                    Ok(len)
                }
                None => return Err(DecompressError::TooLarge { limit }),
            }
        } else if independent {
            lz4_flex::block::decompress_into(data, window)
        } else {
            let dict = &before[pos.saturating_sub(WINDOW)..];
            lz4_flex::block::decompress_into_with_dict(data, window, dict)
        };
        match decoded {
            Ok(n) => pos += n,
            Err(lz4_flex::block::DecompressError::OutputTooSmall { .. }) if room < block_max => {
                return Err(DecompressError::TooLarge { limit });
            }
            Err(e) => return Err(corrupt("lz4", e)),
        }
        if pos > limit {
            return Err(DecompressError::TooLarge { limit });
        }
    }
    if content_checksum {
        let sum = r
            .u32_le()
            .ok_or_else(|| bad("truncated content checksum"))?;
        if sum != twox_hash::XxHash32::oneshot(0, &out[..pos]) {
            return Err(bad("content checksum mismatch"));
        }
    }
    if content_size.is_some_and(|n| n != pos as u64) {
        return Err(bad("content size differs from the frame header"));
    }
    Ok(pos)
}

/// Checks the sequence layout of a compressed LZ4 block as the reference
/// decoder (liblz4, which librdkafka and the Java client use) does: the
/// block ends with a sequence of literals only, which takes its last 8
/// input bytes or reaches the last 12 bytes of a block of `capacity`
/// bytes; a match never writes the last 5 bytes. A block the decoder here
/// could decode but liblz4 would refuse is refused, so that no batch is
/// kept that a consumer cannot read. (Offsets are the decoder's to check.)
fn lz4_block_shape(data: &[u8], capacity: usize) -> Result<(), &'static str> {
    const TAIL_INPUT: usize = 8; // offset, a token, the last literals
    const TAIL_OUTPUT: usize = 12; // the last match starts before this
    const LAST_LITERALS: usize = 5;
    let n = data.len();
    let (mut i, mut op) = (0usize, 0usize);
    // An extended length: bytes of 255 and one that ends it. `floor` is
    // how close to the end of the input the bytes may come.
    let extend = |i: &mut usize, mut len: usize, floor: usize| -> Result<usize, &'static str> {
        loop {
            let b = *data.get(*i).ok_or("truncated length")?;
            *i += 1;
            if *i > floor {
                return Err("length runs into the end of the block");
            }
            len = len.saturating_add(usize::from(b));
            if b != 255 {
                return Ok(len);
            }
        }
    };
    loop {
        let token = *data.get(i).ok_or("block ends without literals")?;
        i += 1;
        let mut literals = usize::from(token >> 4);
        if literals == 15 {
            literals = extend(&mut i, literals, n)?;
        }
        let lit_end = i.saturating_add(literals);
        if lit_end.saturating_add(TAIL_INPUT) > n
            || op.saturating_add(literals).saturating_add(TAIL_OUTPUT) > capacity
        {
            // The last sequence: its literals end the block exactly.
            if lit_end != n || op.saturating_add(literals) > capacity {
                return Err("malformed last sequence");
            }
            return Ok(());
        }
        i = lit_end + 2;
        op += literals;
        let mut matched = usize::from(token & 15);
        if matched == 15 {
            matched = extend(&mut i, matched, n - LAST_LITERALS)?;
        }
        op = op.saturating_add(matched + 4);
        if op.saturating_add(LAST_LITERALS) > capacity {
            return Err("a match reaches the last bytes of the block");
        }
    }
}

/// A reader over a byte slice for the frame parser.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32_le(&mut self) -> Option<u32> {
        let (b, tail) = self.0.split_first_chunk::<4>()?;
        self.0 = tail;
        Some(u32::from_le_bytes(*b))
    }
    fn u64_le(&mut self) -> Option<u64> {
        let (b, tail) = self.0.split_first_chunk::<8>()?;
        self.0 = tail;
        Some(u64::from_le_bytes(*b))
    }
}

/// Zstd frames, through a decompression context kept per thread.
fn zstd(src: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), DecompressError> {
    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
    thread_local! {
        static CONTEXT: RefCell<Option<Decoder<'static>>> = const { RefCell::new(None) };
    }
    let run = |dec: &mut Decoder<'static>, out: &mut Vec<u8>| -> Result<(), DecompressError> {
        dec.reinit().map_err(|e| corrupt("zstd", e))?;
        let mut input = InBuffer::around(src);
        loop {
            grow(out, limit)?;
            let (hint, full) = {
                let pos = out.len();
                let mut output = OutBuffer::around_pos(out, pos);
                let hint = dec
                    .run(&mut input, &mut output)
                    .map_err(|e| corrupt("zstd", e))?;
                (hint, output.pos() == output.capacity())
            };
            if out.len() > limit {
                return Err(DecompressError::TooLarge { limit });
            }
            if hint == 0 {
                // A frame ended and is flushed; another may follow.
                if input.pos() == src.len() {
                    return Ok(());
                }
            } else if input.pos() == src.len() && !full {
                return Err(corrupt("zstd", "truncated frame"));
            }
        }
    };
    CONTEXT.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            let dec = match &mut *slot {
                Some(d) => d,
                None => slot.insert(Decoder::new().map_err(|e| corrupt("zstd", e))?),
            };
            run(dec, out)
        }
        Err(_) => run(&mut Decoder::new().map_err(|e| corrupt("zstd", e))?, out),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn lz4_frame(data: &[u8]) -> Vec<u8> {
        let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        e.write_all(data).unwrap();
        let (v, r) = e.finish();
        r.unwrap();
        v
    }

    fn xerial(data: &[u8]) -> Vec<u8> {
        let mut v = vec![
            0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
        ];
        for chunk in data.chunks(32 * 1024) {
            let c = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            v.extend_from_slice(&(c.len() as u32).to_be_bytes());
            v.extend_from_slice(&c);
        }
        v
    }

    fn all_codecs(data: &[u8]) -> Vec<(i16, Vec<u8>)> {
        vec![
            (GZIP, gzip(data)),
            (SNAPPY, xerial(data)),
            (
                SNAPPY,
                snap::raw::Encoder::new().compress_vec(data).unwrap(),
            ),
            (LZ4, lz4_frame(data)),
            (ZSTD, zstd::bulk::compress(data, 3).unwrap()),
        ]
    }

    #[test]
    fn every_codec_round_trips_and_the_buffer_is_reused() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        for (codec, c) in all_codecs(&data) {
            decompress_into(codec, &c, 1 << 20, &mut out).unwrap();
            assert_eq!(out, data, "{}", codec_name(codec));
        }
        // Twice in a row through the same context and buffer.
        let z = zstd::bulk::compress(&data, 3).unwrap();
        decompress_into(ZSTD, &z, 1 << 20, &mut out).unwrap();
        decompress_into(ZSTD, &z, 1 << 20, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn output_past_the_limit_is_refused_without_growing_past_it() {
        let zeros = vec![0u8; 3 << 20];
        for (codec, c) in all_codecs(&zeros) {
            let mut out = Vec::new();
            let e = decompress_into(codec, &c, 1 << 20, &mut out).unwrap_err();
            assert_eq!(
                e,
                DecompressError::TooLarge { limit: 1 << 20 },
                "{}",
                codec_name(codec)
            );
            assert!(
                out.capacity() <= (1 << 20) + 1 + MIN_CHUNK,
                "{}",
                codec_name(codec)
            );
            // Exactly at the limit is fine.
            decompress_into(codec, &c, 3 << 20, &mut out).unwrap();
            assert_eq!(out.len(), 3 << 20);
        }
    }

    #[test]
    fn truncated_and_garbage_input_is_corrupt() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 256) as u8).collect();
        for (codec, c) in all_codecs(&data) {
            let mut out = Vec::new();
            for cut in [0, 1, c.len() / 2, c.len() - 1] {
                assert!(
                    decompress_into(codec, &c[..cut], 1 << 20, &mut out).is_err(),
                    "{} cut at {cut}",
                    codec_name(codec)
                );
            }
        }
        let mut bad_gzip = vec![0x1f, 0x8b];
        bad_gzip.extend_from_slice(&[0u8; 64]);
        assert!(matches!(
            decompress_into(GZIP, &bad_gzip, 1 << 20, &mut Vec::new()),
            Err(DecompressError::Corrupt { codec: "gzip", .. })
        ));
        assert_eq!(
            decompress_into(7, b"x", 10, &mut Vec::new()),
            Err(DecompressError::UnknownCodec(7))
        );
    }

    /// Frames in every shape an LZ4F writer makes: linked and independent
    /// blocks, every block size, block and content checksums, a stated
    /// content size, incompressible (stored) blocks.
    fn lz4_variants(data: &[u8]) -> Vec<(String, Vec<u8>)> {
        use lz4::liblz4::BlockChecksum;
        use lz4::{BlockMode, BlockSize, ContentChecksum};
        let mut v = Vec::new();
        for mode in [BlockMode::Linked, BlockMode::Independent] {
            for size in [BlockSize::Max64KB, BlockSize::Max256KB, BlockSize::Max4MB] {
                for checks in [false, true] {
                    let mut b = lz4::EncoderBuilder::new();
                    b.block_mode(mode.clone()).block_size(size.clone());
                    if checks {
                        b.block_checksum(BlockChecksum::BlockChecksumEnabled)
                            .checksum(ContentChecksum::ChecksumEnabled)
                            .content_size(data.len() as u64);
                    } else {
                        b.block_checksum(BlockChecksum::NoBlockChecksum)
                            .checksum(ContentChecksum::NoChecksum);
                    }
                    let mut e = b.build(Vec::new()).unwrap();
                    e.write_all(data).unwrap();
                    let (f, r) = e.finish();
                    r.unwrap();
                    v.push((format!("{mode:?} {size:?} checks={checks}"), f));
                }
            }
        }
        v
    }

    #[test]
    fn lz4_frames_of_every_shape_decode() {
        // Repetitive text that links across blocks, then noise that is
        // stored uncompressed.
        let mut data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("record-{} ", i % 977).into_bytes())
            .collect();
        let mut x = 0x9E37_79B9u32;
        data.extend((0..100_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        }));
        let mut out = Vec::new();
        for (name, f) in lz4_variants(&data) {
            decompress_into(LZ4, &f, 8 << 20, &mut out).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(out == data, "{name}");
            // Trailing bytes after the end mark are ignored.
            let mut g = f.clone();
            g.extend_from_slice(b"trailer");
            decompress_into(LZ4, &g, 8 << 20, &mut out).unwrap();
            assert!(out == data, "{name} with trailer");
            // Over the limit by one byte.
            assert_eq!(
                decompress_into(LZ4, &f, data.len() - 1, &mut out),
                Err(DecompressError::TooLarge {
                    limit: data.len() - 1
                }),
                "{name}"
            );
            decompress_into(LZ4, &f, data.len(), &mut out).unwrap();
        }
        // The empty frame.
        decompress_into(LZ4, &lz4_frame(b""), 10, &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn lz4_frames_that_a_consumer_would_refuse_are_refused() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
        let variants = lz4_variants(&data);
        let (_, checked) = variants
            .iter()
            .find(|(n, _)| n.contains("Independent Max64KB checks=true"))
            .unwrap();
        let decode = |f: &[u8]| decompress_into(LZ4, f, 1 << 20, &mut Vec::new());
        decode(checked).unwrap();
        // Flipping any single byte (outside a stored block's contents, which
        // only the checksums cover: here there are none) is caught.
        for i in 0..checked.len() {
            let mut f = checked.clone();
            f[i] ^= 0x01;
            assert!(decode(&f).is_err(), "flip at {i} of {}", checked.len());
        }
        // The header checksum is checked even with no other checksum.
        let (_, plain) = &variants[0];
        let mut f = plain.clone();
        f[6] ^= 0xFF;
        assert!(decode(&f).is_err());
        // A dictionary id, a wrong version, a reserved bit.
        for (at, bits) in [(4usize, 0x01u8), (4, 0x80), (4, 0x02), (5, 0x01)] {
            let mut f = plain.clone();
            f[at] ^= bits;
            assert!(decode(&f).is_err(), "bits {bits:#x} at {at}");
        }
    }

    proptest::proptest! {
        /// Against the reference LZ4F decoder: every frame it writes decodes
        /// to the same bytes here, and a damaged frame this accepts decodes
        /// there to the same bytes too (a consumer can read what is kept).
        #[test]
        fn lz4_agrees_with_the_reference_decoder(
            data in proptest::collection::vec(0u8..8, 0..300_000),
            variant in 0usize..12,
            flips in proptest::collection::vec((0usize..1_000_000, 1u8..=255), 0..3),
        ) {
            let variants = lz4_variants(&data);
            let (name, frame) = &variants[variant];
            let mut out = Vec::new();
            decompress_into(LZ4, frame, 1 << 20, &mut out).unwrap();
            proptest::prop_assert!(out == data, "{}", name);
            let mut damaged = frame.clone();
            for (at, bits) in flips {
                let i = at % damaged.len();
                damaged[i] ^= bits;
            }
            if decompress_into(LZ4, &damaged, 1 << 20, &mut out).is_ok() {
                let mut reference = Vec::new();
                let mut d = lz4::Decoder::new(&damaged[..]).unwrap();
                d.read_to_end(&mut reference).unwrap();
                proptest::prop_assert!(out == reference, "{}", name);
            }
        }
    }

    #[test]
    fn an_lz4_block_is_shaped_as_liblz4_wants_it() {
        // Literals only: the one sequence ends the block.
        assert!(lz4_block_shape(&[0x40, b'a', b'b', b'c', b'd'], 65536).is_ok());
        assert!(lz4_block_shape(&[0x00], 65536).is_ok(), "an empty block");
        // Ending on a match (decodable as "abcdabcd", but liblz4 wants the
        // last bytes to be literals).
        assert!(lz4_block_shape(&[0x40, b'a', b'b', b'c', b'd', 4, 0], 65536).is_err());
        // A match, then 8 literals: fine, unless the block's room is so
        // small that the first literals already reach its last 12 bytes.
        let mut ok = vec![0x40, b'a', b'b', b'c', b'd', 4, 0, 0x80];
        ok.extend_from_slice(b"12345678");
        assert!(lz4_block_shape(&ok, 65536).is_ok());
        assert!(lz4_block_shape(&ok, 12).is_err());
        assert!(lz4_block_shape(&[], 65536).is_err());
    }

    #[test]
    fn the_scratch_buffer_is_reused_and_large_ones_are_freed() {
        with_scratch(|b| b.extend_from_slice(&vec![1u8; SCRATCH_KEEP + 1]));
        with_scratch(|b| {
            assert!(b.capacity() <= SCRATCH_KEEP);
            b.extend_from_slice(b"abc");
        });
        with_scratch(|b| {
            assert_eq!(b, b"abc");
            // A nested call gets a buffer of its own.
            with_scratch(|c| assert!(c.is_empty()));
        });
    }

    #[test]
    fn a_reused_scratch_gives_each_batch_its_own_bytes() {
        let long: Vec<u8> = (0..200_000u32).map(|i| (i % 97) as u8).collect();
        let short = b"short and sweet".repeat(10);
        let mut scratch = Vec::new();
        for (codec, c) in all_codecs(&long) {
            let out = decompress_reusing(codec, &c, 1 << 20, &mut scratch).unwrap();
            assert!(out == long, "{}", codec_name(codec));
        }
        for (codec, c) in all_codecs(&short) {
            let out = decompress_reusing(codec, &c, 1 << 20, &mut scratch).unwrap();
            assert_eq!(out, short, "{}", codec_name(codec));
        }
        // A failed decode leaves nothing a later one could mistake for output.
        let f = lz4_frame(&long);
        assert!(decompress_reusing(LZ4, &f[..f.len() / 2], 1 << 20, &mut scratch).is_err());
        let out = decompress_reusing(LZ4, &lz4_frame(b""), 1 << 20, &mut scratch).unwrap();
        assert!(out.is_empty());
    }
}
