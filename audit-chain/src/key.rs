//! The audit key: 32 random bytes the warden creates on first start at
//! `<state-dir>/audit.key` (mode 0600), stored as 64 lowercase hex digits and a newline
//! so an operator can copy it to wherever `clawctl audit verify --key` runs.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// File name of the key inside the state directory.
pub const KEY_FILE: &str = "audit.key";

const KEY_LEN: usize = 32;

/// The HMAC-SHA-256 key of an audit chain. Its bytes are never printed: `Debug` shows
/// only [`AuditKey::id`].
#[derive(Clone, PartialEq, Eq)]
pub struct AuditKey {
    bytes: [u8; KEY_LEN],
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditKey({})", self.id())
    }
}

/// Why a key could not be read or created.
#[derive(Debug)]
pub enum KeyError {
    /// The file could not be read (missing, permissions, …).
    Read { path: PathBuf, source: io::Error },
    /// A new key could not be written.
    Create { path: PathBuf, source: io::Error },
    /// The file does not hold a key.
    Format { path: PathBuf, message: String },
    /// Group or others may read or write it.
    Permissions { path: PathBuf, mode: u32 },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Read { path, source } => {
                write!(f, "cannot read the audit key {}: {source}", path.display())
            }
            KeyError::Create { path, source } => {
                write!(f, "cannot create the audit key {}: {source}", path.display())
            }
            KeyError::Format { path, message } => write!(
                f,
                "{} is not an audit key ({message}); it must hold 64 hex digits",
                path.display()
            ),
            KeyError::Permissions { path, mode } => write!(
                f,
                "audit key {} has mode {mode:04o}: others could read it and forge audit lines; run chmod 600 on it",
                path.display()
            ),
        }
    }
}

impl std::error::Error for KeyError {}

impl AuditKey {
    /// A key from raw bytes (tests, and readers that got the bytes elsewhere).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> AuditKey {
        AuditKey { bytes }
    }

    /// A fresh random key from the kernel.
    pub fn generate() -> io::Result<AuditKey> {
        let mut bytes = [0u8; KEY_LEN];
        File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        Ok(AuditKey { bytes })
    }

    /// A short public name of the key (first 16 hex digits of its SHA-256), to tell keys
    /// apart in messages without revealing them.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.bytes)[..8])
    }

    /// Parses the file format: 64 hex digits, surrounding whitespace ignored.
    pub fn parse(text: &str) -> Result<AuditKey, String> {
        let t = text.trim();
        if t.len() != 2 * KEY_LEN {
            return Err(format!("{} characters", t.len()));
        }
        let mut bytes = [0u8; KEY_LEN];
        hex::decode_to_slice(t, &mut bytes).map_err(|e| e.to_string())?;
        Ok(AuditKey { bytes })
    }

    /// Reads a key file (any mode: for verifying a copy).
    pub fn read(path: &Path) -> Result<AuditKey, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        AuditKey::parse(&text).map_err(|message| KeyError::Format {
            path: path.to_owned(),
            message,
        })
    }

    /// The warden's key: reads `path`, refusing one that group or others can access, or
    /// creates it (0600) when it does not exist. Returns the key and whether it was
    /// created now.
    pub fn load_or_create(path: &Path) -> Result<(AuditKey, bool), KeyError> {
        match fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o7777;
                if mode & 0o077 != 0 {
                    return Err(KeyError::Permissions {
                        path: path.to_owned(),
                        mode,
                    });
                }
                AuditKey::read(path).map(|k| (k, false))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = AuditKey::generate().map_err(|source| KeyError::Create {
                    path: path.to_owned(),
                    source,
                })?;
                match key.create_file(path) {
                    Ok(()) => Ok((key, true)),
                    // Someone else created it between our look and our write: use theirs.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        AuditKey::load_or_create(path)
                    }
                    Err(source) => Err(KeyError::Create {
                        path: path.to_owned(),
                        source,
                    }),
                }
            }
            Err(source) => Err(KeyError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes the key to a temporary file (0600), syncs it, and links it to `path`, so
    /// `path` appears complete or not at all; fails with `AlreadyExists` if `path` does.
    fn create_file(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension(format!("key.tmp.{}", std::process::id()));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let written = f
            .write_all(format!("{}\n", hex::encode(self.bytes)).as_bytes())
            .and_then(|()| f.sync_all())
            .and_then(|()| fs::hard_link(&tmp, path));
        let _ = fs::remove_file(&tmp);
        written?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// HMAC-SHA-256 of `data` under this key, lowercase hex.
    pub fn mac_hex(&self, data: &[u8]) -> String {
        hex::encode(self.mac(data))
    }

    /// Whether `mac_hex` is the HMAC of `data` (compared in constant time).
    pub fn verify(&self, data: &[u8], mac_hex: &str) -> bool {
        let mut tag = [0u8; 32];
        if hex::decode_to_slice(mac_hex, &mut tag).is_err() {
            return false;
        }
        let mut m = self.hmac();
        m.update(data);
        m.verify_slice(&tag).is_ok()
    }

    fn hmac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.bytes).expect("HMAC takes keys of any length")
    }

    fn mac(&self, data: &[u8]) -> [u8; 32] {
        let mut m = self.hmac();
        m.update(data);
        m.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("clawrden-audit-key-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        // RFC 4231 4.3: key "Jefe" is not 32 bytes, so check through the hmac crate's
        // own path with a 32-byte key padded as HMAC pads it.
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(b"Jefe");
        let key = AuditKey::from_bytes(k);
        assert_eq!(
            key.mac_hex(b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(key.verify(
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        ));
        assert!(!key.verify(b"what do ya want for nothing!", &key.mac_hex(b"x")));
        assert!(!key.verify(b"x", "not hex"));
    }

    #[test]
    fn created_key_is_0600_and_loads_back() {
        let dir = temp_dir("create");
        let path = dir.join(KEY_FILE);
        let (key, created) = AuditKey::load_or_create(&path).unwrap();
        assert!(created);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        let (again, created) = AuditKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again, key);
        assert_eq!(AuditKey::read(&path).unwrap(), key);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary left");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn readable_by_others_or_malformed_keys_are_refused() {
        let dir = temp_dir("refuse");
        let path = dir.join(KEY_FILE);
        AuditKey::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = AuditKey::load_or_create(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "audit key {} has mode 0640: others could read it and forge audit lines; run chmod 600 on it",
                path.display()
            )
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "abc\n").unwrap();
        let err = AuditKey::load_or_create(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{} is not an audit key (3 characters); it must hold 64 hex digits",
                path.display()
            )
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_shows_the_id_not_the_key() {
        let key = AuditKey::from_bytes([7; 32]);
        let shown = format!("{key:?}");
        assert_eq!(shown, format!("AuditKey({})", key.id()));
        assert!(!shown.contains("0707"));
        assert_eq!(key.id().len(), 16);
    }
}
