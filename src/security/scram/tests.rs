//! Tests of the SCRAM server: RFC 7677 vectors, the exchange, and malformed
//! input that must never panic.

use super::*;

const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const RFC_SUFFIX: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

fn rfc_credential() -> ScramCredential {
    let salt = B64.decode(RFC_SALT).unwrap();
    let salted = salted_password(Mechanism::ScramSha256, b"pencil", &salt, 4096);
    ScramCredential::from_salted_password(Mechanism::ScramSha256, &salted, salt, 4096)
}

/// A minimal SCRAM client.
struct TestClient {
    mech: Mechanism,
    gs2_header: String,
    bare: String,
    nonce: String,
}

impl TestClient {
    fn new(mech: Mechanism, user: &str, authzid: Option<&str>) -> Self {
        let escape = |s: &str| s.replace('=', "=3D").replace(',', "=2C");
        let mut nonce = [0u8; 18];
        fill_random(&mut nonce).unwrap();
        let nonce = B64.encode(nonce);
        let gs2_header = match authzid {
            Some(a) => format!("n,a={},", escape(a)),
            None => "n,,".to_owned(),
        };
        let bare = format!("n={},r={}", escape(user), nonce);
        Self {
            mech,
            gs2_header,
            bare,
            nonce,
        }
    }

    fn first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2_header, self.bare).into_bytes()
    }

    /// The client-final-message and the expected server-final-message.
    fn finish(&self, password: &str, server_first: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let server_first = std::str::from_utf8(server_first).unwrap();
        let mut r = None;
        let mut s = None;
        let mut i = None;
        for attr in server_first.split(',') {
            let (k, v) = attr.split_once('=').unwrap();
            match k {
                "r" => r = Some(v.to_owned()),
                "s" => s = Some(B64.decode(v).unwrap()),
                "i" => i = Some(v.parse::<u32>().unwrap()),
                _ => panic!("unexpected attribute {k}"),
            }
        }
        let (r, s, i) = (r.unwrap(), s.unwrap(), i.unwrap());
        assert!(r.starts_with(&self.nonce));
        assert!(r.len() >= self.nonce.len() + 24);
        let salted = salted_password(self.mech, password.as_bytes(), &s, i);
        let client_key = hmac_sign(self.mech, &salted, b"Client Key");
        let stored_key = hash(self.mech, &client_key);
        let server_key = hmac_sign(self.mech, &salted, b"Server Key");
        let without_proof = format!("c={},r={}", B64.encode(&self.gs2_header), r);
        let auth = format!("{},{},{}", self.bare, server_first, without_proof);
        let sig = hmac_sign(self.mech, &stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let final_msg = format!("{},p={}", without_proof, B64.encode(proof));
        let server_sig = hmac_sign(self.mech, &server_key, auth.as_bytes());
        (
            final_msg.into_bytes(),
            format!("v={}", B64.encode(server_sig)).into_bytes(),
        )
    }
}

#[test]
fn rfc7677_test_vector() {
    let cred = rfc_credential();
    let mut server = ScramServer::with_nonce_suffix(Mechanism::ScramSha256, RFC_SUFFIX);
    let server_first = server
        .client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", |u| {
            assert_eq!(u, "user");
            Some(cred.clone())
        })
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&server_first).unwrap(),
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let (server_final, user) = server
        .client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        )
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&server_final).unwrap(),
        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
    assert_eq!(user, "user");
    // The exchange is over.
    assert!(matches!(
        server.client_final(b"c=biws,r=x,p=AAAA"),
        Err(ScramError::OutOfOrder)
    ));
}

#[test]
fn sha512_round_trip() {
    let mech = Mechanism::ScramSha512;
    let cred = ScramCredential::from_password(mech, "s3cret", 4096);
    assert_eq!(cred.stored_key.len(), 64);
    assert_eq!(cred.server_key.len(), 64);
    assert_eq!(cred.salt.len(), SALT_LEN);

    let client = TestClient::new(mech, "al,ice=", None);
    let mut server = ScramServer::new(mech);
    let server_first = server
        .client_first(&client.first(), |u| {
            assert_eq!(u, "al,ice=");
            Some(cred.clone())
        })
        .unwrap();
    let (final_msg, expected) = client.finish("s3cret", &server_first);
    let (server_final, user) = server.client_final(&final_msg).unwrap();
    assert_eq!(server_final, expected);
    assert_eq!(user, "al,ice=");
}

