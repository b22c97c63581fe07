//! One connection's SASL exchange: SaslHandshake picks the mechanism, then
//! SaslAuthenticate carries its tokens (one round for PLAIN, two for SCRAM).

use super::scram::{Mechanism, ScramServer};
use super::users::UserStore;

/// Where the exchange stands.
#[derive(Default)]
enum State {
    /// Waiting for SaslHandshake.
    #[default]
    Handshake,
    /// PLAIN chosen; waiting for its one token.
    Plain,
    /// SCRAM chosen; waiting for client-first.
    ScramFirst(Mechanism),
    /// SCRAM server-first sent; waiting for client-final.
    ScramFinal(Box<ScramServer>),
    /// Authenticated, or failed: no more SASL requests are accepted.
    Finished,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Handshake => "Handshake",
            Self::Plain => "Plain",
            Self::ScramFirst(_) => "ScramFirst",
            Self::ScramFinal(_) => "ScramFinal",
            Self::Finished => "Finished",
        })
    }
}

/// What a SaslAuthenticate token led to.
#[derive(Debug)]
pub enum Step {
    /// Send these bytes back and wait for the next token.
    Continue(Vec<u8>),
    /// Authenticated as `user`; send these bytes back.
    Done { user: String, reply: Vec<u8> },
    /// Authentication failed (`user` when it was named).
    Failed {
        user: Option<String>,
        reason: String,
    },
    /// SaslAuthenticate out of turn.
    IllegalState,
}

/// A connection's SASL exchange.
#[derive(Debug, Default)]
pub struct SaslSession {
    state: State,
    mechanism: Option<&'static str>,
}

/// Why a handshake was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not offered here; the response lists what is.
    Unsupported,
    /// A handshake after one already chose a mechanism.
    IllegalState,
}

impl SaslSession {
    /// SaslHandshake: `enabled` are the mechanisms offered.
    ///
    /// # Errors
    /// The mechanism is not offered, or a mechanism was already chosen.
    pub fn handshake(&mut self, mechanism: &str, enabled: &[String]) -> Result<(), HandshakeError> {
        if !matches!(self.state, State::Handshake) {
            return Err(HandshakeError::IllegalState);
        }
        if !enabled.iter().any(|m| m == mechanism) {
            return Err(HandshakeError::Unsupported);
        }
        self.state = match mechanism {
            "PLAIN" => {
                self.mechanism = Some("PLAIN");
                State::Plain
            }
            other => match Mechanism::from_name(other) {
                Some(m) => {
                    self.mechanism = Some(m.name());
                    State::ScramFirst(m)
                }
                None => return Err(HandshakeError::Unsupported),
            },
        };
        Ok(())
    }

    /// The mechanism chosen by the handshake.
    pub fn mechanism(&self) -> Option<&'static str> {
        self.mechanism
    }

    /// SaslAuthenticate with `token`.
    pub fn authenticate(&mut self, token: &[u8], users: &UserStore) -> Step {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Plain => plain(token, users),
            State::ScramFirst(m) => {
                let mut server = ScramServer::new(m);
                match server.client_first(token, |u| users.credential(u, m)) {
                    Ok(reply) => {
                        self.state = State::ScramFinal(Box::new(server));
                        Step::Continue(reply)
                    }
                    Err(e) => Step::Failed {
                        user: None,
                        reason: e.to_string(),
                    },
                }
            }
            State::ScramFinal(mut server) => {
                let named = server.username().map(str::to_string);
                match server.client_final(token) {
                    Ok((reply, user)) => Step::Done { user, reply },
                    Err(e) => Step::Failed {
                        user: named,
                        reason: e.to_string(),
                    },
                }
            }
            s @ (State::Handshake | State::Finished) => {
                self.state = s;
                Step::IllegalState
            }
        }
    }
}

/// PLAIN (RFC 4616): `authzid NUL authcid NUL password`.
fn plain(token: &[u8], users: &UserStore) -> Step {
    let failed = |user: Option<&str>, reason: &str| Step::Failed {
        user: user.map(str::to_string),
        reason: reason.to_string(),
    };
    if token.len() > 4096 {
        return failed(None, "PLAIN token too long");
    }
    let mut parts = token.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return failed(None, "malformed PLAIN token");
    };
    let (Ok(authzid), Ok(user), Ok(password)) = (
        std::str::from_utf8(authzid),
        std::str::from_utf8(user),
        std::str::from_utf8(password),
    ) else {
        return failed(None, "PLAIN token is not UTF-8");
    };
    if user.is_empty() {
        return failed(None, "empty user name");
    }
    if !authzid.is_empty() && authzid != user {
        return failed(Some(user), "authorization id differs from the user name");
    }
    if users.verify_plain(user, password) {
        Step::Done {
            user: user.to_string(),
            reply: Vec::new(),
        }
    } else {
        failed(Some(user), "invalid user name or password")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn all() -> Vec<String> {
        super::super::SASL_MECHANISMS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn plain_accepts_the_password_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let users = UserStore::open(dir.path()).unwrap();
        users.add_user("alice", "secret", 4096).unwrap();
        let mut s = SaslSession::default();
        assert!(matches!(s.authenticate(b"x", &users), Step::IllegalState));
        s.handshake("PLAIN", &all()).unwrap();
        assert_eq!(
            s.handshake("PLAIN", &all()),
            Err(HandshakeError::IllegalState)
        );
        assert!(matches!(
            s.authenticate(b"\0alice\0secret", &users),
            Step::Done { ref user, .. } if user == "alice"
        ));
        for bad in [
            &b"\0alice\0wrong"[..],
            b"\0bob\0secret",
            b"bob\0alice\0secret",
            b"\0alice",
            b"",
            b"\0\0",
            b"\0alice\0secret\0more",
        ] {
            let mut s = SaslSession::default();
            s.handshake("PLAIN", &all()).unwrap();
            assert!(
                matches!(s.authenticate(bad, &users), Step::Failed { .. }),
                "{bad:?}"
            );
            // Nothing more after a failure.
            assert!(matches!(s.authenticate(bad, &users), Step::IllegalState));
        }
        let mut s = SaslSession::default();
        assert_eq!(
            s.handshake("GSSAPI", &all()),
            Err(HandshakeError::Unsupported)
        );
        assert_eq!(
            s.handshake("PLAIN", &["SCRAM-SHA-256".to_string()]),
            Err(HandshakeError::Unsupported)
        );
    }
}
