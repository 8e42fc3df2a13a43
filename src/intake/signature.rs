//! Webhook signatures: HMAC-SHA256 over the raw body, checked in constant
//! time against every configured secret (two during a rotation). Meta's
//! `X-Hub-Signature-256: sha256=<hex>`, and the same scheme under a header of
//! the caller's choosing for web forms.
//!
//! [`constant_time_eq`] is where secrets are compared, here and elsewhere:
//! API key hashes, webhook signatures, session, CSRF and sandbox tokens.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The header Meta signs webhook POSTs with.
pub const META_SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

const PREFIX: &str = "sha256=";

/// Why a request's signature was not accepted. Each message names the
/// header and says what to fix; none quotes the body or the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// No secret is configured, so nothing can be accepted.
    NoSecret { header: String },
    /// The request has no signature header.
    Missing { header: String },
    /// The header is not `sha256=<64 hex digits>`.
    Malformed { header: String, reason: String },
    /// The signature matches the body under none of the secrets.
    Mismatch { header: String },
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::NoSecret { header } => write!(
                f,
                "no secret is configured to check `{header}` against; \
                 configure the app secret (two during a rotation)"
            ),
            SignatureError::Missing { header } => write!(
                f,
                "missing `{header}` header; the sender must sign every request, \
                 so check the sender and that no proxy strips the header"
            ),
            SignatureError::Malformed { header, reason } => write!(
                f,
                "malformed `{header}` header: {reason}; expected `sha256=` and \
                 64 hexadecimal digits"
            ),
            SignatureError::Mismatch { header } => write!(
                f,
                "`{header}` does not match the body under any configured secret; \
                 check that the configured secret is the sender's current one and \
                 that the body is checked exactly as received"
            ),
        }
    }
}

impl std::error::Error for SignatureError {}

/// Whether `a` and `b` are the same bytes, taking the same time whichever
/// byte differs, so that timing cannot be used to guess a secret one byte at
/// a time. The length is not hidden: a different length is unequal at once,
/// and the secrets compared here (hashes, MACs, random tokens) have lengths
/// that are public anyway.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The `X-Hub-Signature-256` value for `body` signed with `secret`:
/// `sha256=<lowercase hex>`.
pub fn sign(body: &[u8], secret: &[u8]) -> String {
    let mut mac = new_mac(secret);
    mac.update(body);
    format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks Meta's `X-Hub-Signature-256` over the raw `body`, accepting any of
/// `secrets` (the current app secret and, during a rotation, the previous).
/// Empty secrets are ignored, so an unset secret can never be matched.
pub fn verify_meta_signature<S: AsRef<[u8]>>(
    header_value: Option<&str>,
    body: &[u8],
    secrets: &[S],
) -> Result<(), SignatureError> {
    verify(META_SIGNATURE_HEADER, header_value, body, secrets, true)
}

/// Checks an HMAC-SHA256 signature sent in the caller's `header_name`, as
/// `sha256=<hex>` or bare hex (web form builders use both), over the raw
/// `body`, accepting any of `secrets`.
pub fn verify_hmac_sha256<S: AsRef<[u8]>>(
    header_name: &str,
    header_value: Option<&str>,
    body: &[u8],
    secrets: &[S],
) -> Result<(), SignatureError> {
    verify(header_name, header_value, body, secrets, false)
}

fn verify<S: AsRef<[u8]>>(
    header: &str,
    header_value: Option<&str>,
    body: &[u8],
    secrets: &[S],
    prefix_required: bool,
) -> Result<(), SignatureError> {
    let header_name = || header.to_string();
    let secrets: Vec<&[u8]> = secrets
        .iter()
        .map(AsRef::as_ref)
        .filter(|secret| !secret.is_empty())
        .collect();
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret {
            header: header_name(),
        });
    }
    let value = header_value
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| SignatureError::Missing {
            header: header_name(),
        })?;
    let malformed = |reason: String| SignatureError::Malformed {
        header: header_name(),
        reason,
    };
    let hex_digits = match value.get(..PREFIX.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(PREFIX) => &value[PREFIX.len()..],
        _ if prefix_required => {
            return Err(malformed("it does not start with `sha256=`".to_string()))
        }
        _ => value,
    };
    if hex_digits.len() != 64 {
        return Err(malformed(format!(
            "it has {} characters after the prefix, not 64",
            hex_digits.len()
        )));
    }
    let signature =
        hex::decode(hex_digits).map_err(|_| malformed("it is not hexadecimal".to_string()))?;
    let matched = secrets.iter().any(|secret| {
        let mut mac = new_mac(secret);
        mac.update(body);
        constant_time_eq(&mac.finalize().into_bytes(), &signature)
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch {
            header: header_name(),
        })
    }
}

