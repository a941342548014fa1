//! The KServe v2 binary tensor extension (Triton's, which tritonclient
//! uses whenever `binary_data=True`): a body whose first
//! `Inference-Header-Content-Length` bytes are the JSON request or
//! response, followed by the raw data of every tensor whose `parameters`
//! give a `binary_data_size`, in the order the tensors are listed.
//! Numbers are little-endian, row-major; `BOOL` is a byte per element;
//! `BYTES` elements are each a 4-byte little-endian length and the bytes.

use super::{AdapterError, Data};

/// The header that marks a binary body and gives its JSON part's length.
pub const HEADER: &str = "inference-header-content-length";

/// The JSON length a header value gives; a value that is not a length is
/// kept as one no body can hold, so the body is refused as binary with
/// the reason (not read as JSON as if the header were absent).
pub fn json_len(value: Option<&str>) -> Option<usize> {
    value.map(|v| v.trim().parse().unwrap_or(usize::MAX))
}

/// The JSON length the headers of a message give (see `json_len`; a
/// value that is not text is no header, as the fast path reads it).
pub fn json_len_in(headers: &hyper::HeaderMap) -> Option<usize> {
    json_len(headers.get(HEADER).and_then(|v| v.to_str().ok()))
}

/// A body split at its JSON part's length: the JSON and the binary section.
pub fn split(body: &[u8], json_len: usize) -> Result<(&[u8], Section<'_>), AdapterError> {
    if json_len > body.len() {
        return Err(AdapterError::Binary(format!(
            "Inference-Header-Content-Length {} is beyond the body ({} bytes)",
            if json_len == usize::MAX {
                "(not a length)".to_string()
            } else {
                json_len.to_string()
            },
            body.len()
        )));
    }
    let (json, rest) = body.split_at(json_len);
    Ok((json, Section { rest, taken: 0 }))
}

/// The binary section, read tensor by tensor.
#[derive(Debug)]
pub struct Section<'a> {
    rest: &'a [u8],
    taken: usize,
}

impl<'a> Section<'a> {
    /// No binary section (a JSON body).
    pub fn none() -> Section<'static> {
        Section {
            rest: &[],
            taken: 0,
        }
    }

    /// The next `size` bytes, for tensor `name`.
    fn take(&mut self, size: usize, name: &str) -> Result<&'a [u8], String> {
        if size > self.rest.len() {
            return Err(format!(
                "tensor `{name}`: binary_data_size {size} is beyond the binary data left ({} bytes after {} taken)",
                self.rest.len(),
                self.taken
            ));
        }
        let (raw, rest) = self.rest.split_at(size);
        self.rest = rest;
        self.taken += size;
        Ok(raw)
    }

    /// Every byte of the section was some tensor's.
    pub fn finish(&self) -> Result<(), AdapterError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(AdapterError::Binary(format!(
                "the tensors' binary_data_size add up to {} bytes, the body has {} after its JSON",
                self.taken,
                self.taken + self.rest.len()
            )))
        }
    }

    /// The values of tensor `name`: `count` elements of `datatype` from
    /// its next `size` bytes.
    pub fn tensor(
        &mut self,
        name: &str,
        datatype: &str,
        size: usize,
        count: usize,
    ) -> Result<Data, AdapterError> {
        let raw = self.take(size, name).map_err(AdapterError::Binary)?;
        decode(name, datatype, raw, count).map_err(AdapterError::Binary)
    }
}

/// `count` elements of `datatype` from `raw`, which they must fill.
pub(crate) fn decode(name: &str, datatype: &str, raw: &[u8], count: usize) -> Result<Data, String> {
    if datatype == "BYTES" {
        return bytes(name, raw, count).map(Data::Str);
    }
    let width = match datatype {
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" | "FP16" | "BF16" => 2,
        "INT32" | "UINT32" | "FP32" => 4,
        "INT64" | "UINT64" | "FP64" => 8,
        other => {
            return Err(format!(
                "tensor `{name}`: datatype {other:?} cannot be read as binary data"
            ))
        }
    };
    if count.checked_mul(width) != Some(raw.len()) {
        return Err(format!(
            "tensor `{name}`: {count} {datatype} values need {} bytes, binary_data_size is {}",
            count.saturating_mul(width),
            raw.len()
        ));
    }
    if datatype == "BOOL" {
        return Ok(Data::Bool(raw.iter().map(|b| *b != 0).collect()));
    }
    let number = |c: &[u8]| -> f64 {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        let (h, w, d) = (
            u16::from_le_bytes([b[0], b[1]]),
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u64::from_le_bytes(b),
        );
        match datatype {
            "INT8" => f64::from(b[0] as i8),
            "UINT8" => f64::from(b[0]),
            "INT16" => f64::from(h as i16),
            "UINT16" => f64::from(h),
            "FP16" => half(h),
            "BF16" => f64::from(f32::from_bits(u32::from(h) << 16)),
            "INT32" => f64::from(w as i32),
            "UINT32" => f64::from(w),
            "FP32" => f64::from(f32::from_bits(w)),
            "INT64" => d as i64 as f64,
            "UINT64" => d as f64,
            _ => f64::from_bits(d),
        }
    };
    Ok(Data::Num(raw.chunks_exact(width).map(number).collect()))
}