#[test]
fn matching_authzid_and_ignored_extensions_are_accepted() {
    let mech = Mechanism::ScramSha256;
    let cred = ScramCredential::from_password(mech, "pw", 4096);
    let client = TestClient::new(mech, "bob", Some("bob"));
    let mut first = client.first();
    first.extend_from_slice(b",tokenauth=false,foo=bar");
    // The bare message the server signs includes the extensions.
    let client = TestClient {
        bare: format!("{},tokenauth=false,foo=bar", client.bare),
        ..client
    };
    let mut server = ScramServer::new(mech);
    let server_first = server.client_first(&first, |_| Some(cred.clone())).unwrap();
    let (final_msg, expected) = client.finish("pw", &server_first);
    let (server_final, user) = server.client_final(&final_msg).unwrap();
    assert_eq!(server_final, expected);
    assert_eq!(user, "bob");
}

#[test]
fn wrong_password_fails() {
    for mech in Mechanism::ALL {
        let cred = ScramCredential::from_password(mech, "right", 4096);
        let client = TestClient::new(mech, "carol", None);
        let mut server = ScramServer::new(mech);
        let server_first = server
            .client_first(&client.first(), |_| Some(cred))
            .unwrap();
        let (final_msg, _) = client.finish("wrong", &server_first);
        assert!(matches!(
            server.client_final(&final_msg),
            Err(ScramError::AuthenticationFailed)
        ));
    }
}

#[test]
fn unknown_user_fails_only_at_client_final() {
    let mech = Mechanism::ScramSha256;
    let client = TestClient::new(mech, "nobody", None);
    let mut server = ScramServer::new(mech);
    let server_first = server.client_first(&client.first(), |_| None).unwrap();
    let text = std::str::from_utf8(&server_first).unwrap();
    assert!(text.ends_with(",i=4096"), "{text}");
    let (final_msg, _) = client.finish("whatever", &server_first);
    assert!(matches!(
        server.client_final(&final_msg),
        Err(ScramError::AuthenticationFailed)
    ));

    // The fake salt is stable for a user and differs between users.
    let salt_of = |user: &str| {
        let client = TestClient::new(mech, user, None);
        let mut server = ScramServer::new(mech);
        let reply = server.client_first(&client.first(), |_| None).unwrap();
        let reply = String::from_utf8(reply).unwrap();
        reply.split(',').nth(1).unwrap().to_owned()
    };
    assert_eq!(salt_of("nobody"), salt_of("nobody"));
    assert_ne!(salt_of("nobody"), salt_of("somebody"));
}

#[test]
fn authzid_mismatch_fails() {
    let mech = Mechanism::ScramSha256;
    let client = TestClient::new(mech, "dave", Some("admin"));
    let mut server = ScramServer::new(mech);
    let res = server.client_first(&client.first(), |_| {
        Some(ScramCredential::from_password(mech, "pw", 4096))
    });
    assert!(matches!(res, Err(ScramError::AuthzidMismatch)));
    // A failed first message ends the exchange.
    assert!(matches!(
        server.client_first(b"n,,n=dave,r=abc", |_| None),
        Err(ScramError::OutOfOrder)
    ));
}

#[test]
fn tokenauth_is_rejected() {
    for ext in ["tokenauth=true", "tokenauth=TRUE"] {
        let msg = format!("n,,n=user,r=abcdef,{ext}");
        let mut server = ScramServer::new(Mechanism::ScramSha256);
        assert!(matches!(
            server.client_first(msg.as_bytes(), |_| None),
            Err(ScramError::UnsupportedExtension("tokenauth"))
        ));
    }
}

#[test]
fn channel_binding_is_rejected() {
    for msg in ["y,,n=user,r=abc", "p=tls-unique,,n=user,r=abc"] {
        let mut server = ScramServer::new(Mechanism::ScramSha256);
        assert!(matches!(
            server.client_first(msg.as_bytes(), |_| None),
            Err(ScramError::ChannelBindingNotSupported)
        ));
    }
}