fn new_mac(secret: &[u8]) -> HmacSha256 {
    // HMAC is defined for keys of any length (long keys are hashed, short
    // ones padded), so `new_from_slice` cannot fail; the fallback is
    // unreachable and would only make every signature mismatch.
    HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = include_bytes!("../../tests/fixtures/meta/whatsapp-inbound-text.json");
    const SECRET: &[u8] = b"app-secret-2026";
    const OLD_SECRET: &[u8] = b"app-secret-2025";

    #[test]
    fn sign_matches_a_known_hmac_sha256() {
        // RFC 4231 test case 2.
        let signature = sign(b"what do ya want for nothing?", b"Jefe");
        assert_eq!(
            signature,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_good_signature_is_accepted() {
        let header = sign(BODY, SECRET);
        assert_eq!(
            verify_meta_signature(Some(&header), BODY, &[SECRET]),
            Ok(())
        );
        // Meta sends lowercase; a proxy that upper-cases hex is tolerated.
        let upper = format!("sha256={}", header[7..].to_ascii_uppercase());
        assert_eq!(verify_meta_signature(Some(&upper), BODY, &[SECRET]), Ok(()));
    }

    #[test]
    fn either_secret_is_accepted_during_a_rotation() {
        let old = sign(BODY, OLD_SECRET);
        let new = sign(BODY, SECRET);
        let secrets = [SECRET, OLD_SECRET];
        assert_eq!(verify_meta_signature(Some(&old), BODY, &secrets), Ok(()));
        assert_eq!(verify_meta_signature(Some(&new), BODY, &secrets), Ok(()));
        // After the rotation the old secret no longer works.
        assert!(matches!(
            verify_meta_signature(Some(&old), BODY, &[SECRET]),
            Err(SignatureError::Mismatch { .. })
        ));
        let owned = vec![String::from("app-secret-2026")];
        assert_eq!(verify_meta_signature(Some(&new), BODY, &owned), Ok(()));
    }

    #[test]
    fn a_tampered_body_or_wrong_secret_is_a_mismatch() {
        let header = sign(BODY, SECRET);
        let mut tampered = BODY.to_vec();
        let at = tampered.len() - 10;
        tampered[at] ^= 1;
        let error = verify_meta_signature(Some(&header), &tampered, &[SECRET]).unwrap_err();
        assert_eq!(
            error,
            SignatureError::Mismatch {
                header: META_SIGNATURE_HEADER.into()
            }
        );
        assert!(error
            .to_string()
            .starts_with("`X-Hub-Signature-256` does not match the body"));
        // Re-encoded JSON (same meaning, different bytes) does not verify either.
        let value: serde_json::Value = serde_json::from_slice(BODY).unwrap();
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        assert!(verify_meta_signature(Some(&header), &pretty, &[SECRET]).is_err());
        assert!(verify_meta_signature(Some(&header), BODY, &[b"other".as_slice()]).is_err());
    }

    #[test]
    fn a_missing_header_is_reported_as_missing() {
        for value in [None, Some(""), Some("   ")] {
            let error = verify_meta_signature(value, BODY, &[SECRET]).unwrap_err();
            assert_eq!(
                error,
                SignatureError::Missing {
                    header: META_SIGNATURE_HEADER.into()
                }
            );
        }
        assert!(verify_meta_signature(None, BODY, &[SECRET])
            .unwrap_err()
            .to_string()
            .starts_with("missing `X-Hub-Signature-256` header"));
    }

    #[test]
    fn malformed_headers_say_what_is_wrong() {
        let hex = &sign(BODY, SECRET)[7..];
        let cases = [
            (hex.to_string(), "it does not start with `sha256=`"),
            (format!("sha1={hex}"), "it does not start with `sha256=`"),
            (
                "sha256=abc".to_string(),
                "it has 3 characters after the prefix, not 64",
            ),
            (
                format!("sha256={}", "zz".repeat(32)),
                "it is not hexadecimal",
            ),
        ];
        for (value, reason) in cases {
            let error = verify_meta_signature(Some(&value), BODY, &[SECRET]).unwrap_err();
            assert_eq!(
                error,
                SignatureError::Malformed {
                    header: META_SIGNATURE_HEADER.into(),
                    reason: reason.into()
                },
                "{value}"
            );
        }
        let error = verify_meta_signature(Some("sha256=abc"), BODY, &[SECRET]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "malformed `X-Hub-Signature-256` header: it has 3 characters after the prefix, \
             not 64; expected `sha256=` and 64 hexadecimal digits"
        );
    }

    #[test]
    fn without_a_secret_nothing_is_accepted() {
        let header = sign(BODY, b"");
        let none: [&[u8]; 0] = [];
        assert!(matches!(
            verify_meta_signature(Some(&header), BODY, &none),
            Err(SignatureError::NoSecret { .. })
        ));
        // An empty configured secret does not count as a secret.
        assert!(matches!(
            verify_meta_signature(Some(&header), BODY, &[b"".as_slice()]),
            Err(SignatureError::NoSecret { .. })
        ));
    }

    #[test]
    fn form_signatures_use_the_callers_header_with_or_without_prefix() {
        let body = br#"{"name":"Aisha"}"#;
        let prefixed = sign(body, SECRET);
        let bare = prefixed.trim_start_matches("sha256=").to_string();
        for value in [&prefixed, &bare] {
            assert_eq!(
                verify_hmac_sha256("X-Form-Signature", Some(value), body, &[SECRET]),
                Ok(())
            );
        }
        let error = verify_hmac_sha256("X-Form-Signature", None, body, &[SECRET]).unwrap_err();
        assert!(error
            .to_string()
            .starts_with("missing `X-Form-Signature` header"));
        assert!(matches!(
            verify_hmac_sha256("X-Form-Signature", Some(&bare), b"{}", &[SECRET]),
            Err(SignatureError::Mismatch { header }) if header == "X-Form-Signature"
        ));
    }

    proptest::proptest! {
        #[test]
        fn what_is_signed_verifies_and_any_changed_byte_does_not(
            body in proptest::collection::vec(proptest::num::u8::ANY, 1..512),
            secret in proptest::collection::vec(proptest::num::u8::ANY, 1..80),
            flip in proptest::num::usize::ANY,
        ) {
            let header = sign(&body, &secret);
            proptest::prop_assert_eq!(verify_meta_signature(Some(&header), &body, &[&secret]), Ok(()));
            let mut changed = body.clone();
            let at = flip % changed.len();
            changed[at] ^= 0x01;
            let is_mismatch = matches!(
                verify_meta_signature(Some(&header), &changed, &[&secret]),
                Err(SignatureError::Mismatch { .. })
            );
            proptest::prop_assert!(is_mismatch);
        }
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokeN"));
        assert!(!constant_time_eq(b"token", b"toke"));
        assert!(!constant_time_eq(b"", b"t"));
    }

    #[test]
    fn long_secrets_work() {
        let secret = vec![7u8; 200];
        let header = sign(BODY, &secret);
        assert_eq!(
            verify_meta_signature(Some(&header), BODY, &[secret]),
            Ok(())
        );
    }
}
