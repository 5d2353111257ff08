//! Prepared statements as the client sees them: the proxy's statement ids (stable across a
//! move to another backend) mapped to the backend's, parameter types re-sent after a
//! re-prepare, the write check at execute, and id 0xFFFFFFFF ("the statement prepared last").

use crate::commands::{read_only_error, COM_STMT_EXECUTE, COM_STMT_SEND_LONG_DATA};
use crate::protocol::ErrPacket;
use crate::relay::RelayError;
use crate::route::Mode;
use crate::session::{Session, Stmt};
use crate::wire::{Packet, Reader};
use std::sync::atomic::Ordering;

impl Session {
    /// Statement id 0xFFFFFFFF is MariaDB's "the statement prepared last": named by its id,
    /// so it is mapped and checked like any other (and never reaches the backend as -1, where
    /// after a re-prepare it would name another statement).
    pub(crate) fn resolve_last_prepared(&self, payload: &mut [u8]) {
        if Self::client_stmt_id(payload) == Some(u32::MAX) {
            let id = self.last_prepared.unwrap_or(0);
            payload[1..5].copy_from_slice(&id.to_le_bytes());
        }
    }

    pub(crate) fn client_stmt_id(payload: &[u8]) -> Option<u32> {
        Reader::new(payload.get(1..)?).u32("statement id").ok()
    }

    pub(crate) fn stmt_mut(&mut self, payload: &[u8]) -> Option<&mut Stmt> {
        let id = Self::client_stmt_id(payload)?;
        self.stmts.get_mut(&id)
    }

    /// Rewrites the client's statement id to the backend's; for COM_STMT_EXECUTE also re-sends
    /// parameter types the new backend has not seen yet.
    pub(crate) fn map_stmt(
        &mut self,
        cmd: u8,
        mode: Mode,
        payload: &mut Vec<u8>,
    ) -> Result<(), ErrPacket> {
        let unknown = || {
            ErrPacket::new(
                1243,
                "HY000",
                "Unknown prepared statement handler given to mysqld_stmt_execute",
            )
        };
        let id = Self::client_stmt_id(payload).ok_or_else(unknown)?;
        let st = self.stmts.get_mut(&id).ok_or_else(unknown)?;
        if cmd == COM_STMT_EXECUTE && mode == Mode::ReadOnly && st.write {
            return Err(read_only_error());
        }
        payload[1..5].copy_from_slice(&st.backend_id.to_le_bytes());
        if cmd == COM_STMT_EXECUTE && st.params > 0 {
            let n = st.params as usize;
            let flag_at = 1 + 4 + 1 + 4 + n.div_ceil(8);
            match payload.get(flag_at) {
                Some(1) => {
                    if let Some(types) = payload.get(flag_at + 1..flag_at + 1 + 2 * n) {
                        st.types = Some(types.to_vec());
                        st.needs_types = false;
                    }
                }
                Some(0) if st.needs_types => {
                    if let Some(types) = &st.types {
                        payload[flag_at] = 1;
                        let tail = payload.split_off(flag_at + 1);
                        payload.extend_from_slice(types);
                        payload.extend_from_slice(&tail);
                        st.needs_types = false;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// COM_STMT_CLOSE and COM_STMT_SEND_LONG_DATA: forwarded, no answer expected.
    pub(crate) async fn stmt_no_reply(&mut self, cmd: u8, mut p: Packet) -> Result<(), RelayError> {
        self.resolve_last_prepared(&mut p.payload);
        let Some(id) = Self::client_stmt_id(&p.payload) else {
            return Ok(());
        };
        let Some(st) = self.stmts.get_mut(&id) else {
            return Ok(());
        };
        p.payload[1..5].copy_from_slice(&st.backend_id.to_le_bytes());
        if cmd == COM_STMT_SEND_LONG_DATA {
            st.long_data = true;
        } else {
            self.stmts.remove(&id);
            self.info
                .prepared
                .store(self.stmts.len(), Ordering::Relaxed);
        }
        if let Some(be) = self.backend.as_mut() {
            if let Err(e) = be.write_packet(0, &p.payload).await {
                return Err(RelayError::Backend {
                    side: be.side.clone(),
                    source: std::io::Error::other(e.to_string()),
                });
            }
        }
        Ok(())
    }
}