/// An IEEE 754 half-precision number.
fn half(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((h >> 10) & 0x1f);
    let fraction = f64::from(h & 0x3ff);
    match exponent {
        0 => sign * fraction * 2f64.powi(-24),
        31 if fraction == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + fraction / 1024.0) * 2f64.powi(e - 15),
    }
}

/// `count` length-prefixed strings filling `raw` (bytes that are not
/// UTF-8 are replaced by U+FFFD, as a feature value is text).
fn bytes(name: &str, mut raw: &[u8], count: usize) -> Result<Vec<String>, String> {
    // Each element takes 4 bytes at least: a count beyond that is refused
    // before anything is allocated for it.
    if count > raw.len() / 4 {
        return Err(format!(
            "tensor `{name}`: {count} BYTES values cannot fit in {} bytes",
            raw.len()
        ));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let cut = |what: &str| format!("tensor `{name}`: BYTES value {i} is cut short ({what})");
        let (len, rest) = raw
            .split_first_chunk::<4>()
            .ok_or_else(|| cut("its length"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(cut(&format!("{len} bytes, {} left", rest.len())));
        }
        let (value, rest) = rest.split_at(len);
        out.push(String::from_utf8_lossy(value).into_owned());
        raw = rest;
    }
    if !raw.is_empty() {
        return Err(format!(
            "tensor `{name}`: {} bytes left after its {count} BYTES values",
            raw.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_datatype_reads_as_its_json_form_would() {
        let read = |datatype: &str, raw: &[u8], count: usize| {
            Section {
                rest: raw,
                taken: 0,
            }
            .tensor("t", datatype, raw.len(), count)
            .expect(datatype)
        };
        assert_eq!(
            read("BOOL", &[1, 0, 7], 3),
            Data::Bool(vec![true, false, true])
        );
        assert_eq!(read("INT8", &[0xff, 2], 2), Data::Num(vec![-1.0, 2.0]));
        assert_eq!(read("UINT8", &[0xff], 1), Data::Num(vec![255.0]));
        assert_eq!(
            read("INT16", &(-300i16).to_le_bytes(), 1),
            Data::Num(vec![-300.0])
        );
        assert_eq!(
            read("UINT16", &60000u16.to_le_bytes(), 1),
            Data::Num(vec![60000.0])
        );
        assert_eq!(
            read("INT32", &(-7i32).to_le_bytes(), 1),
            Data::Num(vec![-7.0])
        );
        assert_eq!(read("UINT32", &7u32.to_le_bytes(), 1), Data::Num(vec![7.0]));
        assert_eq!(
            read("INT64", &(-9i64).to_le_bytes(), 1),
            Data::Num(vec![-9.0])
        );
        assert_eq!(read("UINT64", &9u64.to_le_bytes(), 1), Data::Num(vec![9.0]));
        assert_eq!(read("FP32", &1.5f32.to_le_bytes(), 1), Data::Num(vec![1.5]));
        assert_eq!(read("FP64", &0.1f64.to_le_bytes(), 1), Data::Num(vec![0.1]));
        // Half precision: 1.0, -2.5, the smallest subnormal, infinity.
        let h: Vec<u8> = [0x3c00u16, 0xc100, 0x0001, 0x7c00]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        assert_eq!(
            read("FP16", &h, 4),
            Data::Num(vec![1.0, -2.5, 2f64.powi(-24), f64::INFINITY])
        );
        // bfloat16 is the upper half of an f32.
        let b = ((1.5f32.to_bits() >> 16) as u16).to_le_bytes();
        assert_eq!(read("BF16", &b, 1), Data::Num(vec![1.5]));
        let mut s = Vec::new();
        for v in ["DE", "", "Zürich"] {
            s.extend_from_slice(&(v.len() as u32).to_le_bytes());
            s.extend_from_slice(v.as_bytes());
        }
        assert_eq!(
            read("BYTES", &s, 3),
            Data::Str(vec!["DE".into(), "".into(), "Zürich".into()])
        );
    }

    #[test]
    fn sizes_that_do_not_add_up_are_refused_with_the_reason() {
        let refused = |datatype: &str, raw: &[u8], size: usize, count: usize| {
            Section {
                rest: raw,
                taken: 0,
            }
            .tensor("t", datatype, size, count)
            .expect_err(datatype)
            .to_string()
        };
        assert!(refused("FP32", &[0; 8], 8, 3).contains("3 FP32 values need 12 bytes"));
        assert!(refused("FP32", &[0; 8], 12, 3).contains("beyond the binary data left"));
        assert!(refused("FP64", &[0; 8], 8, usize::MAX).contains("need"));
        assert!(refused("BYTES", &[5, 0, 0, 0, b'a'], 5, 1).contains("cut short"));
        assert!(refused("BYTES", &[0; 6], 6, 1).contains("2 bytes left"));
        assert!(refused("BYTES", &[0; 8], 8, 1 << 40).contains("cannot fit"));
        assert!(refused("STRING", &[0; 4], 4, 1).contains("cannot be read"));
        let (_, section) = split(b"{}abc", 2).expect("split");
        assert!(section
            .finish()
            .expect_err("left")
            .to_string()
            .contains("add up to 0 bytes, the body has 3"));
        assert!(split(b"{}", 3).is_err());
        assert!(split(b"{}", json_len(Some("x")).expect("kept"))
            .expect_err("not a length")
            .to_string()
            .contains("not a length"));
    }
}
