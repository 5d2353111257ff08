//! Connection-phase and generic response packets: handshake v10 (server greeting), handshake
//! response 41 (client login), auth switch, OK / ERR / EOF, and the capability flags we offer.

use crate::wire::{bad, put_lenenc, put_lenenc_bytes, DecodeError, Reader};

/// Capability flags (the subset we reason about).
pub mod cap {
    pub const LONG_PASSWORD: u32 = 1;
    pub const FOUND_ROWS: u32 = 1 << 1;
    pub const LONG_FLAG: u32 = 1 << 2;
    pub const CONNECT_WITH_DB: u32 = 1 << 3;
    pub const NO_SCHEMA: u32 = 1 << 4;
    pub const COMPRESS: u32 = 1 << 5;
    pub const ODBC: u32 = 1 << 6;
    pub const LOCAL_FILES: u32 = 1 << 7;
    pub const IGNORE_SPACE: u32 = 1 << 8;
    pub const PROTOCOL_41: u32 = 1 << 9;
    pub const INTERACTIVE: u32 = 1 << 10;
    pub const SSL: u32 = 1 << 11;
    pub const IGNORE_SIGPIPE: u32 = 1 << 12;
    pub const TRANSACTIONS: u32 = 1 << 13;
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    pub const MULTI_STATEMENTS: u32 = 1 << 16;
    pub const MULTI_RESULTS: u32 = 1 << 17;
    pub const PS_MULTI_RESULTS: u32 = 1 << 18;
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    pub const CONNECT_ATTRS: u32 = 1 << 20;
    pub const PLUGIN_AUTH_LENENC_DATA: u32 = 1 << 21;
    pub const CAN_HANDLE_EXPIRED_PASSWORDS: u32 = 1 << 22;
    pub const SESSION_TRACK: u32 = 1 << 23;
    pub const DEPRECATE_EOF: u32 = 1 << 24;

    /// What the proxy offers clients. Deliberately absent: NO_SCHEMA and ODBC (legacy),
    /// COMPRESS (refused), SSL (no TLS
    /// configured), SESSION_TRACK and DEPRECATE_EOF (the relay reads classic EOF packets to find
    /// the end of a result set), and MariaDB's extended capabilities.
    pub const PROXY_OFFER: u32 = LONG_PASSWORD
        | FOUND_ROWS
        | LONG_FLAG
        | CONNECT_WITH_DB
        | LOCAL_FILES
        | IGNORE_SPACE
        | PROTOCOL_41
        | INTERACTIVE
        | IGNORE_SIGPIPE
        | TRANSACTIONS
        | SECURE_CONNECTION
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS
        | PLUGIN_AUTH
        | CONNECT_ATTRS
        | PLUGIN_AUTH_LENENC_DATA
        | CAN_HANDLE_EXPIRED_PASSWORDS;
}

/// Server status flags carried by OK and EOF packets.
pub mod status {
    pub const IN_TRANS: u16 = 1;
    pub const AUTOCOMMIT: u16 = 2;
    pub const MORE_RESULTS_EXISTS: u16 = 8;
    pub const CURSOR_EXISTS: u16 = 0x40;
}

pub const NATIVE_PASSWORD: &str = "mysql_native_password";

/// The server greeting (protocol version 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeV10 {
    pub server_version: String,
    pub connection_id: u32,
    /// The 20-byte scramble (both parts joined, without the trailing NUL).
    pub scramble: Vec<u8>,
    pub capabilities: u32,
    pub charset: u8,
    pub status: u16,
    pub auth_plugin: String,
}

impl HandshakeV10 {
    pub fn parse(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let version = r.u8("protocol version")?;
        if version == 0xFF {
            return Err(bad(
                "protocol version",
                "server sent an error instead of a greeting",
            ));
        }
        if version != 10 {
            return Err(bad(
                "protocol version",
                "only protocol version 10 is supported",
            ));
        }
        let server_version = String::from_utf8_lossy(r.nul_str("server version")?).into_owned();
        let connection_id = r.u32("connection id")?;
        let mut scramble = r.take(8, "auth-plugin-data-part-1")?.to_vec();
        r.u8("filler")?;
        let cap_low = r.u16("capability flags")? as u32;
        let mut capabilities = cap_low;
        let mut charset = 0;
        let mut status = 0;
        let mut auth_plugin = String::new();
        if !r.is_empty() {
            charset = r.u8("character set")?;
            status = r.u16("status flags")?;
            capabilities |= (r.u16("capability flags (upper)")? as u32) << 16;
            let data_len = r.u8("auth-plugin-data length")? as usize;
            r.take(10, "reserved")?;
            if capabilities & cap::SECURE_CONNECTION != 0 {
                let n = data_len.saturating_sub(8).max(13);
                let part2 = r.take(n, "auth-plugin-data-part-2")?;
                // Part 2 ends with a NUL that is not part of the scramble.
                let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
                scramble.extend_from_slice(part2);
            }
            if capabilities & cap::PLUGIN_AUTH != 0 {
                let rest = r.rest();
                let name = rest.strip_suffix(&[0]).unwrap_or(rest);
                auth_plugin = String::from_utf8_lossy(name).into_owned();
            }
        }
        Ok(Self {
            server_version,
            connection_id,
            scramble,
            capabilities,
            charset,
            status,
            auth_plugin,
        })
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        out.push(10);
        out.extend_from_slice(self.server_version.as_bytes());
        out.push(0);
        out.extend_from_slice(&self.connection_id.to_le_bytes());
        let (p1, p2) = self.scramble.split_at(self.scramble.len().min(8));
        out.extend_from_slice(p1);
        out.push(0);
        out.extend_from_slice(&(self.capabilities as u16).to_le_bytes());
        out.push(self.charset);
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&((self.capabilities >> 16) as u16).to_le_bytes());
        out.push((self.scramble.len() + 1) as u8);
        out.extend_from_slice(&[0; 10]);
        out.extend_from_slice(p2);
        out.push(0);
        out.extend_from_slice(self.auth_plugin.as_bytes());
        out.push(0);
        out
    }
}

