//! How an executor hands a command's environment to `clawrden-shim exec-helper` without
//! making it the helper's own environment.
//!
//! The helper is a root supervisor; the caller's variables (a prisoner's `PATH`,
//! `LD_PRELOAD`, ...) must never be variables *it* runs with. So the executor encodes the
//! command's environment as opaque data: the `NAME=VALUE` entries, each followed by a NUL
//! byte, hex-encoded and cut into chunks `CLAWRDEN_EXEC_ENV_0`, `_1`, ... (one exec
//! argument or variable may hold at most 128 KiB on Linux). The helper is told how many
//! chunks there are (`--env-block N`), decodes them, and gives exactly those entries to the
//! command, byte-exact (non-UTF-8 included), and nothing else.

/// Name of chunk `i` is this prefix followed by `i`.
pub const CHUNK_PREFIX: &str = "CLAWRDEN_EXEC_ENV_";
/// Hex digits per chunk (well under the kernel's 128 KiB per string).
pub const CHUNK_DIGITS: usize = 96 * 1024;
/// Most chunks a helper accepts (4.5 MiB of hex: more than any environment exec allows).
pub const MAX_CHUNKS: usize = 48;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Encodes `entries` (`NAME=VALUE` byte strings, without NUL bytes) as chunk variables.
/// An empty environment is one empty chunk.
pub fn encode<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Vec<(String, String)> {
    let mut digits = String::new();
    for entry in entries {
        for &b in entry.iter().chain(std::iter::once(&0u8)) {
            digits.push(HEX[usize::from(b >> 4)] as char);
            digits.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
    if digits.is_empty() {
        return vec![(format!("{CHUNK_PREFIX}0"), String::new())];
    }
    digits
        .as_bytes()
        .chunks(CHUNK_DIGITS)
        .enumerate()
        .map(|(i, chunk)| {
            (
                format!("{CHUNK_PREFIX}{i}"),
                // Hex digits are ASCII, and chunks split between whole digits.
                String::from_utf8_lossy(chunk).into_owned(),
            )
        })
        .collect()
}

/// Decodes `count` chunks read by `chunk(i)` back into the `NAME=VALUE` entries.
pub fn decode(
    count: usize,
    chunk: impl Fn(usize) -> Option<Vec<u8>>,
) -> Result<Vec<Vec<u8>>, String> {
    if count == 0 || count > MAX_CHUNKS {
        return Err(format!(
            "--env-block {count}: the count must be 1 to {MAX_CHUNKS}"
        ));
    }
    let mut bytes = Vec::new();
    let mut pending: Option<u8> = None;
    for i in 0..count {
        let digits = chunk(i).ok_or_else(|| format!("{CHUNK_PREFIX}{i} is not set"))?;
        for d in digits {
            let nibble = (d as char)
                .to_digit(16)
                .ok_or_else(|| format!("{CHUNK_PREFIX}{i} is not hexadecimal"))?
                as u8;
            match pending.take() {
                None => pending = Some(nibble),
                Some(high) => bytes.push(high << 4 | nibble),
            }
        }
    }
    if pending.is_some() {
        return Err("the environment block has an odd number of hex digits".into());
    }
    match bytes.pop() {
        None => return Ok(Vec::new()),
        Some(0) => {}
        Some(_) => return Err("the environment block does not end with a NUL byte".into()),
    }
    let mut entries = Vec::new();
    for entry in bytes.split(|&b| b == 0) {
        match entry.iter().position(|&b| b == b'=') {
            Some(eq) if eq > 0 => entries.push(entry.to_vec()),
            _ => {
                return Err(format!(
                    "environment entry {:?} is not NAME=VALUE",
                    String::from_utf8_lossy(entry)
                ))
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(entries: &[&[u8]]) -> Vec<Vec<u8>> {
        let vars = encode(entries.iter().copied());
        decode(vars.len(), |i| {
            vars.get(i).map(|(_, v)| v.as_bytes().to_vec())
        })
        .unwrap()
    }

    #[test]
    fn entries_round_trip_byte_exact() {
        let entries: [&[u8]; 4] = [b"PATH=/usr/bin", b"X=", b"BIN=\xff\x01=\n", b"E==x"];
        assert_eq!(roundtrip(&entries), entries.map(<[u8]>::to_vec));
        assert_eq!(roundtrip(&[]), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn a_large_environment_is_cut_into_chunks() {
        let big = [b"BIG=".as_slice(), &vec![b'x'; 200 * 1024]].concat();
        let vars = encode([big.as_slice()]);
        assert_eq!(vars.len(), 5);
        assert_eq!(vars[0].0, "CLAWRDEN_EXEC_ENV_0");
        assert_eq!(vars[4].0, "CLAWRDEN_EXEC_ENV_4");
        assert!(vars.iter().all(|(_, v)| v.len() <= CHUNK_DIGITS));
        assert_eq!(roundtrip(&[&big]), vec![big]);
    }

    #[test]
    fn malformed_blocks_are_refused() {
        let one = |s: &'static str| move |i: usize| (i == 0).then(|| s.as_bytes().to_vec());
        assert!(decode(0, one("")).is_err());
        assert!(decode(1, one("4g00")).is_err());
        assert!(decode(1, one("410")).is_err());
        assert_eq!(
            decode(1, one("41")).unwrap_err(),
            "the environment block does not end with a NUL byte"
        );
        // "A" with no '=' and "=x" with an empty name.
        assert!(decode(1, one("4100")).is_err());
        assert!(decode(1, one("3d7800")).is_err());
        assert_eq!(
            decode(2, one("")).unwrap_err(),
            "CLAWRDEN_EXEC_ENV_1 is not set"
        );
    }
}