#[test]
fn final_before_first_is_out_of_order() {
    let mut server = ScramServer::new(Mechanism::ScramSha256);
    assert!(matches!(
        server.client_final(b"c=biws,r=abc,p=AAAA"),
        Err(ScramError::OutOfOrder)
    ));
}

#[test]
fn nonce_mismatch_fails() {
    let cred = rfc_credential();
    let mut server = ScramServer::with_nonce_suffix(Mechanism::ScramSha256, RFC_SUFFIX);
    server
        .client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", |_| Some(cred))
        .unwrap();
    assert!(matches!(
        server.client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        ),
        Err(ScramError::NonceMismatch)
    ));
}

#[test]
fn malformed_client_first_never_panics() {
    let huge = vec![b'a'; 10_000];
    let huge_nonce = format!("n,,n=user,r={}", "x".repeat(MAX_MESSAGE_LEN));
    let inputs: &[&[u8]] = &[
        b"",
        b",",
        b",,",
        b"n",
        b"n,",
        b"n,,",
        b"n,,n=",
        b"n,,n=user",
        b"n,,n=user,",
        b"n,,n=user,r=",
        b"n,,n=user,r=abc,",
        b"n,,n=user,r=abc,=x",
        b"n,,n=user,r=abc,noequals",
        b"n,,r=abc,n=user",
        b"n,,m=ext,n=user,r=abc",
        b"n,,n=us=er,r=abc",
        b"n,,n=us=2,r=abc",
        b"n,,n=user=,r=abc",
        b"n,,n=user,r=ab\x7fc",
        b"n,,n=user,r=ab c",
        b"n,a,n=user,r=abc",
        b"n,a=,n=user,r=abc",
        b"n,x=user,n=user,r=abc",
        b"x,,n=user,r=abc",
        b"nn,,n=user,r=abc",
        b"n,,n=\xff\xfe,r=abc",
        b"\xff,,n=user,r=abc",
        b"n,,n=user,r=\xc3",
        b"no commas at all",
        huge.as_slice(),
        huge_nonce.as_bytes(),
    ];
    for &input in inputs {
        let mut server = ScramServer::new(Mechanism::ScramSha256);
        let res = server.client_first(input, |_| {
            Some(ScramCredential::from_password(
                Mechanism::ScramSha256,
                "pw",
                4096,
            ))
        });
        assert!(
            res.is_err(),
            "accepted {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn malformed_client_final_never_panics() {
    let cred = rfc_credential();
    let nonce = format!("rOprNGfwEbeRWgbNEkqO{RFC_SUFFIX}");
    let good_proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    let owned: Vec<String> = vec![
        String::new(),
        ",".to_owned(),
        "c=biws".to_owned(),
        format!("c=biws,r={nonce}"),
        format!("c=biws,r={nonce},p="),
        format!("c=biws,r={nonce},p=!!!notbase64"),
        format!("c=biws,r={nonce},p=AAAA"),
        format!("c=biws,r={nonce},p={good_proof},x=y"),
        format!("c=biws,p={good_proof},r={nonce}"),
        format!("r={nonce},c=biws,p={good_proof}"),
        format!("c=!!,r={nonce},p={good_proof}"),
        format!("c=eSws,r={nonce},p={good_proof}"),
        format!("c=biws,r={nonce},bad,p={good_proof}"),
        format!("c=biws,r=,p={good_proof}"),
        format!("c=biws,r={nonce}x,p={good_proof}"),
        format!("c=biws,r={nonce},p={}", "A".repeat(5000)),
        // Valid syntax, wrong proof.
        format!("c=biws,r={nonce},p={}", B64.encode([0u8; 32])),
    ];
    let mut inputs: Vec<Vec<u8>> = owned.into_iter().map(String::into_bytes).collect();
    inputs.push(b"c=biws,r=\xff\xfe,p=AAAA".to_vec());
    inputs.push(vec![b','; 100]);
    for input in inputs {
        let mut server = ScramServer::with_nonce_suffix(Mechanism::ScramSha256, RFC_SUFFIX);
        server
            .client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", |_| Some(cred.clone()))
            .unwrap();
        let res = server.client_final(&input);
        assert!(
            res.is_err(),
            "accepted {:?}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn salted_password_matches_password_derivation() {
    for mech in Mechanism::ALL {
        let from_pw = ScramCredential::from_password(mech, "hunter2", 4096);
        let salted = salted_password(mech, b"hunter2", &from_pw.salt, 4096);
        let from_salted =
            ScramCredential::from_salted_password(mech, &salted, from_pw.salt.clone(), 4096);
        assert_eq!(from_pw, from_salted);
    }
}

#[test]
fn verify_password_checks_the_password() {
    for mech in Mechanism::ALL {
        let cred = ScramCredential::from_password(mech, "hunter2", 4096);
        assert!(cred.verify_password(mech, "hunter2"));
        assert!(!cred.verify_password(mech, "hunter3"));
        assert!(!cred.verify_password(mech, ""));
    }
    let cred = rfc_credential();
    assert!(cred.verify_password(Mechanism::ScramSha256, "pencil"));
}

#[test]
fn mechanism_names_and_types() {
    for mech in Mechanism::ALL {
        assert_eq!(Mechanism::from_name(mech.name()), Some(mech));
        assert_eq!(Mechanism::from_kafka_type(mech.kafka_type()), Some(mech));
        assert_eq!(mech.min_iterations(), 4096);
    }
    assert_eq!(Mechanism::ScramSha256.kafka_type(), 1);
    assert_eq!(Mechanism::ScramSha512.kafka_type(), 2);
    assert_eq!(Mechanism::from_name("scram-sha-256"), None);
    assert_eq!(Mechanism::from_kafka_type(0), None);
    assert_eq!(Mechanism::MAX_ITERATIONS, 16384);
    assert_eq!(
        serde_json::to_string(&Mechanism::ScramSha512).unwrap(),
        "\"SCRAM-SHA-512\""
    );
}

#[test]
fn credential_json_uses_base64() {
    let cred = rfc_credential();
    let json = serde_json::to_value(&cred).unwrap();
    assert_eq!(json["salt"], RFC_SALT);
    assert_eq!(json["iterations"], 4096);
    let back: ScramCredential = serde_json::from_value(json).unwrap();
    assert_eq!(back, cred);
    assert!(!format!("{cred:?}").contains("stored_key"));
}

#[test]
fn constant_time_eq_works() {
    assert!(constant_time_eq(b"", b""));
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
}

#[test]
fn the_client_authenticates_against_the_server_and_checks_its_signature() {
    for mech in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
        let cred = ScramCredential::from_password(mech, "pencil", 4096);
        for (password, ok) in [("pencil", true), ("crayon", false)] {
            let mut client = ScramClient::new(mech, "us,er=", password).unwrap();
            let mut server = ScramServer::new(mech);
            let first = server
                .client_first(&client.client_first(), |u| {
                    assert_eq!(u, "us,er=");
                    Some(cred.clone())
                })
                .unwrap();
            let fin = client.client_final(&first).unwrap();
            match server.client_final(&fin) {
                Ok((server_final, user)) => {
                    assert!(ok, "{mech} accepted a wrong password");
                    assert_eq!(user, "us,er=");
                    client.verify_server_final(&server_final).unwrap();
                    // A server that does not know the credential cannot
                    // forge the signature.
                    assert!(client.verify_server_final(b"v=AAAA").is_err());
                }
                Err(e) => {
                    assert!(!ok, "{mech}: {e}");
                    assert!(client.verify_server_final(b"e=invalid-proof").is_err());
                }
            }
        }
    }
}

#[test]
fn the_client_refuses_a_server_first_it_should_not_trust() {
    let mut c = ScramClient::new(Mechanism::ScramSha256, "u", "p").unwrap();
    let first = String::from_utf8(c.client_first()).unwrap();
    let nonce = first.split("r=").nth(1).unwrap().to_string();
    for bad in [
        "r=someone-else,s=c2FsdA==,i=4096".to_string(),
        format!("r={nonce},s=c2FsdA==,i=4096"),
        format!("r={nonce}x,s=c2FsdA==,i=10"),
        format!("r={nonce}x,s=c2FsdA==,i=99999999"),
        format!("r={nonce}x,s=!!,i=4096"),
        format!("r={nonce}x,i=4096"),
    ] {
        assert!(c.client_final(bad.as_bytes()).is_err(), "{bad}");
    }
    assert!(c.verify_server_final(b"v=AAAA").is_err(), "out of order");
}