/// The client's login packet (HandshakeResponse41), or the short SSL request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandshakeResponse {
    pub capabilities: u32,
    pub max_packet: u32,
    pub charset: u8,
    pub user: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub auth_plugin: Option<String>,
    /// Raw connect attributes block (forwarded as-is is not needed; kept for logging counts).
    pub attrs_len: usize,
}

impl HandshakeResponse {
    /// Whether this payload is only an SSL request (32 bytes, SSL flag set).
    pub fn is_ssl_request(payload: &[u8]) -> bool {
        payload.len() == 32
            && u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) & cap::SSL != 0
    }

    pub fn parse(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let capabilities = r.u32("capability flags")?;
        if capabilities & cap::PROTOCOL_41 == 0 {
            return Err(bad("capability flags", "pre-4.1 clients are not supported"));
        }
        let max_packet = r.u32("max packet size")?;
        let charset = r.u8("character set")?;
        r.take(23, "filler")?;
        let user = String::from_utf8_lossy(r.nul_str("user name")?).into_owned();
        let auth_response = if capabilities & cap::PLUGIN_AUTH_LENENC_DATA != 0 {
            r.lenenc_bytes("auth response")?
                .unwrap_or_default()
                .to_vec()
        } else if capabilities & cap::SECURE_CONNECTION != 0 {
            let n = r.u8("auth response length")? as usize;
            r.take(n, "auth response")?.to_vec()
        } else {
            r.nul_str("auth response")?.to_vec()
        };
        let mut database = None;
        if capabilities & cap::CONNECT_WITH_DB != 0 && !r.is_empty() {
            let db = r.nul_str("database")?;
            if !db.is_empty() {
                database = Some(String::from_utf8_lossy(db).into_owned());
            }
        }
        let mut auth_plugin = None;
        if capabilities & cap::PLUGIN_AUTH != 0 && !r.is_empty() {
            auth_plugin = Some(String::from_utf8_lossy(r.nul_str("auth plugin")?).into_owned());
        }
        let mut attrs_len = 0;
        if capabilities & cap::CONNECT_ATTRS != 0 && !r.is_empty() {
            attrs_len = r.lenenc_bytes("connect attributes")?.map_or(0, |b| b.len());
        }
        Ok(Self {
            capabilities,
            max_packet,
            charset,
            user,
            auth_response,
            database,
            auth_plugin,
            attrs_len,
        })
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        let mut caps = self.capabilities | cap::PROTOCOL_41 | cap::SECURE_CONNECTION;
        caps &= !cap::CONNECT_ATTRS;
        if self.database.is_some() {
            caps |= cap::CONNECT_WITH_DB;
        } else {
            caps &= !cap::CONNECT_WITH_DB;
        }
        if self.auth_plugin.is_some() {
            caps |= cap::PLUGIN_AUTH;
        }
        out.extend_from_slice(&caps.to_le_bytes());
        out.extend_from_slice(&self.max_packet.to_le_bytes());
        out.push(self.charset);
        out.extend_from_slice(&[0; 23]);
        out.extend_from_slice(self.user.as_bytes());
        out.push(0);
        if caps & cap::PLUGIN_AUTH_LENENC_DATA != 0 {
            put_lenenc_bytes(&mut out, &self.auth_response);
        } else {
            out.push(self.auth_response.len() as u8);
            out.extend_from_slice(&self.auth_response);
        }
        if let Some(db) = &self.database {
            out.extend_from_slice(db.as_bytes());
            out.push(0);
        }
        if let Some(p) = &self.auth_plugin {
            out.extend_from_slice(p.as_bytes());
            out.push(0);
        }
        out
    }
}

