//! `transfer-encoding: chunked` bodies followed as they arrive (RFC 9112,
//! section 7.1): where the message ends and its data, whether it comes
//! whole or a byte at a time.

/// Follows `transfer-encoding: chunked` framing through bytes as they
/// arrive: where the message ends, and its data.
#[derive(Default)]
pub(crate) struct Chunked {
    state: ChunkState,
    line: Vec<u8>,
}

#[derive(Default, Clone, Copy, PartialEq, Debug)]
pub(crate) enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailer,
}

/// Chunk-size and trailer lines longer than this are refused.
pub(crate) const MAX_CHUNK_LINE: usize = 8 * 1024;

impl Chunked {
    /// Reads `input`, giving the chunks' data to `data`; the offset just
    /// past the message's end when it ends in `input`.
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        data: &mut impl FnMut(&[u8]),
    ) -> Result<Option<usize>, String> {
        let mut at = 0;
        while at < input.len() {
            match self.state {
                ChunkState::Data(left) => {
                    let n = (input.len() - at).min(usize::try_from(left).unwrap_or(usize::MAX));
                    data(&input[at..at + n]);
                    at += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailer => {
                    let Some(nl) = input[at..].iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(&input[at..]);
                        if self.line.len() > MAX_CHUNK_LINE {
                            return Err("a chunk line too long".into());
                        }
                        return Ok(None);
                    };
                    self.line.extend_from_slice(&input[at..at + nl]);
                    // However the line arrived, whole or in pieces.
                    if self.line.len() > MAX_CHUNK_LINE {
                        return Err("a chunk line too long".into());
                    }
                    at += nl + 1;
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = match self.state {
                        ChunkState::Size => {
                            let size = line
                                .split(|&b| b == b';')
                                .next()
                                .unwrap_or(b"")
                                .trim_ascii();
                            let size = std::str::from_utf8(size)
                                .ok()
                                .and_then(|s| u64::from_str_radix(s, 16).ok())
                                .ok_or("an invalid chunk size")?;
                            if size == 0 {
                                ChunkState::Trailer
                            } else {
                                ChunkState::Data(size)
                            }
                        }
                        ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
                        ChunkState::DataEnd => return Err("a chunk without its CRLF".into()),
                        _ if line.is_empty() => {
                            self.state = ChunkState::Size;
                            return Ok(Some(at));
                        }
                        _ => ChunkState::Trailer,
                    };
                }
            }
        }
        Ok(None)
    }
}

/// Entry points of the fuzz targets (`fuzz/`), each checking what must
/// hold whatever the input; not an API.
#[doc(hidden)]
pub mod fuzz {
    use super::*;

    /// Feeds `input` to a chunk reader in pieces of `step` bytes: the data
    /// and where the message ended, or why it was refused.
    pub fn chunked_in_pieces(
        input: &[u8],
        step: usize,
    ) -> (Vec<u8>, Result<Option<usize>, String>) {
        let mut c = Chunked::default();
        let mut out = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let piece = &input[at..(at + step).min(input.len())];
            match c.feed(piece, &mut |d| out.extend_from_slice(d)) {
                Ok(Some(end)) => return (out, Ok(Some(at + end))),
                Ok(None) => at += piece.len(),
                Err(e) => return (out, Err(e)),
            }
        }
        (out, Ok(None))
    }

    /// The chunked decoder fed the input whole and in the pieces the
    /// first byte picks gives the same data, end and refusal.
    pub fn chunked(data: &[u8]) {
        let Some((&step, input)) = data.split_first() else {
            return;
        };
        let run = |step: usize| chunked_in_pieces(input, step);
        let (whole, end) = run(input.len().max(1));
        assert!(whole.len() <= input.len());
        if let Ok(Some(e)) = end {
            assert!(e <= input.len());
        }
        let (split, split_end) = run(usize::from(step % 16) + 1);
        assert_eq!(end, split_end);
        assert_eq!(whole, split);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a valid `message` in pieces of `step` bytes; the data and
    /// where the message ended.
    fn read_chunked(message: &[u8], step: usize) -> (Vec<u8>, Option<usize>) {
        let (data, end) = fuzz::chunked_in_pieces(message, step);
        (data, end.expect("valid"))
    }

    #[test]
    fn chunked_bodies_are_followed_in_pieces_of_any_size() {
        let message =
            b"5;note=x\r\n{\"pre\r\n8\r\ndictions\r\nA\r\n\": [0.25]}\r\n0\r\nx-sum: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 1000] {
            let (data, end) = read_chunked(message, step);
            assert_eq!(data, b"{\"predictions\": [0.25]}", "step {step}");
            assert_eq!(end, Some(message.len() - 4), "step {step}");
        }
        // Not ended yet.
        assert_eq!(read_chunked(b"3\r\nabc\r\n", 2), (b"abc".to_vec(), None));
        let mut c = Chunked::default();
        assert!(c.feed(b"zz\r\n", &mut |_: &[u8]| {}).is_err());
        let mut c = Chunked::default();
        assert!(c.feed(b"1\r\nab\r\n", &mut |_: &[u8]| {}).is_err());
        // A chunk-size line over the bound is refused whether it arrives
        // whole or in pieces (whole, it used to be read).
        let mut long = vec![b'0'; MAX_CHUNK_LINE + 1];
        long.extend_from_slice(b"1\r\na\r\n0\r\n\r\n");
        for step in [3, long.len()] {
            assert!(fuzz::chunked_in_pieces(&long, step).1.is_err(), "{step}");
        }
    }
}
