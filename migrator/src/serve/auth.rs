//! The dashboard's access token, sessions and CSRF tokens.
//!
//! - One access token per dashboard, generated from the OS RNG at first start, printed once,
//!   stored in a 0600 file; a looser existing file is refused (someone else may have read it).
//! - A request is allowed with `Authorization: Bearer <token>` or with a session cookie. The
//!   cookie comes from the login form or from a `?token=` link, which answers with a redirect to
//!   the same page without the token, so it does not stay in the address bar or history.
//! - Every session has its own CSRF token (bearer clients get one from `GET /api/session`);
//!   every POST must carry it in `X-CSRF-Token`.
//! - Tokens are compared in constant time and never logged.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why the token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "token file {path} is mode {mode:o}: refusing a token others may read; \
         `chmod 600 {path}` if only you could have read it, else delete it to make a new one"
    )]
    Loose { path: PathBuf, mode: u32 },
    #[error("token file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path} is empty or too short (want at least 32 characters)")]
    Short { path: PathBuf },
    #[error("the OS random number generator failed: {0}")]
    Rng(std::io::Error),
}

/// `n` random bytes from the OS (getrandom(2)), hex-encoded.
pub fn random_hex(n: usize) -> Result<String, std::io::Error> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let r = unsafe {
            libc::getrandom(
                buf[filled..].as_mut_ptr() as *mut libc::c_void,
                n - filled,
                0,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += r as usize;
    }
    Ok(hex::encode(buf))
}

/// The access token and whether it was made now (then the caller prints it, once).
pub fn load_or_create_token(path: &Path) -> Result<(String, bool), TokenError> {
    let io = |source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(md) => {
            let mode = md.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(TokenError::Loose {
                    path: path.to_path_buf(),
                    mode,
                });
            }
            let token = std::fs::read_to_string(path)
                .map_err(io)?
                .trim()
                .to_string();
            if token.len() < 32 {
                return Err(TokenError::Short {
                    path: path.to_path_buf(),
                });
            }
            Ok((token, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = random_hex(32).map_err(TokenError::Rng)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            f.write_all(format!("{token}\n").as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok((token, true))
        }
        Err(e) => Err(io(e)),
    }
}

/// Equality that takes the same time wherever the first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The operator's name as given at login: recorded with every control.
    pub who: String,
    pub csrf: String,
    created: Instant,
}

/// Who made a request, once authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    pub who: String,
    pub csrf: String,
}

/// The token and the live sessions.
pub struct Auth {
    token: String,
    /// Bearer clients' CSRF token (they are not exposed to CSRF, but every control checks one).
    bearer_csrf: String,
    sessions: Mutex<HashMap<String, Session>>,
    /// Sessions expire after this long.
    ttl: Duration,
}

pub const COOKIE: &str = "migrator_session";

impl Auth {
    pub fn new(token: String) -> Result<Auth, std::io::Error> {
        Ok(Auth {
            token,
            bearer_csrf: random_hex(16)?,
            sessions: Mutex::new(HashMap::new()),
            ttl: Duration::from_secs(12 * 3600),
        })
    }

    pub fn token_ok(&self, candidate: &str) -> bool {
        constant_time_eq(candidate.trim().as_bytes(), self.token.as_bytes())
    }

    /// Opens a session for `who`; returns its cookie value.
    pub fn login(&self, who: &str) -> Result<String, std::io::Error> {
        let id = random_hex(32)?;
        let who: String = who
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect::<String>()
            .trim()
            .to_string();
        let s = Session {
            who: if who.is_empty() {
                "operator".to_string()
            } else {
                who
            },
            csrf: random_hex(16)?,
            created: Instant::now(),
        };
        let mut map = self.sessions.lock().expect("sessions");
        map.retain(|_, s| s.created.elapsed() < self.ttl);
        map.insert(id.clone(), s);
        Ok(id)
    }

    pub fn logout(&self, id: &str) {
        self.sessions.lock().expect("sessions").remove(id);
    }

    /// The principal of a request with these headers, if any.
    pub fn check(&self, bearer: Option<&str>, cookie: Option<&str>) -> Option<Principal> {
        if let Some(t) = bearer {
            return self.token_ok(t).then(|| Principal {
                who: "api (bearer token)".to_string(),
                csrf: self.bearer_csrf.clone(),
            });
        }
        let id = cookie?;
        let map = self.sessions.lock().expect("sessions");
        // Look every session up by constant-time comparison of the id.
        let s = map
            .iter()
            .find(|(k, _)| constant_time_eq(k.as_bytes(), id.as_bytes()))?
            .1;
        (s.created.elapsed() < self.ttl).then(|| Principal {
            who: s.who.clone(),
            csrf: s.csrf.clone(),
        })
    }
}

/// The value of cookie `name` in a `Cookie:` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_created_0600_and_a_loose_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        let (t, fresh) = load_or_create_token(&p).unwrap();
        assert!(fresh);
        assert_eq!(t.len(), 64);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (t2, fresh2) = load_or_create_token(&p).unwrap();
        assert_eq!((t2.as_str(), fresh2), (t.as_str(), false));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create_token(&p),
            Err(TokenError::Loose { mode: 0o644, .. })
        ));
    }

    #[test]
    fn sessions_and_bearer() {
        let a = Auth::new("x".repeat(64)).unwrap();
        assert!(a.check(Some(&"x".repeat(64)), None).is_some());
        assert!(a.check(Some("nope"), None).is_none());
        assert!(a.check(None, Some("nope")).is_none());
        let id = a.login("alice\n").unwrap();
        let p = a.check(None, Some(&id)).unwrap();
        assert_eq!(p.who, "alice");
        a.logout(&id);
        assert!(a.check(None, Some(&id)).is_none());
        assert_eq!(cookie_value("a=1; migrator_session=zz", COOKIE), Some("zz"));
    }
}