/// An auth switch request (0xFE, plugin name, plugin data).
pub fn parse_auth_switch(payload: &[u8]) -> Result<(String, Vec<u8>), DecodeError> {
    let mut r = Reader::new(payload);
    if r.u8("auth switch header")? != 0xFE {
        return Err(bad("auth switch header", "expected 0xFE"));
    }
    let plugin = String::from_utf8_lossy(r.nul_str("auth plugin")?).into_owned();
    let data = r.rest();
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    Ok((plugin, data.to_vec()))
}

pub fn build_auth_switch(plugin: &str, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0xFE];
    out.extend_from_slice(plugin.as_bytes());
    out.push(0);
    out.extend_from_slice(data);
    out.push(0);
    out
}

/// An ERR packet's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    pub code: u16,
    pub sqlstate: String,
    pub message: String,
}

impl ErrPacket {
    pub fn new(code: u16, sqlstate: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            sqlstate: sqlstate.to_string(),
            message: message.into(),
        }
    }

    pub fn parse(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        if r.u8("ERR header")? != 0xFF {
            return Err(bad("ERR header", "expected 0xFF"));
        }
        let code = r.u16("error code")?;
        let mut sqlstate = String::new();
        let rest = r.rest();
        let mut msg = rest;
        if rest.first() == Some(&b'#') && rest.len() >= 6 {
            sqlstate = String::from_utf8_lossy(&rest[1..6]).into_owned();
            msg = &rest[6..];
        }
        Ok(Self {
            code,
            sqlstate,
            message: String::from_utf8_lossy(msg).into_owned(),
        })
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = vec![0xFF];
        out.extend_from_slice(&self.code.to_le_bytes());
        out.push(b'#');
        let mut state = self.sqlstate.as_bytes().to_vec();
        state.resize(5, b'0');
        out.extend_from_slice(&state);
        out.extend_from_slice(self.message.as_bytes());
        out
    }
}

impl std::fmt::Display for ErrPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ERROR {} ({}): {}",
            self.code, self.sqlstate, self.message
        )
    }
}

/// Builds an OK packet.
pub fn build_ok(affected: u64, last_insert_id: u64, status: u16, warnings: u16) -> Vec<u8> {
    let mut out = vec![0x00];
    put_lenenc(&mut out, affected);
    put_lenenc(&mut out, last_insert_id);
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&warnings.to_le_bytes());
    out
}

/// The status flags of an OK packet (header 0x00 or 0xFE).
pub fn ok_status(payload: &[u8]) -> Result<u16, DecodeError> {
    let mut r = Reader::new(payload);
    r.u8("OK header")?;
    r.lenenc("affected rows")?;
    r.lenenc("last insert id")?;
    r.u16("status flags")
}

/// Whether a payload is a classic EOF packet (0xFE and shorter than 9 bytes).
pub fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&0xFE) && payload.len() < 9
}

/// The status flags of an EOF packet.
pub fn eof_status(payload: &[u8]) -> Result<u16, DecodeError> {
    let mut r = Reader::new(payload);
    r.u8("EOF header")?;
    r.u16("warnings")?;
    r.u16("status flags")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_round_trips() {
        let h = HandshakeV10 {
            server_version: "5.5.5-10.11.0-MariaDB".into(),
            connection_id: 42,
            scramble: (1..=20).collect(),
            capabilities: cap::PROXY_OFFER,
            charset: 45,
            status: status::AUTOCOMMIT,
            auth_plugin: NATIVE_PASSWORD.into(),
        };
        assert_eq!(HandshakeV10::parse(&h.build()).unwrap(), h);
    }

    #[test]
    fn login_round_trips() {
        let r = HandshakeResponse {
            capabilities: cap::PROXY_OFFER & !cap::CONNECT_ATTRS,
            max_packet: 1 << 24,
            charset: 33,
            user: "u1".into(),
            auth_response: vec![7; 20],
            database: Some("db1".into()),
            auth_plugin: Some(NATIVE_PASSWORD.into()),
            attrs_len: 0,
        };
        assert_eq!(HandshakeResponse::parse(&r.build()).unwrap(), r);
    }

    #[test]
    fn err_and_ok_packets() {
        let e = ErrPacket::new(1045, "28000", "Access denied");
        assert_eq!(ErrPacket::parse(&e.build()).unwrap(), e);
        let ok = build_ok(300, 7, status::IN_TRANS | status::AUTOCOMMIT, 0);
        assert_eq!(ok_status(&ok).unwrap(), 3);
        assert!(is_eof(&[0xFE, 0, 0, 2, 0]));
        assert!(!is_eof(&[0xFE, 1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(eof_status(&[0xFE, 0, 0, 8, 0]).unwrap(), 8);
    }

    #[test]
    fn truncated_greetings_fail_cleanly() {
        let h = HandshakeV10 {
            server_version: "x".into(),
            connection_id: 1,
            scramble: vec![1; 20],
            capabilities: cap::PROXY_OFFER,
            charset: 8,
            status: 0,
            auth_plugin: NATIVE_PASSWORD.into(),
        }
        .build();
        for n in 0..h.len() {
            let _ = HandshakeV10::parse(&h[..n]);
        }
    }
}
