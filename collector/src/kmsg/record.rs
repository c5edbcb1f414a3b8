//! The /dev/kmsg record format: `prio,seq,ts_usec,flags[,...];message\n[ KEY=value\n]...`
//! (kernel/printk/printk.c, `info_print_ext_header` and `msg_print_ext_body`).

use crate::util::parse_u64;

/// Longest message kept (bytes).
pub const MAX_MESSAGE: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KmsgError {
    #[error("no ';' ending the header")]
    NoHeader,
    #[error("bad header field {0}")]
    Field(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord<'a> {
    pub level: u8,
    pub facility: u32,
    pub seq: u64,
    pub ts_usec: u64,
    /// The flags field's first byte: `-`; `c` a continuation fragment (Linux >= 5.10), or
    /// the first fragment of a continued line (older kernels), whose next fragments are `+`.
    pub flag: u8,
    pub message: &'a [u8],
    /// ` KEY=value` continuation lines (SUBSYSTEM=, DEVICE=).
    pub dict: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> KmsgRecord<'a> {
    pub fn dict_value(&self, key: &[u8]) -> Option<&'a [u8]> {
        self.dict.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

pub fn parse_record(buf: &[u8]) -> Result<KmsgRecord<'_>, KmsgError> {
    let semi = buf
        .iter()
        .position(|&c| c == b';')
        .ok_or(KmsgError::NoHeader)?;
    let mut h = buf[..semi].split(|&c| c == b',');
    let prio = h
        .next()
        .and_then(parse_u64)
        .ok_or(KmsgError::Field("prio"))?;
    let seq = h
        .next()
        .and_then(parse_u64)
        .ok_or(KmsgError::Field("seq"))?;
    let ts_usec = h.next().and_then(parse_u64).ok_or(KmsgError::Field("ts"))?;
    let flags = h.next().ok_or(KmsgError::Field("flags"))?;
    let rest = &buf[semi + 1..];
    let mut lines = rest.split(|&c| c == b'\n');
    let message = lines.next().unwrap_or(b"");
    let mut dict = Vec::new();
    for l in lines {
        if let Some(kv) = l.strip_prefix(b" ")
            && let Some(eq) = kv.iter().position(|&c| c == b'=')
            && dict.len() < 16
        {
            dict.push((&kv[..eq], &kv[eq + 1..]));
        }
    }
    Ok(KmsgRecord {
        level: (prio & 7) as u8,
        facility: u32::try_from(prio >> 3).map_err(|_| KmsgError::Field("prio"))?,
        seq,
        ts_usec,
        flag: flags.first().copied().unwrap_or(b'-'),
        message: &message[..message.len().min(MAX_MESSAGE)],
        dict,
    })
}

/// OpenTelemetry severity number and text of a syslog level.
pub fn severity(level: u8) -> (u8, &'static str) {
    match level {
        0 => (21, "FATAL"),
        1 => (19, "ERROR3"),
        2 => (18, "ERROR2"),
        3 => (17, "ERROR"),
        4 => (13, "WARN"),
        5 => (10, "INFO2"),
        6 => (9, "INFO"),
        _ => (5, "DEBUG"),
    }
}
